"""Offline feature builders: item rows, user values and precomputed item lists.

Pure functions over a :class:`ops.catalog.Catalog` and an
:class:`ops.interactions.Interactions` history; nothing here touches the store.
Everything is computed "as of" ``now_ts``: history rows with ``ts > now_ts`` are
ignored, so the same functions build point-in-time features for evaluation.
Time-decayed sums weigh a row by ``2 ** (-(now_ts - ts) / half_life)``.
An interaction with weight < 0.5 counts as a skip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels.layout import (
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CREATED_DAYS,
    ITEM_EDITORIAL,
    ITEM_MATURITY,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    ITEM_SPONSORED,
    ITEM_WIDTH,
    MATURITY_CODES,
    MATURITY_MOST_RESTRICTIVE,
    MAX_CATEGORIES,
    SEEN_CAP,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
    USER_WIDTH,
)
from ops.catalog import Catalog, normalize_maturity
from ops.interactions import Interactions
from server.store import empty_user_value

DAY_SECONDS = 86400
SKIP_BELOW = 0.5
QUALITY_PRIOR = 0.5
PSEUDO_COUNT = 2.0            # prior strength, in interactions, for quality and skip rate
AFFINITY_HALF_LIFE_DAYS = 30.0   # defaults; a tenant's config may set its own (HalfLives)
TRENDING_HALF_LIFE_DAYS = 7.0
MAX_HALF_LIFE_DAYS = 3650.0      # the longest a tenant may set (ten years)
TRENDING_SIZE = 1000
TRENDING_CATEGORY_SIZE = 500
NEW_SIZE = 1000
SEGMENT_SIZE = 200


@dataclass(frozen=True)
class HalfLives:
    """One tenant's decay half-lives in days, each within (0, MAX_HALF_LIFE_DAYS]. The
    tenant config sets them (server.tenancy.TenantConfig.half_lives); the offline builders
    here, the ingest worker and its roll-up all decay with the same pair."""

    affinity_days: float = AFFINITY_HALF_LIFE_DAYS  # user category affinity (and the segment lists)
    trending_days: float = TRENDING_HALF_LIFE_DAYS  # item trending weight and per-event-type counts


def maturity_code(raw: str | None) -> int:
    """MATURITY_CODES value of a rating string; unknown/missing -> most restrictive."""
    code = normalize_maturity(raw)
    return MATURITY_MOST_RESTRICTIVE if code is None else MATURITY_CODES[code]


def _as_of(history: Interactions, now_ts: int) -> Interactions:
    late = history.ts > now_ts
    return history.subset(~late) if late.any() else history


def _decay(ts: np.ndarray, now_ts: int, half_life_days: float) -> np.ndarray:
    return np.exp2(-(now_ts - ts).astype(np.float64) / (half_life_days * DAY_SECONDS))


def valid_category_ids(column: np.ndarray) -> np.ndarray:
    """int64 category id per value of an ITEM_CATEGORY column; -1 where it is not a valid id."""
    valid = (column >= 0) & (column < MAX_CATEGORIES) & (column == np.floor(column))
    return np.where(valid, column, -1).astype(np.int64)


def _item_categories(item_rows: np.ndarray) -> np.ndarray:
    """int64 category per item row; -1 where the row holds no valid category id."""
    return valid_category_ids(item_rows[:, ITEM_CATEGORY])


def _affinity(history: Interactions, item_cats: np.ndarray, now_ts: int, half_life_days: float) -> np.ndarray:
    """float64[n_users, MAX_CATEGORIES]: sum of weight * decay per (user, item category)."""
    cats = item_cats[history.item]
    ok = cats >= 0
    key = history.user[ok].astype(np.int64) * MAX_CATEGORIES + cats[ok]
    w = history.weight[ok] * _decay(history.ts[ok], now_ts, half_life_days)
    # bincount over the flattened (user, category) key: np.add.at semantics, several times faster
    flat = np.bincount(key, weights=w, minlength=history.n_users * MAX_CATEGORIES)
    return flat.reshape(history.n_users, MAX_CATEGORIES)


def _ranked(items: np.ndarray, scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """items by score desc, ties by item index asc; the first k (all when None)."""
    order = np.lexsort((items, -scores))
    return items[order[:k]].astype(np.int32)


def _ranked_per_group(groups: np.ndarray, items: np.ndarray, scores: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """For each group id: its top-k items by score desc, ties by item index."""
    order = np.lexsort((items, -scores, groups))
    g = groups[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(g)]
    return {int(g[s]): items[order[s:min(e, s + k)]].astype(np.int32) for s, e in zip(starts, ends)}


@dataclass(frozen=True)
class ItemCounts:
    """Per-item interaction statistics, the inputs of POPULARITY, QUALITY, SKIP_RATE
    and the trending lists. Offline (:func:`item_counts`) they come from the history;
    online the ingest worker keeps the same numbers per item (db ``item_stats``,
    seeded by ``funnel load``), so both compute the same rows and lists."""

    count: np.ndarray        # float64: interactions
    weight_sum: np.ndarray   # float64: sum of interaction weights
    skips: np.ndarray        # float64: interactions with weight < SKIP_BELOW
    trend: np.ndarray        # float64: sum of weight * 2**(-age / trending half-life) at now_ts


def item_counts(history: Interactions, n: int, now_ts: int,
                half_life_days: float = TRENDING_HALF_LIFE_DAYS) -> ItemCounts:
    """:class:`ItemCounts` of items 0..n-1 from the history as of ``now_ts``."""
    h = _as_of(history, now_ts)
    if len(h) and int(h.item.max()) >= n:
        raise ValueError(f"history references item {int(h.item.max())} but the catalog has {n} items")
    return ItemCounts(
        count=np.bincount(h.item, minlength=n).astype(np.float64),
        weight_sum=np.bincount(h.item, weights=h.weight, minlength=n),
        skips=np.bincount(h.item, weights=(h.weight < SKIP_BELOW).astype(np.float64), minlength=n),
        trend=np.bincount(h.item, weights=h.weight * _decay(h.ts, now_ts, half_life_days), minlength=n))


def skip_prior(counts: ItemCounts) -> float:
    """The dataset-wide share of skips (0 without history)."""
    total = float(counts.count.sum())
    return float(counts.skips.sum()) / total if total else 0.0


def popularity(count: np.ndarray, max_count: float) -> np.ndarray:
    """log1p(count) / log1p(max_count), at most 1 (0 everywhere when max_count is 0)."""
    if max_count <= 0:
        return np.zeros(np.shape(count), dtype=np.float64)
    return np.minimum(np.log1p(count) / np.log1p(max_count), 1.0)


def quality(weight_sum: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean weight shrunk toward QUALITY_PRIOR by PSEUDO_COUNT interactions."""
    return (weight_sum + PSEUDO_COUNT * QUALITY_PRIOR) / (count + PSEUDO_COUNT)


