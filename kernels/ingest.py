"""The ingest worker's per-event updates of a stored user value and of an item's counters.

apply_user_event(value, index, category, weight, t, clock, half_life_s) -- value is a
writable user value (kernels.layout: float32[USER_WIDTH], int32 seen head, int32 seen
count, int32[SEEN_CAP] seen ring), t and clock in seconds, 0 <= index < 2**31:

    count, skips = row[EVENT_COUNT], row[SKIP_COUNT]
    if count == 0 and row[ACTIVITY] > 0:          a row built offline: recover the exact counts
        count = round(expm1(row[ACTIVITY])), skips = round(row[SKIP_RATE] * count)
                                                  (round half to even; inf / NaN stay as they are)
    count += 1, skips += (weight < SKIP_BELOW)
    row[EVENT_COUNT], row[SKIP_COUNT] = count, skips
    row[ACTIVITY] = log1p(count), row[SKIP_RATE] = skips / count
    ref = max(row[LAST_ACTIVE_DAYS] * DAY_SECONDS, clock)
    if t > ref:  row[AFFINITY + c] *= float32(2**(-(t - ref) / half_life_s)) for every c; ref = t
    if 0 <= category < MAX_CATEGORIES:  row[AFFINITY + category] += float32(weight * 2**(-(ref - t) / half_life_s))
    row[LAST_ACTIVE_DAYS] = max(row[LAST_ACTIVE_DAYS], t / DAY_SECONDS)
    touch_seen(value, index)

Arithmetic is in float64 and stored as float32, except the affinity updates, which are
float32 * float32 and float32 + float32 (as NumPy does them in place on the float32 row).
max(a, b) is Python's: a unless b > a (so a NaN first argument stays).

touch_seen(value, index) makes ``index`` the newest entry of the seen ring, moving it
if present. A ring whose count is outside 0..SEEN_CAP or whose head is outside
0..SEEN_CAP-1 is first reset to empty. Not full (count < SEEN_CAP; slots 0..count-1
oldest .. newest, head == count): the first copy of ``index`` in ring[:count] moves to
slot count-1 (the ones after it shift down), else ``index`` goes to slot count and
count += 1, head = count % SEEN_CAP. Full: without ``index`` it replaces the oldest
(ring[head]) and head advances; with it, the ring in age order minus every copy of
``index``, plus ``index``, is written to slots 0..L-1, count = L, head = L % SEEN_CAP
(L = SEEN_CAP when ``index`` was there once, the ring the offline builder leaves).

update_item_stats(stats, event_type, weight, t, half_life_s): stats is float64[STAT_WIDTH]
(server.events.rollup describes the columns), weight None for an impression:

    if t > stats[T_REF]:
        if stats[T_REF] > 0:  TREND and EVENTS+0..N_EVENT_TYPES-1 *= 2**(-(t - T_REF) / half_life_s)
        T_REF = t
    share = 2**(-(T_REF - t) / half_life_s)
    if 0 < event_type < N_EVENT_TYPES:  EVENTS+event_type += share
    if weight is not None:  COUNT += 1, WEIGHT_SUM += weight, SKIPS += (weight < SKIP_BELOW),
                            TREND += weight * share

The references below are the definition; kernels/_ingest.pyx must give the same bytes.
"""

from __future__ import annotations

import math

import numpy as np

from kernels._backend import PURE_PYTHON
from kernels.layout import (
    MAX_CATEGORIES,
    N_EVENT_TYPES,
    SEEN_CAP,
    STAT_COUNT,
    STAT_EVENTS,
    STAT_SKIPS,
    STAT_T_REF,
    STAT_TREND,
    STAT_WEIGHT_SUM,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_EVENT_COUNT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_COUNT,
    USER_SKIP_RATE,
    USER_WIDTH,
)

DAY_SECONDS = 86400.0  # ops.features.DAY_SECONDS (kernels import nothing above them)
SKIP_BELOW = 0.5       # ops.features.SKIP_BELOW: an interaction weighing less is a skip


