"""Diversity re-ranking: pick ``limit`` candidates from a score-ordered list so
that no category exceeds ``max_per_category`` and no category runs longer than
``max_streak`` in a row, while staying as close to score order as the rules allow.

    For each output slot, take the first position p of ``order`` (best first) not yet
    taken such that
      (1) taken_count[categories[p]] < max_per_category  and
          the last ``max_streak`` taken items are not all of category categories[p];
    if no position passes (1), the first one that passes the streak rule alone;
    if none passes that either, the first position not yet taken.
    So an item held back to break a streak returns as soon as the run ends, and the
    output is never short while candidates remain (diversity is a preference, not a filter).
    Any category < 0 (unknown) counts as the one category -1.
    max_per_category <= 0 or max_streak <= 0 disables that rule.
    With page_size > 0 the category counts start again every page_size output slots
    (caps hold per page, so one call orders every page of a snapshot); runs carry over.

Returns int64[k], k = max(min(limit, len(order)), 0): the chosen positions in output order.
Cost O(k * n) in the worst case; k and n are a page and a few hundred candidates.
"""

from __future__ import annotations

import numpy as np

from kernels._backend import PURE_PYTHON


def diversify_reference(order, categories, limit, max_per_category, max_streak, page_size=0):
    n = order.shape[0]
    k = max(min(int(limit), n), 0)
    out = np.empty(k, dtype=np.int64)
    taken = [False] * n
    counts: dict[int, int] = {}
    run_cat, run_len = None, 0
    cats = [max(int(categories[int(p)]), -1) for p in order]
    for slot in range(k):
        if page_size > 0 and slot % page_size == 0:
            counts.clear()
        choice = fallback_streak = fallback_any = -1
        for j in range(n):
            if taken[j]:
                continue
            if fallback_any < 0:
                fallback_any = j
            c = cats[j]
            streak_ok = not (max_streak > 0 and run_cat == c and run_len >= max_streak)
            if streak_ok and fallback_streak < 0:
                fallback_streak = j
            if streak_ok and not (max_per_category > 0 and counts.get(c, 0) >= max_per_category):
                choice = j
                break
        if choice < 0:
            choice = fallback_streak if fallback_streak >= 0 else fallback_any
        taken[choice] = True
        c = cats[choice]
        out[slot] = order[choice]
        counts[c] = counts.get(c, 0) + 1
        if run_cat == c:
            run_len += 1
        else:
            run_cat, run_len = c, 1
    return out


if PURE_PYTHON:
    diversify = diversify_reference
else:
    from kernels._diversity import diversify  # noqa: F401