def skip_rate(skips: np.ndarray, count: np.ndarray, prior: float) -> np.ndarray:
    """Skip share shrunk toward ``prior``, so an item without history looks average."""
    return (skips + PSEUDO_COUNT * prior) / (count + PSEUDO_COUNT)


def item_base_rows(catalog: Catalog, history: Interactions, now_ts: int) -> np.ndarray:
    """float32[len(catalog), ITEM_WIDTH] rows; ``history.item`` indexes catalog positions.

    ACTIVE, SPONSORED, EDITORIAL come from the catalog; MATURITY is the code of
    the catalog's rating (unknown -> MATURITY_MOST_RESTRICTIVE); CATEGORY is the
    dense primary category; CREATED_DAYS = created_ts / 86400.
    POPULARITY = :func:`popularity` (count, max count); QUALITY = :func:`quality`;
    SKIP_RATE = :func:`skip_rate` with the dataset-wide skip share as the prior.
    CF columns are 0.
    """
    n = len(catalog)
    counts = item_counts(history, n, now_ts)
    maturity = np.fromiter((maturity_code(m) for m in catalog.maturity), dtype=np.float32, count=n)

    rows = np.zeros((n, ITEM_WIDTH), dtype=np.float32)
    rows[:, ITEM_ACTIVE] = catalog.active
    rows[:, ITEM_MATURITY] = maturity
    rows[:, ITEM_CATEGORY] = catalog.primary_category
    rows[:, ITEM_POPULARITY] = popularity(counts.count, counts.count.max() if n else 0.0)
    rows[:, ITEM_CREATED_DAYS] = catalog.created_ts / DAY_SECONDS
    rows[:, ITEM_EDITORIAL] = np.clip(catalog.editorial, 0.0, 1.0)
    rows[:, ITEM_QUALITY] = quality(counts.weight_sum, counts.count)
    rows[:, ITEM_SKIP_RATE] = skip_rate(counts.skips, counts.count, skip_prior(counts))
    rows[:, ITEM_SPONSORED] = catalog.sponsored
    return rows


