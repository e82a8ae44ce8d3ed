"""Experiment report statistics against hand-computed values, and the per-variant tally."""

from __future__ import annotations

import math

import pytest

from ops.experiments.report import ExperimentTally, format_report, summarize
from ops.experiments.stats import two_proportion_z_test, wilson_interval
from protos import funnel_pb2


def test_wilson_interval_hand_computed():
    # 10/100, z = 1.96: centre = (0.1 + 0.019208) / 1.038415 = 0.114797,
    # half = 1.96 * sqrt(0.0009 + 0.0000960) / 1.038415 = 0.059568
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.055229, abs=5e-6) and hi == pytest.approx(0.174366, abs=5e-6)
    # x = 0: the interval is [0, z^2 / (n + z^2)] = [0, 3.841459 / 13.841459]
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=5e-6))
    # x = n: [n / (n + z^2), 1] = [20 / 23.841459, 1]
    assert wilson_interval(20, 20) == (pytest.approx(0.838875, abs=5e-6), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


def test_two_proportion_z_test_hand_computed():
    # 50/1000 vs 70/1000: pooled 0.06, se = sqrt(0.06 * 0.94 * 0.002) = 0.0106207, z = 0.02 / se
    z, p = two_proportion_z_test(50, 1000, 70, 1000)
    assert z == pytest.approx(1.883109, abs=1e-5)
    assert p == pytest.approx(0.059686, abs=1e-5)  # 2 * (1 - Phi(1.883109))
    # 10/100 vs 20/100: pooled 0.15, se = sqrt(0.15 * 0.85 * 0.02) = 0.0504975, z = 1.980295
    z, p = two_proportion_z_test(10, 100, 20, 100)
    assert z == pytest.approx(1.980295, abs=1e-5) and p == pytest.approx(0.047670, abs=1e-5)
    z, p = two_proportion_z_test(20, 100, 10, 100)  # symmetric: sign flips, p stays
    assert z == pytest.approx(-1.980295, abs=1e-5) and p == pytest.approx(0.047670, abs=1e-5)
    assert two_proportion_z_test(5, 50, 5, 50) == (0.0, 1.0)
    assert two_proportion_z_test(0, 10, 0, 10) == (0.0, 1.0)  # nothing varies
    assert all(math.isnan(v) for v in two_proportion_z_test(0, 0, 1, 10))


def ev(etype, request_id, event_id, watch_ms=0):
    return funnel_pb2.Event(event_id=event_id, user_id="u", item_id="i", type=etype, timestamp_ms=1,
                            request_id=request_id, watch_time_ms=watch_ms)


def test_tally_attributes_by_request_id_and_counts_each_event_once():
    rid_a, rid_b = "0" * 32 + ".ab.control", "1" * 32 + ".ab.tight"
    events = ([ev(funnel_pb2.IMPRESSION, rid_a, f"ia{k}") for k in range(40)]
              + [ev(funnel_pb2.CLICK, rid_a, f"ca{k}") for k in range(4)]
              + [ev(funnel_pb2.IMPRESSION, rid_b, f"ib{k}") for k in range(40)]
              + [ev(funnel_pb2.CLICK, rid_b, f"cb{k}") for k in range(10)]
              + [ev(funnel_pb2.DWELL, rid_b, "d1", 3000), ev(funnel_pb2.DWELL, rid_b, "d2", 1000)]
              + [ev(funnel_pb2.CLICK, rid_b, "cb0")]                       # duplicate event id
              + [ev(funnel_pb2.CLICK, "2" * 32 + ".other.control", "x1"),   # another experiment
                 ev(funnel_pb2.CLICK, "3" * 32, "x2"), ev(funnel_pb2.CLICK, "", "x3")])
    report = summarize(ExperimentTally("ab").add_all(events), ["control", "tight", "unused"])
    assert report["events_read"] == len(events) and report["events_attributed"] == 40 + 4 + 40 + 10 + 2
    control, tight, unused = report["variants"]
    assert (control["variant"], control["impressions"], control["clicks"], control["ctr"]) == ("control", 40, 4, 0.1)
    assert control["p_value"] is None and report["control"] == "control"
    assert (tight["impressions"], tight["clicks"], tight["ctr"]) == (40, 10, 0.25)
    assert tight["ctr_ci95"] == list(wilson_interval(10, 40))
    assert tight["p_value"] == pytest.approx(two_proportion_z_test(4, 40, 10, 40)[1])
    assert (tight["dwell_events"], tight["watch_time_ms_total"], tight["watch_time_ms_mean"]) == (2, 4000, 2000.0)
    assert (unused["impressions"], unused["ctr"], unused["p_value"]) == (0, None, None)
    text = format_report(report, "shop")
    assert "control" in text and "25.00%" in text and "10.00%" in text


def test_more_clicks_than_impressions_has_no_ctr():
    rid = "0" * 32 + ".ab.b"
    tally = ExperimentTally("ab").add_all([ev(funnel_pb2.CLICK, rid, "c1"), ev(funnel_pb2.CLICK, rid, "c2"),
                                           ev(funnel_pb2.IMPRESSION, rid, "i1")])
    row = summarize(tally, ["a", "b"])["variants"][1]
    assert row["ctr"] is None and row["p_value"] is None and "more clicks" in row["note"]
