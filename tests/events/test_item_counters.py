"""Item-side counters (db item_stats) and their roll-up into item rows and lists,
in process against real LMDB stores: exact sums, decay, redelivery, consent, and
the same rows and lists online as ``funnel load`` computes offline."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest

from kernels.layout import (
    ITEM_CATEGORY,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    STAT_COUNT,
    STAT_EVENTS,
    STAT_SKIPS,
    STAT_T_REF,
    STAT_TREND,
    STAT_WEIGHT_SUM,
    USER_CONSENT,
)
from ops.catalog import EVENT_WEIGHTS
from ops.features import DAY_SECONDS, TRENDING_HALF_LIFE_DAYS, popularity, skip_rate
from protos import funnel_pb2
from server.events.nats_server import subject_for
from server.events.rollup import RollUp
from server.events.worker import Applier
from server.store import LmdbStore, empty_user_value, user_row_view

HL = TRENDING_HALF_LIFE_DAYS * DAY_SECONDS
T0 = 1_700_000_000
TYPES = {"view": funnel_pb2.VIEW, "click": funnel_pb2.CLICK, "like": funnel_pb2.LIKE, "skip": funnel_pb2.SKIP,
         "share": funnel_pb2.SHARE, "purchase": funnel_pb2.PURCHASE}


def batch_of(tenant: str, events, first_seq: int = 1):
    """(seq, subject, payload, stored_at) tuples as the worker hands them to Applier.apply."""
    out = []
    for k, (user, item, etype, ts) in enumerate(events):
        ev = funnel_pb2.Event(event_id=f"e{first_seq + k}", user_id=user, item_id=item, type=etype,
                              timestamp_ms=int(ts * 1000))
        out.append((first_seq + k, subject_for(tenant, user), ev.SerializeToString(), ts))
    return out


def stats_of(store: LmdbStore, tenant: str, item_id: str) -> np.ndarray | None:
    with store.env.begin() as txn:
        return store.get_item_stats(txn, tenant, store.lookup_item(txn, tenant, item_id))


@pytest.fixture
def store(small_copy):
    data_dir, _ = small_copy
    s = LmdbStore.open(data_dir)
    yield s
    s.close()


def test_events_update_exact_counts_and_decayed_counters_once(store):
    applier = Applier(store)
    events = [("u1", "i3", funnel_pb2.VIEW, T0), ("u2", "i3", funnel_pb2.CLICK, T0 + 3600),
              ("u1", "i3", funnel_pb2.SKIP, T0 + 7200), ("u3", "i3", funnel_pb2.IMPRESSION, T0 + 7200),
              ("u2", "i3", funnel_pb2.LIKE, T0 + 1800)]  # older than the reference: added decayed
    stats = applier.apply(batch_of("shop", events), "stream-a")
    assert (stats.applied, stats.impressions) == (4, 1)
    s = stats_of(store, "shop", "i3")
    w = EVENT_WEIGHTS
    assert s[STAT_T_REF] == T0 + 7200
    assert s[STAT_COUNT] == 4 and s[STAT_SKIPS] == 1
    assert s[STAT_WEIGHT_SUM] == pytest.approx(w["view"] + w["click"] + w["skip"] + w["like"])
    expected_trend = (w["view"] * 2 ** (-7200 / HL) + w["click"] * 2 ** (-3600 / HL) + w["skip"]
                      + w["like"] * 2 ** (-5400 / HL))
    assert s[STAT_TREND] == pytest.approx(expected_trend, rel=1e-12)
    assert s[STAT_EVENTS + funnel_pb2.VIEW] == pytest.approx(2 ** (-7200 / HL), rel=1e-12)
    assert s[STAT_EVENTS + funnel_pb2.IMPRESSION] == pytest.approx(1.0)
    assert s[STAT_EVENTS + funnel_pb2.PURCHASE] == 0.0
    # an impression alone creates no user row
    with store.env.begin() as txn:
        assert store.get_user_copy(txn, "shop", "u3") is None

    again = applier.apply(batch_of("shop", events), "stream-a")  # redelivery after a crash
    assert (again.applied, again.already_applied) == (0, 5)
    assert np.array_equal(stats_of(store, "shop", "i3"), s)


def test_opted_out_users_change_no_item_counter(store):
    value = empty_user_value()
    user_row_view(value)[USER_CONSENT] = 0.0
    with store.write() as txn:
        store.put_user(txn, "shop", "quiet", value)
    stats = Applier(store).apply(batch_of("shop", [("quiet", "i4", funnel_pb2.CLICK, T0),
                                                   ("quiet", "i4", funnel_pb2.IMPRESSION, T0)]), "s")
    assert stats.no_consent == 2 and stats.applied == 0
    assert stats_of(store, "shop", "i4") is None


def test_rollup_writes_rows_and_lists_of_what_changed(store):
    applier = Applier(store)
    rollup = RollUp(store, applier.counters)
    rollup.start()
    rollup.run(now_s=T0)
    with store.env.begin() as txn:
        assert store.get_state(txn, "shop", "popularity_max_count", 0) == 0  # no history
    # i7 (category 2) gets 3 clicks, i12 (category 2) 1 like, i8 (category 3) 2 views
    events = [(f"u{k}", "i7", funnel_pb2.CLICK, T0) for k in range(3)]
    events += [("u9", "i12", funnel_pb2.LIKE, T0), ("u1", "i8", funnel_pb2.VIEW, T0), ("u2", "i8", funnel_pb2.VIEW, T0)]
    applier.apply(batch_of("shop", events), "s")
    assert rollup.due(float("inf"))
    written = rollup.run(now_s=T0 + 60)
    assert written["shop"][0] == 3  # three rows moved
    assert not rollup.due(float("inf"))  # nothing left to roll up
    with store.snapshot() as snap:
        idx = {i: snap.item_index("shop", i) for i in ("i7", "i8", "i12")}
        row = {i: snap.item_row("shop", k) for i, k in idx.items()}
        # the scale moved from 0 to the new maximum count (3)
        assert store.get_state(snap.txn, "shop", "popularity_max_count") == 3
        assert row["i7"][ITEM_POPULARITY] == pytest.approx(1.0)
        assert row["i8"][ITEM_POPULARITY] == pytest.approx(math.log1p(2) / math.log1p(3), rel=1e-6)
        assert row["i12"][ITEM_QUALITY] == pytest.approx((0.9 + 1.0) / 3, rel=1e-6)
        assert row["i8"][ITEM_SKIP_RATE] == pytest.approx(0.0)  # prior 0, no skips
        cat = int(row["i7"][ITEM_CATEGORY])
        assert int(row["i12"][ITEM_CATEGORY]) == cat
        # trending by decayed weight: i7 (1.8) > i8 (1.0) > i12 (0.9)
        assert snap.item_list("shop", "trending").tolist() == [idx["i7"], idx["i8"], idx["i12"]]
        assert snap.item_list("shop", f"trending:{cat}").tolist() == [idx["i7"], idx["i12"]]
        popular = snap.item_list("shop", "popular").tolist()
        assert popular[:3] == [idx["i7"], idx["i8"], idx["i12"]]
        assert sorted(popular) == list(range(200))  # every active item stays in the fallback
    # no rescale at twice the scale (4 more views: i8 at 6 = 2 * 3, clipped to 1)...
    applier.apply(batch_of("shop", [(f"v{k}", "i8", funnel_pb2.VIEW, T0 + 100) for k in range(4)], 7), "s")
    rollup.run(now_s=T0 + 120)
    with store.snapshot() as snap:
        assert store.get_state(snap.txn, "shop", "popularity_max_count") == 3
        assert snap.item_row("shop", idx["i8"])[ITEM_POPULARITY] == 1.0
        assert snap.item_row("shop", idx["i7"])[ITEM_POPULARITY] == pytest.approx(1.0)
    # ...but past it: one more (7 > 6) moves the scale to 7 and rescales every row with counters
    applier.apply(batch_of("shop", [("v9", "i8", funnel_pb2.VIEW, T0 + 130)], 11), "s")
    rollup.run(now_s=T0 + 140)
    with store.snapshot() as snap:
        assert store.get_state(snap.txn, "shop", "popularity_max_count") == 7
        assert snap.item_row("shop", idx["i7"])[ITEM_POPULARITY] == pytest.approx(math.log1p(3) / math.log1p(7))
        assert snap.item_row("shop", idx["i8"])[ITEM_POPULARITY] == pytest.approx(1.0)
        assert snap.item_list("shop", "trending")[0] == idx["i8"]


def _stat_column(store, txn, tenant: str, n: int, stat: int) -> np.ndarray:
    out = np.zeros(n)
    for index, stats in store.iter_item_stats(txn, tenant):
        out[index] = stats[stat]
    return out


def _write_dataset(path, items: int, events) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "items.jsonl"), "w") as f:
        for k in range(items):
            f.write(json.dumps({"item_id": f"m{k}", "title": f"Movie {k}", "categories": [f"c{k % 4}"],
                                "maturity_rating": "PG", "created_at": T0 - 10 * DAY_SECONDS + k}) + "\n")
    with open(os.path.join(path, "events.csv"), "w") as f:
        f.write("user_id,item_id,type,timestamp_ms\n")
        for user, item, etype, ts in events:
            f.write(f"{user},{item},{etype},{int(ts * 1000)}\n")


def test_online_counters_reach_the_lists_and_rows_an_offline_load_computes(tmp_path):
    """Load history A, then apply B through the worker and roll up at the same clock:
    the trending, per-category trending and popular lists equal those of loading A + B
    at once, and QUALITY matches; POPULARITY and SKIP_RATE keep A's scale and prior."""
    from ops.load import load_dataset
    from server.app import init_data_dir

    rng = random.Random(5)
    names = list(TYPES)
    history = [(f"u{rng.randrange(40)}", f"m{min(int(rng.expovariate(0.08)), 59)}", rng.choice(names),
                T0 - rng.randrange(20 * DAY_SECONDS)) for _ in range(900)]
    a, b = history[:600], sorted(history[600:], key=lambda e: e[3])
    now_ts = max(e[3] for e in history)

    both_dir, online_dir = str(tmp_path / "both"), str(tmp_path / "online")
    _write_dataset(str(tmp_path / "ds-both"), 60, history)
    _write_dataset(str(tmp_path / "ds-a"), 60, a)
    for d in (both_dir, online_dir):
        init_data_dir(d)
    load_dataset(both_dir, "t", str(tmp_path / "ds-both"), now_ts=now_ts, progress=False)
    load_dataset(online_dir, "t", str(tmp_path / "ds-a"), now_ts=now_ts, progress=False)

    store = LmdbStore.open(online_dir)
    try:
        applier = Applier(store)
        rollup = RollUp(store, applier.counters)
        rollup.start()
        assert rollup.run(now_s=now_ts)["t"] == (0, 0)  # right after a load nothing differs
        stats = applier.apply(batch_of("t", [(u, i, TYPES[ty], ts) for u, i, ty, ts in b]), "s")
        assert stats.applied == len(b)
        rollup.run(now_s=now_ts)
        offline = LmdbStore.open(both_dir, readonly=True)
        try:
            with store.snapshot() as on, offline.snapshot() as off:
                for name in ["trending", "popular"] + [f"trending:{c}" for c in range(4)]:
                    assert on.item_list("t", name).tolist() == off.item_list("t", name).tolist(), name
                n = on.chunks("t")[1]
                rows_on = np.stack([on.item_row("t", k) for k in range(n)])
                rows_off = np.stack([off.item_row("t", k) for k in range(n)])
                np.testing.assert_allclose(rows_on[:, ITEM_QUALITY], rows_off[:, ITEM_QUALITY], rtol=1e-6)
                count = _stat_column(store, on.txn, "t", n, STAT_COUNT)
                skips = _stat_column(store, on.txn, "t", n, STAT_SKIPS)
                scale = store.get_state(on.txn, "t", "popularity_max_count")
                prior = store.get_state(on.txn, "t", "skip_prior")
                np.testing.assert_allclose(rows_on[:, ITEM_POPULARITY], popularity(count, scale), rtol=1e-6)
                np.testing.assert_allclose(rows_on[:, ITEM_SKIP_RATE], skip_rate(skips, count, prior), rtol=1e-6)
                assert (count > 0).sum() > 30 and scale > 0 and 0 < prior < 1
        finally:
            offline.close()
    finally:
        store.close()
