"""The worker observes the store -> commit lag of every applied event with one call per
batch (observe_each): the histogram must read as if each event were observed on its own."""

from __future__ import annotations

import math
import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from server.events.worker import LAG_BUCKETS, observe_each


def _histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("lag_seconds", "lag", buckets=LAG_BUCKETS, registry=registry), registry


def _samples(registry: CollectorRegistry) -> dict:
    return {(s.name, s.labels.get("le")): s.value for m in registry.collect() for s in m.samples
            if not s.name.endswith("_created")}


def test_observe_each_matches_one_observe_per_amount():
    rng = random.Random(3)
    amounts = [0.0, 0.005, 0.0050001, 0.01, 600.0, 600.5, 1e9, math.inf, *LAG_BUCKETS]
    amounts += [rng.expovariate(1 / rng.choice([0.01, 0.3, 20.0])) for _ in range(2000)]
    one, one_reg = _histogram()
    each, each_reg = _histogram()
    for a in amounts:
        one.observe(a)
    for k in range(0, len(amounts), 300):  # batches
        observe_each(each, amounts[k:k + 300])
    observe_each(each, [])
    got, want = _samples(each_reg), _samples(one_reg)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0].endswith("_sum"):
            assert got[key] == pytest.approx(value, rel=1e-12) or (math.isinf(got[key]) and math.isinf(value))
        else:
            assert got[key] == value, key  # bucket counts and the count: exact
    assert got[("lag_seconds_bucket", "0.005")] == sum(a <= 0.005 for a in amounts)  # cumulative, bounds inclusive
    assert got[("lag_seconds_bucket", "+Inf")] == len(amounts)


def test_observe_each_puts_nan_in_no_bucket_and_falls_back_without_the_internals():
    h, reg = _histogram()
    observe_each(h, [float("nan"), 0.1])
    samples = _samples(reg)
    assert samples[("lag_seconds_count", None)] == 1 and math.isnan(samples[("lag_seconds_sum", None)])

    class Plain:
        def __init__(self):
            self.seen = []

        def observe(self, a):
            self.seen.append(a)

    plain = Plain()
    observe_each(plain, [1.0, 2.0])
    assert plain.seen == [1.0, 2.0]
