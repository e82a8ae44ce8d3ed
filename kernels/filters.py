"""Hard filters over candidate item indices, read straight from the mapped item rows.

    keep(i)  <=>  0 <= idx[i] < n_items  and its chunk exists
              and row[ACTIVE] == 1
              and maturity(row) <= max_maturity, where maturity(row) = row[MATURITY]
                  if it is an integer code in 0..4, else MATURITY_MOST_RESTRICTIVE (fail closed)
              and not (blocked_categories >> category) & 1      (category outside 0..63 -> blocked)
              and idx[i] not in deny_idx

Checks run in that order; the first failing one is the reason written to
``reasons[i]`` (kernels.layout REMOVED_*; a denied index gets its ``deny_reason``).
``deny_idx`` is sorted ascending (duplicates allowed; the first match's reason wins).
Returns the number kept; ``reasons`` must be uint8[n].
"""

from __future__ import annotations

import numpy as np

from kernels._backend import PURE_PYTHON, item_block
from kernels.layout import (
    CHUNK_ROWS_LOG2,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_MATURITY,
    KEEP,
    MATURITY_MOST_RESTRICTIVE,
    REMOVED_BLOCKED_CATEGORY,
    REMOVED_INACTIVE,
    REMOVED_MATURITY,
    REMOVED_UNKNOWN,
)


def hard_filter_reference(idx, chunk_addrs, n_items, item_width, max_maturity,
                          blocked_categories, deny_idx, deny_reason, reasons):
    n = idx.shape[0]
    kept = 0
    chunk_rows = 1 << CHUNK_ROWS_LOG2
    blocked_categories = int(blocked_categories) & 0xFFFFFFFFFFFFFFFF
    for i in range(n):
        index = int(idx[i])
        chunk = index >> CHUNK_ROWS_LOG2 if index >= 0 else -1
        if index < 0 or index >= n_items or chunk >= chunk_addrs.shape[0] or chunk_addrs[chunk] == 0:
            reasons[i] = REMOVED_UNKNOWN
            continue
        row = item_block(int(chunk_addrs[chunk]), chunk_rows, item_width)[index & (chunk_rows - 1)]
        if row[ITEM_ACTIVE] != 1.0:
            reasons[i] = REMOVED_INACTIVE
            continue
        m = row[ITEM_MATURITY]
        code = int(m) if (m == m and 0.0 <= m <= 4.0 and m == int(m)) else MATURITY_MOST_RESTRICTIVE
        if code > max_maturity:
            reasons[i] = REMOVED_MATURITY
            continue
        c = row[ITEM_CATEGORY]
        if not (c == c and 0.0 <= c < 64.0) or (blocked_categories >> int(c)) & 1:
            reasons[i] = REMOVED_BLOCKED_CATEGORY
            continue
        pos = int(np.searchsorted(deny_idx, index))
        if pos < deny_idx.shape[0] and deny_idx[pos] == index:
            reasons[i] = deny_reason[pos]
            continue
        reasons[i] = KEEP
        kept += 1
    return kept


if PURE_PYTHON:
    hard_filter = hard_filter_reference
else:
    from kernels._filters import hard_filter  # noqa: F401
