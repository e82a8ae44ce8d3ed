"""Experiment assignment: deterministic, sticky, no storage.

    bucket(salt, user) = int.from_bytes(sha256(salt + "\\x00" + user)[:8], "big") % 10000

Variant i of an experiment owns the buckets [B(i-1), B(i)) with
B(i) = floor(10000 * (w0 + ... + wi) / (w0 + ... + wn)), so the same salt and user
give the same variant in every process and after every restart, and a variant's
share of users is its share of the weight (to 1/10000). Validation
(server.tenancy.validate_experiments) guarantees every variant at least one bucket.

Which experiment a request is in: the running experiment of the request's surface,
else the running experiment of surface "*"; none for an anonymous request (empty
user id) or for a user who opted out of personalisation (server.pipeline.state
passes them as anonymous). :class:`ExperimentPlan` is compiled once per config version (when the
tenant runtime is built): per request it costs one dict lookup, one sha256 and
one bisect, and hands out a prebuilt :class:`Assignment` (no allocation).

A served response carries the assignment in its request id,
``<32 hex>.<experiment>.<variant>`` (names hold no dots), so an event that echoes
the request id is attributed without any lookup (:func:`parse_request_id`).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass

from server.tenancy import DEFAULT_SURFACE, EXPERIMENT_BUCKETS, Experiment, SurfaceRules, TenantConfig


def bucket(salt: str, user_id: str) -> int:
    """The user's bucket in [0, 10000) for an experiment salted with ``salt``."""
    digest = hashlib.sha256(salt.encode() + b"\x00" + user_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % EXPERIMENT_BUCKETS


def parse_request_id(request_id: str) -> tuple[str, str] | None:
    """(experiment, variant) encoded in a FeedResponse request id, None without one."""
    parts = request_id.split(".")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


@dataclass(frozen=True)
class Assignment:
    """What a request runs with: its surface's rules (with the variant's overrides),
    the experiment and variant ("" outside an experiment) and the variant's ranking
    model version ("" = the deployed one)."""

    rules: SurfaceRules
    experiment: str = ""
    variant: str = ""
    model_version: str = ""

    @property
    def request_id_suffix(self) -> str:
        return f".{self.experiment}.{self.variant}" if self.experiment else ""


def _rules_by_surface(config: TenantConfig, variant=None) -> tuple[dict[str, SurfaceRules], SurfaceRules]:
    """The effective rules of every configured surface, and of any other surface."""
    other = config.rules_for("\x00not-a-configured-surface")
    if variant is None:
        return dict(config.surfaces), other
    return {name: variant.rules_over(rules) for name, rules in config.surfaces.items()}, variant.rules_over(other)


class CompiledExperiment:
    """One running experiment: its salt prefix, bucket bounds and, per variant and
    surface, the prebuilt Assignment."""

    def __init__(self, experiment: Experiment, config: TenantConfig):
        self.name = experiment.name
        self.salt_prefix = experiment.bucket_salt.encode() + b"\x00"
        total = sum(v.weight for v in experiment.variants)
        bounds, cumulative = [], 0
        for variant in experiment.variants:
            cumulative += variant.weight
            bounds.append(EXPERIMENT_BUCKETS * cumulative // total)
        self.bounds = bounds
        self.by_surface: list[dict[str, Assignment]] = []
        self.other: list[Assignment] = []
        for variant in experiment.variants:
            per_surface, other = _rules_by_surface(config, variant)
            make = lambda rules, v=variant: Assignment(rules, experiment.name, v.name, v.model_version)  # noqa: E731
            self.by_surface.append({name: make(rules) for name, rules in per_surface.items()})
            self.other.append(make(other))

    def variant_index(self, user_id: str) -> int:
        digest = hashlib.sha256(self.salt_prefix + user_id.encode()).digest()
        return bisect_right(self.bounds, int.from_bytes(digest[:8], "big") % EXPERIMENT_BUCKETS)

    def assign(self, user_id: str, surface: str) -> Assignment:
        i = self.variant_index(user_id)
        return self.by_surface[i].get(surface) or self.other[i]


class ExperimentPlan:
    """A tenant config's surfaces and running experiments, compiled for serving."""

    def __init__(self, config: TenantConfig):
        per_surface, other = _rules_by_surface(config)
        self._plain = {name: Assignment(rules) for name, rules in per_surface.items()}
        self._plain_other = Assignment(other)
        self._running = {e.surface: CompiledExperiment(e, config) for e in config.experiments if e.running}
        self._any_surface = self._running.get(DEFAULT_SURFACE)

    @property
    def running(self) -> dict[str, CompiledExperiment]:
        return self._running

    def assign(self, user_id: str, surface: str) -> Assignment:
        """The request's Assignment; outside any experiment only the surface's rules."""
        if user_id and self._running:
            experiment = self._running.get(surface) or self._any_surface
            if experiment is not None:
                return experiment.assign(user_id, surface)
        return self._plain.get(surface) or self._plain_other
