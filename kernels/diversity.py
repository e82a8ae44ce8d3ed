"""Diversity re-ranking: pick ``limit`` candidates from a score-ordered list so
that no category exceeds ``max_per_category`` and no category runs longer than
``max_streak`` in a row.

    Walk ``order`` (positions into ``categories``, best first). Take position p when
      taken_count[categories[p]] < max_per_category  and
      the last ``max_streak`` taken items are not all of category categories[p].
    Stop when ``limit`` are taken. If the walk ends short, append the skipped
    positions in their original order until ``limit`` (never short while
    candidates remain: diversity is a preference, not a filter).
    A category < 0 (unknown) counts as its own category -1.
    max_per_category <= 0 or max_streak <= 0 disables that rule.

Returns int64[k], k = max(min(limit, len(order)), 0): the chosen positions in output order.
"""

from __future__ import annotations

import numpy as np

from kernels._backend import PURE_PYTHON


def diversify_reference(order, categories, limit, max_per_category, max_streak):
    n = order.shape[0]
    k = max(min(int(limit), n), 0)
    out = np.empty(k, dtype=np.int64)
    if k == 0:
        return out
    counts: dict[int, int] = {}
    skipped = []
    taken = 0
    run_cat, run_len = None, 0
    for j in range(n):
        if taken == k:
            break
        p = int(order[j])
        c = max(int(categories[p]), -1)
        if max_per_category > 0 and counts.get(c, 0) >= max_per_category:
            skipped.append(p)
            continue
        if max_streak > 0 and run_cat == c and run_len >= max_streak:
            skipped.append(p)
            continue
        out[taken] = p
        taken += 1
        counts[c] = counts.get(c, 0) + 1
        if run_cat == c:
            run_len += 1
        else:
            run_cat, run_len = c, 1
    for p in skipped:
        if taken == k:
            break
        out[taken] = p
        taken += 1
    return out[:taken]


if PURE_PYTHON:
    diversify = diversify_reference
else:
    from kernels._diversity import diversify  # noqa: F401
