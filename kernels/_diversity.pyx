# Native diversity re-ranking; output identical to kernels.diversity.diversify_reference.
#
#   For each output slot take the first untaken position p of order (best first) with
#     (1) taken_count[categories[p]] < max_per_category and no run longer than max_streak;
#   else the first passing the streak rule alone; else the first untaken.
#   Any category < 0 counts as the one category -1. max_per_category <= 0 or
#   max_streak <= 0 disables that rule. page_size > 0 restarts the counts every
#   page_size slots (runs carry over). Returns int64[k], k = max(min(limit, len(order)), 0).
#
# Counts for categories -1..N_DIRECT-1 live in a C array; any other int32 category
# (rare, malformed data) is counted in a dict, so every value keeps exact semantics.
# `first` skips the taken prefix, so the usual case (rules rarely bite) is near O(n).

import numpy as np

from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

cdef enum:
    N_DIRECT = 64  # categories 0..N_DIRECT-1 are counted in the array (kernels.layout.MAX_CATEGORIES)


def diversify(const int64_t[::1] order, const int32_t[::1] categories, Py_ssize_t limit,
              Py_ssize_t max_per_category, Py_ssize_t max_streak, Py_ssize_t page_size=0):
    cdef Py_ssize_t n = order.shape[0], n_cat = categories.shape[0]
    cdef Py_ssize_t k = max(min(limit, n), 0)
    result = np.empty(k, dtype=np.int64)
    if k == 0:
        return result
    cdef int64_t[::1] out = result
    cat_arr = np.empty(n, dtype=np.int32)
    taken_arr = np.zeros(n, dtype=np.uint8)
    cdef int32_t[::1] cats = cat_arr
    cdef unsigned char[::1] taken = taken_arr
    cdef Py_ssize_t counts[N_DIRECT + 1]  # counts[c + 1] for category c in -1..N_DIRECT-1
    memset(counts, 0, sizeof(counts))
    cdef dict other_counts = {}
    cdef Py_ssize_t j, slot, count, choice, fb_streak, fb_any, first = 0, run_len = 0
    cdef int64_t p
    cdef int32_t c, run_cat = -1  # meaningless while run_len == 0
    cdef bint streak_ok
    for j in range(n):
        p = order[j]
        if p < 0 or p >= n_cat:
            raise IndexError(f"order[{j}] = {p} is not a position in categories (size {n_cat})")
        cats[j] = max(categories[p], -1)
    for slot in range(k):
        if page_size > 0 and slot % page_size == 0:
            memset(counts, 0, sizeof(counts))
            other_counts.clear()
        while taken[first]:
            first += 1
        choice = fb_streak = -1
        fb_any = first
        for j in range(first, n):
            if taken[j]:
                continue
            c = cats[j]
            streak_ok = not (max_streak > 0 and run_len >= max_streak and run_cat == c)
            if not streak_ok:
                continue
            if fb_streak < 0:
                fb_streak = j
            if max_per_category > 0:
                count = counts[c + 1] if c < N_DIRECT else other_counts.get(c, 0)
                if count >= max_per_category:
                    continue
            choice = j
            break
        if choice < 0:
            choice = fb_streak if fb_streak >= 0 else fb_any
        taken[choice] = 1
        c = cats[choice]
        out[slot] = order[choice]
        if c < N_DIRECT:
            counts[c + 1] += 1
        else:
            other_counts[c] = other_counts.get(c, 0) + 1
        if run_cat == c and run_len > 0:
            run_len += 1
        else:
            run_cat, run_len = c, 1
    return result