def user_values_from_history(history: Interactions, item_rows: np.ndarray, now_ts: int,
                             half_life_days: float = AFFINITY_HALF_LIFE_DAYS) -> list[bytearray]:
    """One store user value per ``history.user_ids`` entry (same order).

    Starts from ``server.store.empty_user_value()`` (consent 1) and sets
    USER_ACTIVITY = log1p(n interactions), USER_SKIP_RATE = share with weight < 0.5,
    USER_LAST_ACTIVE_DAYS = latest ts / 86400, USER_AFFINITY[c] = sum of
    weight * decay over the user's interactions with items of category c
    (category read from ``item_rows``, indexed by ``history.item``). The seen
    ring holds exactly what ``server.store.push_seen`` leaves after pushing the
    user's most recent SEEN_CAP distinct items, oldest first, into the empty
    ring (a re-interacted item counts at its latest time).
    CF fields stay 0.
    """
    h = _as_of(history, now_ts)
    n_users, n = h.n_users, len(h)
    affinity = _affinity(h, _item_categories(item_rows), now_ts, half_life_days)
    count = np.bincount(h.user, minlength=n_users)
    skips = np.bincount(h.user, weights=(h.weight < SKIP_BELOW).astype(np.float64), minlength=n_users)

    # rows by user, then time, then position; a unique int64 key sorts ~2x faster than lexsort
    by_time = np.argsort(h.ts, kind="stable")  # near O(n): Interactions are time-sorted
    order = by_time[np.argsort(h.user[by_time].astype(np.int64) * max(n, 1) + np.arange(n))]
    user_s, item_s, ts_s = h.user[order], h.item[order], h.ts[order]
    last_ts = np.zeros(n_users, dtype=np.int64)
    ends = np.cumsum(count)
    active = count > 0
    last_ts[active] = ts_s[ends[active] - 1]

    # keep each (user, item) pair's latest row only, still in (user, time) order
    pair = user_s.astype(np.int64) * (int(item_s.max()) + 1 if n else 1) + item_s
    _, first_in_reverse = np.unique(pair[::-1], return_index=True)
    keep = np.sort(n - 1 - first_in_reverse)
    seen_user, seen_item = user_s[keep], item_s[keep]
    seen_end = np.searchsorted(seen_user, np.arange(n_users), side="right")
    seen_start = np.maximum(np.r_[0, seen_end[:-1]], seen_end - SEEN_CAP)

    template = np.frombuffer(empty_user_value(), dtype=np.uint8)
    block = np.tile(template, (n_users, 1))
    rows = block[:, :USER_WIDTH * 4].view(np.float32)
    rows[:, USER_ACTIVITY] = np.log1p(count)
    rows[:, USER_SKIP_RATE] = np.divide(skips, count, out=np.zeros(n_users), where=active)
    rows[:, USER_LAST_ACTIVE_DAYS] = last_ts / DAY_SECONDS
    rows[:, USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES] = affinity

    # the seen ring as push_seen(empty ring, items) leaves it: items in slots 0..k-1,
    # head = k % SEEN_CAP, count = k (layout: kernels.layout); vectorised for speed
    k = seen_end - seen_start
    ring_at = USER_WIDTH * 4
    head_count = block[:, ring_at:ring_at + 8].view(np.int32)
    head_count[:, 0] = k % SEEN_CAP
    head_count[:, 1] = k
    slot = np.arange(len(seen_user)) - seen_start[seen_user]
    sel = slot >= 0
    block[:, ring_at + 8:].view(np.int32)[seen_user[sel], slot[sel]] = seen_item[sel]

    size = block.shape[1]
    flat = memoryview(block.reshape(-1))
    return [bytearray(flat[o:o + size]) for o in range(0, n_users * size, size)]


