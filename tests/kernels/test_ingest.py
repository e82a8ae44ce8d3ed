"""kernels.ingest: native == reference, byte for byte, on edge cases and random users and
item counters; the reference == the worker's previous per-event update on valid rows."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import ingest
from kernels._backend import PURE_PYTHON
from kernels.ingest import (
    DAY_SECONDS,
    SKIP_BELOW,
    apply_user_event_reference,
    touch_seen_reference,
    update_item_stats_reference,
)
from kernels.layout import (
    MAX_CATEGORIES,
    SEEN_CAP,
    STAT_WIDTH,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_CONSENT,
    USER_EVENT_COUNT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_COUNT,
    USER_SKIP_RATE,
    USER_WIDTH,
)
from ops import features
from server.store import empty_user_value, user_recent_items

# random rows overflow and multiply inf by 0 on purpose; NumPy (the reference) warns then
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")

HALF_LIFE = 30 * DAY_SECONDS
ITEM_HALF_LIFE = 7 * DAY_SECONDS
NOW = 1_700_000_000.0
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def native():
    return importlib.import_module("kernels.ingest" if PURE_PYTHON else "kernels._ingest")


def test_constants_match_ops_features():
    assert (DAY_SECONDS, SKIP_BELOW) == (features.DAY_SECONDS, features.SKIP_BELOW)


def test_the_public_functions_are_the_native_ones_unless_pure_python(native):
    assert (ingest.apply_user_event is apply_user_event_reference) == PURE_PYTHON
    assert ingest.apply_user_event is native.apply_user_event


def rows(value) -> np.ndarray:
    return np.frombuffer(value, dtype=np.float32, count=USER_WIDTH)


def ring_header(value) -> np.ndarray:
    return np.frombuffer(value, dtype=np.int32, count=2 + SEEN_CAP, offset=USER_WIDTH * 4)


def user(activity=0.0, skip_rate=0.0, last_active_days=0.0, count=0.0, skips=0.0, affinity=(), seen=(),
         head=None, seen_count=None) -> bytearray:
    value = empty_user_value()
    row = rows(value)
    row[USER_ACTIVITY], row[USER_SKIP_RATE], row[USER_LAST_ACTIVE_DAYS] = activity, skip_rate, last_active_days
    row[USER_EVENT_COUNT], row[USER_SKIP_COUNT] = count, skips
    row[USER_AFFINITY:USER_AFFINITY + len(affinity)] = affinity
    tail = ring_header(value)
    tail[2:2 + len(seen)] = seen
    tail[1] = len(seen) if seen_count is None else seen_count
    tail[0] = len(seen) % SEEN_CAP if head is None else head
    return value


def both_users(native, value, events, clock=NOW):
    """Applies ``events`` (index, category, weight, t) with both; they must leave the same bytes."""
    got, want = bytearray(value), bytearray(value)
    for index, category, weight, t in events:
        native.apply_user_event(got, index, category, weight, t, clock, HALF_LIFE)
        apply_user_event_reference(want, index, category, weight, t, clock, HALF_LIFE)
    assert bytes(got) == bytes(want)
    return want


# ----------------------------------------------------------------- the previous definition
def previous_update(value, index, category, weight, t, clock, half_life_s):
    """Applier._update + touch_seen as the worker had them before the kernel (valid rows only)."""
    row = rows(value)
    count, skips = float(row[USER_EVENT_COUNT]), float(row[USER_SKIP_COUNT])
    if count == 0.0 and row[USER_ACTIVITY] > 0:
        count = float(round(math.expm1(float(row[USER_ACTIVITY]))))
        skips = float(round(float(row[USER_SKIP_RATE]) * count))
    count += 1.0
    skips += 1.0 if weight < SKIP_BELOW else 0.0
    row[USER_EVENT_COUNT], row[USER_SKIP_COUNT] = count, skips
    row[USER_ACTIVITY] = math.log1p(count)
    row[USER_SKIP_RATE] = skips / count
    affinity = row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    ref = max(float(row[USER_LAST_ACTIVE_DAYS]) * DAY_SECONDS, clock)
    if t > ref:
        affinity *= np.float32(2.0 ** (-(t - ref) / half_life_s))
        ref = t
    if category >= 0:
        affinity[category] += np.float32(weight * 2.0 ** (-(ref - t) / half_life_s))
    row[USER_LAST_ACTIVE_DAYS] = max(float(row[USER_LAST_ACTIVE_DAYS]), t / DAY_SECONDS)
    tail = ring_header(value)
    head, count, ring = int(tail[0]), int(tail[1]), tail[2:]
    if count < SEEN_CAP:
        hits = np.flatnonzero(ring[:count] == index)
        if hits.size:
            k = int(hits[0])
            ring[k:count - 1] = ring[k + 1:count].copy()
            ring[count - 1] = index
        else:
            ring[count] = index
            tail[0], tail[1] = (count + 1) % SEEN_CAP, count + 1
        return
    hits = np.flatnonzero(ring == index)
    if not hits.size:
        ring[head] = index
        tail[0] = (head + 1) % SEEN_CAP
        return
    ordered = np.concatenate([ring[head:], ring[:head]])
    ring[:] = np.append(ordered[ordered != index], np.int32(index))
    tail[0] = 0


# ----------------------------------------------------------------- edge cases
EDGE_USERS = {
    "new": dict(),
    "offline": dict(activity=math.log1p(7), skip_rate=3 / 7, last_active_days=NOW / DAY_SECONDS - 2,
                    affinity=[0.5, 0.0, 2.25]),
    "offline_half": dict(activity=math.log1p(2.5), skip_rate=0.5),  # round half to even: 2 and 1
    "live": dict(count=12, skips=5, activity=math.log1p(12), skip_rate=5 / 12, last_active_days=NOW / DAY_SECONDS,
                 affinity=[1.0] * MAX_CATEGORIES, seen=list(range(40))),
    "active_in_the_future": dict(count=3, skips=0, last_active_days=NOW / DAY_SECONDS + 5, affinity=[4.0]),
    "inf_activity": dict(activity=INF, skip_rate=0.25),
    "nan_fields": dict(activity=NAN, skip_rate=NAN, last_active_days=NAN, affinity=[NAN, 1.0]),
    "huge_affinity": dict(affinity=[3e38, -3e38, 1e-45]),
    "full_ring": dict(seen=list(range(1000, 1000 + SEEN_CAP)), head=17, seen_count=SEEN_CAP),
    "full_ring_duplicates": dict(seen=[5, 6, 5] + list(range(100, 100 + SEEN_CAP - 3)), head=1,
                                 seen_count=SEEN_CAP),
    "ring_duplicates": dict(seen=[7, 8, 7, 9]),
    "ring_bad_count": dict(seen=[1, 2, 3], seen_count=SEEN_CAP + 1),
    "ring_negative_count": dict(seen=[1, 2, 3], seen_count=-2),
    "ring_bad_head": dict(seen=list(range(SEEN_CAP)), head=SEEN_CAP, seen_count=SEEN_CAP),
}
EDGE_EVENTS = [
    (0, 0, 0.5, NOW),                     # exactly at the clock, not a skip
    (1005, 2, 0.1, NOW + 3600),           # newer: decays everything first; a skip
    (7, -1, 0.9, NOW - 10 * DAY_SECONDS),  # older and without a category
    (5, MAX_CATEGORIES - 1, 1.0, NOW + 1),
    (6, MAX_CATEGORIES, 0.6, NOW + 2),    # out-of-range category: counted, no affinity
    (1000, 1, 0.0, NOW + 1e9),            # far future: affinity decays to 0
    (2**31 - 1, 0, 0.3, NOW),
    (0, 0, 0.7, NOW - 1e12),              # far past: its share underflows
]


@pytest.mark.parametrize("name", sorted(EDGE_USERS))
@pytest.mark.parametrize("k", range(len(EDGE_EVENTS)))
def test_native_matches_reference_per_event(native, name, k):
    both_users(native, user(**EDGE_USERS[name]), [EDGE_EVENTS[k]])


@pytest.mark.parametrize("name", sorted(EDGE_USERS))
def test_native_matches_reference_on_a_sequence(native, name):
    both_users(native, user(**EDGE_USERS[name]), EDGE_EVENTS * 3)
    both_users(native, user(**EDGE_USERS[name]), EDGE_EVENTS, clock=0.0)
    both_users(native, user(**EDGE_USERS[name]), EDGE_EVENTS, clock=NAN)


@pytest.mark.parametrize("name", ["new", "offline", "offline_half", "live", "active_in_the_future",
                                  "huge_affinity", "full_ring", "ring_duplicates"])
def test_reference_matches_the_previous_update_on_valid_rows(name):
    events = [e for e in EDGE_EVENTS if 0 <= e[1] < MAX_CATEGORIES or e[1] == -1] * 2
    want, got = user(**EDGE_USERS[name]), user(**EDGE_USERS[name])
    for index, category, weight, t in events:
        previous_update(want, index, category, weight, t, NOW, HALF_LIFE)
        apply_user_event_reference(got, index, category, weight, t, NOW, HALF_LIFE)
    assert bytes(got) == bytes(want)


def test_counts_recovered_from_an_offline_row_then_exact():
    value = user(activity=math.log1p(7), skip_rate=3 / 7, last_active_days=NOW / DAY_SECONDS)
    apply_user_event_reference(value, 1, 0, 0.1, NOW, NOW, HALF_LIFE)
    row = rows(value)
    assert (row[USER_EVENT_COUNT], row[USER_SKIP_COUNT]) == (8.0, 4.0)
    assert row[USER_ACTIVITY] == np.float32(math.log1p(8)) and row[USER_SKIP_RATE] == np.float32(0.5)
    assert row[USER_AFFINITY] == np.float32(0.1) and row[USER_CONSENT] == 1.0
    half = user(activity=math.log1p(2.5), skip_rate=0.5)  # round(2.5) = 2, round(0.5 * 2) = 1
    apply_user_event_reference(half, 1, 0, 0.9, NOW, NOW, HALF_LIFE)
    assert (rows(half)[USER_EVENT_COUNT], rows(half)[USER_SKIP_COUNT]) == (3.0, 1.0)


def test_a_newer_event_decays_affinity_an_older_one_adds_a_decayed_share():
    value = user(last_active_days=NOW / DAY_SECONDS, affinity=[1.0, 2.0])
    apply_user_event_reference(value, 1, 1, 1.0, NOW + HALF_LIFE, NOW, HALF_LIFE)
    assert rows(value)[USER_AFFINITY:USER_AFFINITY + 2].tolist() == [0.5, 2.0]
    apply_user_event_reference(value, 2, 0, 1.0, NOW, NOW, HALF_LIFE)  # one half-life older (to float32 days)
    assert rows(value)[USER_AFFINITY:USER_AFFINITY + 2].tolist() == [pytest.approx(1.0, rel=1e-5), 2.0]
    assert rows(value)[USER_LAST_ACTIVE_DAYS] == np.float32((NOW + HALF_LIFE) / DAY_SECONDS)


@pytest.mark.parametrize("touch", ["reference", "native"])
def test_touch_seen_ring_rules(native, touch):
    fn = touch_seen_reference if touch == "reference" else native.touch_seen
    value = empty_user_value()
    for index in range(300):
        fn(value, index)
    assert user_recent_items(value, SEEN_CAP).tolist() == list(range(300 - SEEN_CAP, 300))
    fn(value, 100)
    fn(value, 300)
    assert user_recent_items(value, SEEN_CAP).tolist() == [i for i in range(45, 300) if i != 100] + [100, 300]
    small = user(seen=[1, 2, 3, 2])
    fn(small, 2)  # the first copy moves; the later one stays
    assert user_recent_items(small, SEEN_CAP).tolist() == [1, 3, 2, 2]
    dup = user(seen=[5, 6, 5] + list(range(100, 100 + SEEN_CAP - 3)), head=0, seen_count=SEEN_CAP)
    fn(dup, 5)  # full with two copies: both leave, one comes back as the newest
    assert ring_header(dup)[:2].tolist() == [SEEN_CAP - 1, SEEN_CAP - 1]
    assert user_recent_items(dup, SEEN_CAP).tolist() == [6] + list(range(100, 100 + SEEN_CAP - 3)) + [5]
    bad = user(seen=[1, 2, 3], seen_count=-1)
    fn(bad, 9)
    assert user_recent_items(bad, SEEN_CAP).tolist() == [9]


def test_a_short_value_is_refused(native):
    if PURE_PYTHON:
        pytest.skip("the reference relies on NumPy's own bounds checks")
    with pytest.raises(ValueError):
        native.apply_user_event(bytearray(16), 1, 0, 1.0, NOW, NOW, HALF_LIFE)
    with pytest.raises(ValueError):
        native.update_item_stats(np.zeros(3), 2, 1.0, NOW, ITEM_HALF_LIFE)


# ----------------------------------------------------------------- item counters
def both_items(native, stats, events):
    got, want = stats.copy(), stats.copy()
    for event_type, weight, t in events:
        native.update_item_stats(got, event_type, weight, t, ITEM_HALF_LIFE)
        update_item_stats_reference(want, event_type, weight, t, ITEM_HALF_LIFE)
    assert got.tobytes() == want.tobytes()
    return want


ITEM_EVENTS = [(1, None, NOW), (2, 0.5, NOW), (5, 0.1, NOW + 3600), (3, 0.6, NOW - DAY_SECONDS),
               (0, 0.7, NOW + 10), (9, 1.0, NOW + 20), (8, 0.25, NOW + 1e9), (1, None, NOW - 1e12)]


@pytest.mark.parametrize("start", ["zero", "filled", "nan_ref", "future_ref"])
def test_item_stats_native_matches_reference(native, start):
    stats = np.zeros(STAT_WIDTH)
    if start != "zero":
        stats[:] = np.arange(STAT_WIDTH) + 0.5
        stats[0] = {"filled": NOW - 60, "nan_ref": NAN, "future_ref": NOW + 1e6}[start]
    for k in range(len(ITEM_EVENTS)):
        both_items(native, stats, [ITEM_EVENTS[k]])
    both_items(native, stats, ITEM_EVENTS * 2)


# ----------------------------------------------------------------- random inputs
floats = st.one_of(st.floats(width=32), st.floats(-1e3, 1e3, width=32), st.just(0.0))
times = st.one_of(st.floats(NOW - 400 * DAY_SECONDS, NOW + 400 * DAY_SECONDS), st.just(NOW))


@st.composite
def random_user(draw):
    seen = draw(st.lists(st.integers(0, 40), max_size=SEEN_CAP))
    full = draw(st.booleans())
    if full:
        seen = (seen + list(range(500, 500 + SEEN_CAP)))[:SEEN_CAP]
    return user(activity=draw(floats), skip_rate=draw(floats), last_active_days=draw(floats) + NOW / DAY_SECONDS,
                count=draw(st.sampled_from([0.0, 1.0, 17.0])), skips=draw(st.sampled_from([0.0, 1.0])),
                affinity=draw(st.lists(floats, max_size=MAX_CATEGORIES)), seen=seen,
                head=draw(st.integers(0, SEEN_CAP - 1)) if full else None)


events = st.lists(st.tuples(st.integers(0, 45), st.integers(-1, MAX_CATEGORIES),
                            st.one_of(st.floats(0, 1), st.sampled_from([0.1, 0.5, 0.9])), times),
                  min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(random_user(), events, st.one_of(st.just(NOW), times))
def test_random_users_native_matches_reference(native, value, evs, clock):
    both_users(native, value, evs, clock)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False), min_size=STAT_WIDTH, max_size=STAT_WIDTH), st.booleans(),
       st.lists(st.tuples(st.integers(-1, 10), st.one_of(st.none(), st.floats(0, 1)), times), max_size=20))
def test_random_item_stats_native_matches_reference(native, start, fresh, evs):
    stats = np.zeros(STAT_WIDTH) if fresh else np.array(start, dtype=np.float64)
    both_items(native, stats, evs)
