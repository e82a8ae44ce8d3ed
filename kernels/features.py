"""Feature assembly: one float32 matrix [candidates x N_FEATURES], gathered from
the mapped item rows and one user row (column order = kernels.layout.FEATURES).

For candidate i with item row r, user row u, normalised affinity a (float32[64],
already divided by its sum, zeros for a user without history) and source
signals s[i] (SIGNAL_CONTENT, SIGNAL_TRENDING, SIGNAL_CF):

    cf_score           = dot(u[USER_CF:USER_CF+D], r[ITEM_CF:ITEM_CF+D]) if u[USER_HAS_CF] == 1 else 0
    category_affinity  = a[int(r[CATEGORY])] if 0 <= r[CATEGORY] < 64 else 0
    item_popularity    = r[POPULARITY]
    item_recency       = exp(-ln2 * max(now_days - r[CREATED_DAYS], 0) / half_life_days)
    editorial_boost    = r[EDITORIAL]
    item_quality       = r[QUALITY]
    item_skip_rate     = r[SKIP_RATE]
    user_skip_rate     = u[USER_SKIP_RATE]
    user_activity      = u[USER_ACTIVITY]
    content_similarity = s[i, SIGNAL_CONTENT]
    trending_score     = s[i, SIGNAL_TRENDING]
    from_cf            = s[i, SIGNAL_CF]

``half_life_days`` must be > 0 (ValueError otherwise). Every index in ``idx``
must already have passed the hard filter (known item, chunk present). Writes
into ``out`` (float32[n, N_FEATURES], C-contiguous) and also the item
categories into ``categories`` (int32[n]) for the re-ranker.
"""

from __future__ import annotations

import math

import numpy as np

from kernels._backend import PURE_PYTHON, item_block
from kernels.layout import (
    CF_DIM,
    CHUNK_ROWS_LOG2,
    ITEM_CATEGORY,
    ITEM_CF,
    ITEM_CREATED_DAYS,
    ITEM_EDITORIAL,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    USER_ACTIVITY,
    USER_CF,
    USER_HAS_CF,
    USER_SKIP_RATE,
)


def assemble_features_reference(idx, chunk_addrs, item_width, user_row, affinity,
                                signals, now_days, half_life_days, out, categories):
    n = idx.shape[0]
    chunk_rows = 1 << CHUNK_ROWS_LOG2
    has_cf = user_row[USER_HAS_CF] == 1.0
    ucf = user_row[USER_CF:USER_CF + CF_DIM].astype(np.float32)
    if not half_life_days > 0.0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    decay = math.log(2.0) / half_life_days
    for i in range(n):
        index = int(idx[i])
        r = item_block(int(chunk_addrs[index >> CHUNK_ROWS_LOG2]), chunk_rows, item_width)[index & (chunk_rows - 1)]
        c = r[ITEM_CATEGORY]
        cat = int(c) if (c == c and 0.0 <= c < 64.0) else -1
        categories[i] = cat
        out[i, 0] = np.float32(np.dot(ucf, r[ITEM_CF:ITEM_CF + CF_DIM])) if has_cf else 0.0
        out[i, 1] = affinity[cat] if cat >= 0 else 0.0
        out[i, 2] = r[ITEM_POPULARITY]
        out[i, 3] = math.exp(-decay * max(float(now_days) - float(r[ITEM_CREATED_DAYS]), 0.0))
        out[i, 4] = r[ITEM_EDITORIAL]
        out[i, 5] = r[ITEM_QUALITY]
        out[i, 6] = r[ITEM_SKIP_RATE]
        out[i, 7] = user_row[USER_SKIP_RATE]
        out[i, 8] = user_row[USER_ACTIVITY]
        out[i, 9] = signals[i, 0]
        out[i, 10] = signals[i, 1]
        out[i, 11] = signals[i, 2]


if PURE_PYTHON:
    assemble_features = assemble_features_reference
else:
    from kernels._features import assemble_features  # noqa: F401