# IEEE results where Python's math raises, as the C library gives them
def _round_even(x: float) -> float:
    return float(round(x)) if math.isfinite(x) else x


def _expm1(x: float) -> float:
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


def _log1p(x: float) -> float:
    return math.log1p(x) if x > -1.0 else (-math.inf if x == -1.0 else math.nan)


def _div(a: float, b: float) -> float:
    if b != 0.0:
        return a / b
    return math.nan if a == 0.0 or a != a else math.copysign(math.inf, a) * math.copysign(1.0, b)


def _max(a: float, b: float) -> float:
    return b if b > a else a


def touch_seen_reference(value, index: int) -> None:
    tail = np.frombuffer(value, dtype=np.int32, count=2 + SEEN_CAP, offset=USER_WIDTH * 4)
    head, count, ring = int(tail[0]), int(tail[1]), tail[2:]
    if not (0 <= count <= SEEN_CAP and 0 <= head < SEEN_CAP):
        head = count = 0
        tail[0] = tail[1] = 0
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
    kept = np.append(ordered[ordered != index], np.int32(index))
    ring[:kept.size] = kept
    tail[0], tail[1] = kept.size % SEEN_CAP, kept.size


def apply_user_event_reference(value, index: int, category: int, weight: float, t: float, clock: float,
                               half_life_s: float) -> None:
    row = np.frombuffer(value, dtype=np.float32, count=USER_WIDTH)
    count, skips = float(row[USER_EVENT_COUNT]), float(row[USER_SKIP_COUNT])
    if count == 0.0 and row[USER_ACTIVITY] > 0:
        count = _round_even(_expm1(float(row[USER_ACTIVITY])))
        skips = _round_even(float(row[USER_SKIP_RATE]) * count)
    count += 1.0
    skips += 1.0 if weight < SKIP_BELOW else 0.0
    row[USER_EVENT_COUNT], row[USER_SKIP_COUNT] = count, skips
    row[USER_ACTIVITY] = _log1p(count)
    row[USER_SKIP_RATE] = _div(skips, count)
    affinity = row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    ref = _max(float(row[USER_LAST_ACTIVE_DAYS]) * DAY_SECONDS, clock)
    if t > ref:
        affinity *= np.float32(2.0 ** (-(t - ref) / half_life_s))
        ref = t
    if 0 <= category < MAX_CATEGORIES:
        affinity[category] += np.float32(weight * 2.0 ** (-(ref - t) / half_life_s))
    row[USER_LAST_ACTIVE_DAYS] = _max(float(row[USER_LAST_ACTIVE_DAYS]), t / DAY_SECONDS)
    touch_seen_reference(value, index)


def update_item_stats_reference(stats: np.ndarray, event_type: int, weight: float | None, t: float,
                                half_life_s: float) -> None:
    ref = stats[STAT_T_REF]
    if t > ref:
        if ref > 0:
            decay = 2.0 ** (-(t - ref) / half_life_s)
            stats[STAT_TREND] *= decay
            stats[STAT_EVENTS:STAT_EVENTS + N_EVENT_TYPES] *= decay
        stats[STAT_T_REF] = ref = t
    share = 2.0 ** (-(ref - t) / half_life_s)
    if 0 < event_type < N_EVENT_TYPES:
        stats[STAT_EVENTS + event_type] += share
    if weight is not None:
        stats[STAT_COUNT] += 1.0
        stats[STAT_WEIGHT_SUM] += weight
        stats[STAT_SKIPS] += 1.0 if weight < SKIP_BELOW else 0.0
        stats[STAT_TREND] += weight * share


if PURE_PYTHON:
    apply_user_event = apply_user_event_reference
    touch_seen = touch_seen_reference
    update_item_stats = update_item_stats_reference
else:
    from kernels._ingest import apply_user_event, touch_seen, update_item_stats  # noqa: F401
