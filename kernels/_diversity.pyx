# Native diversity re-ranking; output identical to kernels.diversity.diversify_reference.
#
#   Walk order (positions into categories, best first); take position p when
#     taken_count[categories[p]] < max_per_category  and
#     the last max_streak taken items are not all of category categories[p].
#   Stop at limit taken; if the walk ends short, append the skipped positions in their
#   original order until limit. Any category < 0 counts as the one category -1.
#   max_per_category <= 0 or max_streak <= 0 disables that rule.
#   Returns int64[k], k = max(min(limit, len(order)), 0).
#
# Counts for categories -1..N_DIRECT-1 live in a C array; any other int32 category
# (rare, malformed data) is counted in a dict, so every value keeps exact semantics.

import numpy as np

from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

cdef enum:
    N_DIRECT = 64  # categories 0..N_DIRECT-1 are counted in the array (kernels.layout.MAX_CATEGORIES)


def diversify(const int64_t[::1] order, const int32_t[::1] categories, Py_ssize_t limit,
              Py_ssize_t max_per_category, Py_ssize_t max_streak):
    cdef Py_ssize_t n = order.shape[0], n_cat = categories.shape[0]
    cdef Py_ssize_t k = max(min(limit, n), 0)
    result = np.empty(k, dtype=np.int64)
    if k == 0:
        return result
    cdef int64_t[::1] out = result
    cdef int64_t[::1] skipped = np.empty(n, dtype=np.int64)
    cdef Py_ssize_t counts[N_DIRECT + 1]  # counts[c + 1] for category c in -1..N_DIRECT-1
    memset(counts, 0, sizeof(counts))
    cdef dict other_counts = {}

    cdef Py_ssize_t j, count, taken = 0, n_skipped = 0, run_len = 0
    cdef int64_t p
    cdef int32_t c, run_cat = -1  # run_cat is meaningless while run_len == 0
    for j in range(n):
        if taken == k:
            break
        p = order[j]
        if p < 0 or p >= n_cat:
            raise IndexError(f"order[{j}] = {p} is not a position in categories (size {n_cat})")
        c = max(categories[p], -1)
        if c < N_DIRECT:
            count = counts[c + 1]
        else:
            count = other_counts.get(c, 0)
        if (max_per_category > 0 and count >= max_per_category) or \
                (max_streak > 0 and run_len >= max_streak and run_cat == c):
            skipped[n_skipped] = p
            n_skipped += 1
            continue
        out[taken] = p
        taken += 1
        if c < N_DIRECT:
            counts[c + 1] += 1
        else:
            other_counts[c] = count + 1
        if run_cat == c:
            run_len += 1
        else:
            run_cat, run_len = c, 1
    for j in range(n_skipped):
        if taken == k:
            break
        out[taken] = skipped[j]
        taken += 1
    return result
