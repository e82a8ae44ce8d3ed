# Native feature assembly; matches kernels.features.assemble_features_reference exactly, except
# that cf_score is summed in float64 (the reference sums in float32): equal up to float32 rounding.
#
# For candidate i with item row r, user row u, normalised affinity a (float32[64]) and
# source signals s[i] (SIGNAL_CONTENT, SIGNAL_TRENDING, SIGNAL_CF), out[i] (column order
# kernels.layout.FEATURES) is
#
#   cf_score, category_affinity, popularity, recency, editorial, quality, item skip rate,
#   user skip rate, user activity, content similarity, trending score, from_cf
#
#   cf_score          = dot(u[USER_CF:USER_CF+CF_DIM], r[ITEM_CF:ITEM_CF+CF_DIM]) if u[USER_HAS_CF] == 1 else 0
#   category_affinity = a[int(r[CATEGORY])] if 0 <= r[CATEGORY] < 64 else 0
#   recency           = exp(-(ln2 / half_life_days) * max(now_days - r[CREATED_DAYS], 0))   (float64, NaN kept)
#   the rest are copied from r, u and s[i]
#
# and categories[i] = int(r[CATEGORY]) (-1 outside [0, 64) or NaN). half_life_days must be > 0.
# Every idx[i] must name a present chunk (the hard filter's guarantee); the first one that
# does not raises IndexError instead of dereferencing a bad address.

from libc.math cimport exp, log
from libc.stdint cimport int32_t, int64_t

from kernels import layout

cdef int CHUNK_LOG2 = layout.CHUNK_ROWS_LOG2
cdef int64_t ROW_MASK = layout.CHUNK_ROWS - 1
cdef int N_CATEGORIES = layout.MAX_CATEGORIES
cdef int CF_DIM = layout.CF_DIM
cdef int ITEM_CATEGORY = layout.ITEM_CATEGORY
cdef int ITEM_POPULARITY = layout.ITEM_POPULARITY
cdef int ITEM_CREATED_DAYS = layout.ITEM_CREATED_DAYS
cdef int ITEM_EDITORIAL = layout.ITEM_EDITORIAL
cdef int ITEM_QUALITY = layout.ITEM_QUALITY
cdef int ITEM_SKIP_RATE = layout.ITEM_SKIP_RATE
cdef int ITEM_CF = layout.ITEM_CF
cdef int USER_ACTIVITY = layout.USER_ACTIVITY
cdef int USER_SKIP_RATE = layout.USER_SKIP_RATE
cdef int USER_HAS_CF = layout.USER_HAS_CF
cdef int USER_CF = layout.USER_CF
cdef int SIGNAL_CONTENT = layout.SIGNAL_CONTENT
cdef int SIGNAL_TRENDING = layout.SIGNAL_TRENDING
cdef int SIGNAL_CF = layout.SIGNAL_CF
cdef int N_FEATURES = layout.N_FEATURES
cdef int N_SOURCE_SIGNALS = layout.N_SOURCE_SIGNALS

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* address) noexcept nogil

cdef enum:
    PREFETCH_AHEAD = 8  # candidates; hides the cache misses on each randomly placed row
    FLOATS_PER_LINE = 16


cdef inline const float* row_address(const int64_t* addrs, Py_ssize_t n_chunks, int64_t index,
                                     Py_ssize_t item_width) noexcept nogil:
    """Item row ``index`` in the mapped chunks, or NULL when its chunk is absent."""
    cdef int64_t chunk = index >> CHUNK_LOG2
    if index < 0 or chunk >= n_chunks or addrs[chunk] == 0:
        return NULL
    return (<const float*><size_t>addrs[chunk]) + (index & ROW_MASK) * item_width


cdef inline void prefetch_row(const float* row, Py_ssize_t item_width) noexcept nogil:
    """Prefetches every cache line the row touches (rows need not be line aligned)."""
    cdef const float* last = row + item_width - 1
    while row < last:
        prefetch(row)
        row += FLOATS_PER_LINE
    prefetch(last)


def assemble_features(const int64_t[::1] idx, const int64_t[::1] chunk_addrs, Py_ssize_t item_width,
                      const float[::1] user_row, const float[::1] affinity, const float[:, :] signals,
                      double now_days, double half_life_days, float[:, ::1] out, int32_t[::1] categories):
    cdef Py_ssize_t n = idx.shape[0], n_chunks = chunk_addrs.shape[0]
    if not half_life_days > 0.0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    if item_width < ITEM_CF + CF_DIM:
        raise ValueError(f"item_width {item_width} is too narrow for the item row layout")
    if user_row.shape[0] < USER_CF + CF_DIM:
        raise ValueError(f"user_row has {user_row.shape[0]} floats, needs {USER_CF + CF_DIM}")
    if affinity.shape[0] < N_CATEGORIES:
        raise ValueError(f"affinity has {affinity.shape[0]} entries, needs {N_CATEGORIES}")
    if signals.shape[0] < n or signals.shape[1] < N_SOURCE_SIGNALS:
        raise ValueError(f"signals shape ({signals.shape[0]}, {signals.shape[1]}) does not fit {n} candidates")
    if out.shape[0] < n or out.shape[1] != N_FEATURES:
        raise ValueError(f"out shape ({out.shape[0]}, {out.shape[1]}) is not ({n}, {N_FEATURES})")
    if categories.shape[0] < n:
        raise ValueError(f"categories holds {categories.shape[0]} entries for {n} candidates")

    cdef bint has_cf = user_row[USER_HAS_CF] == 1.0
    cdef const float* ucf = &user_row[USER_CF]
    cdef float user_skip_rate = user_row[USER_SKIP_RATE], user_activity = user_row[USER_ACTIVITY]
    cdef double decay = log(2.0) / half_life_days
    cdef const int64_t* addrs = &chunk_addrs[0] if n_chunks else NULL
    cdef Py_ssize_t i, d, bad = -1
    cdef const float* r
    cdef float c
    cdef int cat
    cdef double dot, age
    with nogil:
        for i in range(n):
            if i + PREFETCH_AHEAD < n:
                r = row_address(addrs, n_chunks, idx[i + PREFETCH_AHEAD], item_width)
                if r != NULL:
                    prefetch_row(r, item_width)
            r = row_address(addrs, n_chunks, idx[i], item_width)
            if r == NULL:
                bad = i
                break
            c = r[ITEM_CATEGORY]
            cat = <int>c if 0.0 <= c < N_CATEGORIES else -1
            categories[i] = cat
            if has_cf:
                dot = 0.0
                for d in range(CF_DIM):
                    dot += <double>ucf[d] * r[ITEM_CF + d]
                out[i, 0] = <float>dot
            else:
                out[i, 0] = 0.0
            out[i, 1] = affinity[cat] if cat >= 0 else 0.0
            out[i, 2] = r[ITEM_POPULARITY]
            age = now_days - <double>r[ITEM_CREATED_DAYS]
            if age < 0.0:  # max(age, 0) that keeps NaN, like Python's max
                age = 0.0
            out[i, 3] = <float>exp(-decay * age)
            out[i, 4] = r[ITEM_EDITORIAL]
            out[i, 5] = r[ITEM_QUALITY]
            out[i, 6] = r[ITEM_SKIP_RATE]
            out[i, 7] = user_skip_rate
            out[i, 8] = user_activity
            out[i, 9] = signals[i, SIGNAL_CONTENT]
            out[i, 10] = signals[i, SIGNAL_TRENDING]
            out[i, 11] = signals[i, SIGNAL_CF]
    if bad >= 0:
        raise IndexError(f"candidate {bad}: item index {idx[bad]} has no item row")