def user_segments(history: Interactions, item_rows: np.ndarray, now_ts: int,
                  half_life_days: float = AFFINITY_HALF_LIFE_DAYS) -> np.ndarray:
    """int64[n_users]: each user's top-affinity category (lowest id on ties), -1 without any."""
    affinity = _affinity(_as_of(history, now_ts), _item_categories(item_rows), now_ts, half_life_days)
    return np.where(affinity.max(axis=1) > 0, affinity.argmax(axis=1), -1)


def popular_list(active: np.ndarray, count: np.ndarray) -> np.ndarray:
    """"popular": every active item by interaction count desc (= POPULARITY desc), ties by index."""
    act = np.flatnonzero(active)
    return _ranked(act, count[act])


def trending_lists(active: np.ndarray, cats: np.ndarray, trend: np.ndarray) -> dict[str, np.ndarray]:
    """"trending": the top TRENDING_SIZE active items with positive decayed weight;
    "trending:<c>" for every c in 0..MAX_CATEGORIES-1: the same within category c,
    top TRENDING_CATEGORY_SIZE (possibly empty). Ties by index."""
    hot = np.flatnonzero(active & (trend > 0))
    lists = {"trending": _ranked(hot, trend[hot], TRENDING_SIZE)}
    hot = hot[cats[hot] >= 0]
    by_cat = _ranked_per_group(cats[hot], hot, trend[hot], TRENDING_CATEGORY_SIZE)
    empty = np.empty(0, dtype=np.int32)
    for c in range(MAX_CATEGORIES):
        lists[f"trending:{c}"] = by_cat.get(c, empty)
    return lists


def item_lists(item_rows: np.ndarray, history: Interactions, now_ts: int,
               half_life_days: float = TRENDING_HALF_LIFE_DAYS,
               affinity_half_life_days: float = AFFINITY_HALF_LIFE_DAYS) -> dict[str, np.ndarray]:
    """Precomputed int32 item lists over active items (ACTIVE == 1); ties by index.

    "popular": :func:`popular_list` (the last-resort fallback).
    "trending", "trending:<c>": :func:`trending_lists` of the weight decayed with
    half-life ``half_life_days``.
    "new": top 1000 by CREATED_DAYS desc.
    "segment:<c>": top 200 by affinity-decayed weight among interactions of users
    whose top-affinity category (:func:`user_segments`) is c.
    Every c in 0..MAX_CATEGORIES-1 gets a trending and a segment list, possibly
    empty, so writing the result overwrites every list a previous load wrote.
    """
    h = _as_of(history, now_ts)
    n = item_rows.shape[0]
    active = item_rows[:, ITEM_ACTIVE] == 1.0
    act = np.flatnonzero(active)
    counts = item_counts(h, n, now_ts, half_life_days)
    lists = {
        "popular": popular_list(active, counts.count),
        "new": _ranked(act, item_rows[act, ITEM_CREATED_DAYS], NEW_SIZE),
        **trending_lists(active, _item_categories(item_rows), counts.trend),
    }

    segment = user_segments(h, item_rows, now_ts, affinity_half_life_days)[h.user]
    sel = (segment >= 0) & active[h.item]
    key = segment[sel] * n + h.item[sel]
    pairs, inverse = np.unique(key, return_inverse=True)
    score = np.bincount(inverse, weights=(h.weight * _decay(h.ts, now_ts, affinity_half_life_days))[sel],
                        minlength=len(pairs))
    by_segment = _ranked_per_group(pairs // n, pairs % n, score, SEGMENT_SIZE)

    empty = np.empty(0, dtype=np.int32)
    for c in range(MAX_CATEGORIES):
        lists[f"segment:{c}"] = by_segment.get(c, empty)
    return lists
