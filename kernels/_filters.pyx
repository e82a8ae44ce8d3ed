# Native hard filter; must give results identical to kernels.filters.hard_filter_reference.
#
#   keep(i)  <=>  0 <= idx[i] < n_items and its chunk exists (address != 0)
#             and row[ACTIVE] == 1
#             and maturity(row) <= max_maturity, maturity(row) = row[MATURITY] when it is an
#                 integer code in 0..4, else MATURITY_MOST_RESTRICTIVE (NaN included: fail closed)
#             and bit int(row[CATEGORY]) of blocked_categories (uint64) is clear
#                 (category outside [0, 64) or NaN -> blocked)
#             and idx[i] not in deny_idx (sorted ascending, duplicates allowed)
#
# The first failing check, in that order, is written to reasons[i] (kernels.layout REMOVED_*);
# a denied index gets deny_reason[first match]. Returns the number kept.

from libc.stdint cimport int64_t, uint8_t, uint64_t

from kernels import layout

cdef int ACTIVE = layout.ITEM_ACTIVE
cdef int MATURITY = layout.ITEM_MATURITY
cdef int CATEGORY = layout.ITEM_CATEGORY
cdef int MOST_RESTRICTIVE = layout.MATURITY_MOST_RESTRICTIVE
cdef int N_CATEGORIES = layout.MAX_CATEGORIES
cdef int CHUNK_LOG2 = layout.CHUNK_ROWS_LOG2
cdef int64_t ROW_MASK = layout.CHUNK_ROWS - 1
cdef uint8_t KEEP = layout.KEEP
cdef uint8_t UNKNOWN = layout.REMOVED_UNKNOWN
cdef uint8_t INACTIVE = layout.REMOVED_INACTIVE
cdef uint8_t MATURITY_TOO_HIGH = layout.REMOVED_MATURITY
cdef uint8_t BLOCKED_CATEGORY = layout.REMOVED_BLOCKED_CATEGORY


cdef extern from *:
    void prefetch "__builtin_prefetch"(const void* address) noexcept nogil

cdef enum:
    PREFETCH_AHEAD = 16  # candidates; hides the cache miss on each randomly placed row


cdef inline const float* row_address(const int64_t* addrs, Py_ssize_t n_chunks, int64_t index,
                                     Py_ssize_t item_width) noexcept nogil:
    """Item row ``index`` in the mapped chunks, or NULL when its chunk is absent."""
    cdef int64_t chunk = index >> CHUNK_LOG2
    if index < 0 or chunk >= n_chunks or addrs[chunk] == 0:
        return NULL
    return (<const float*><size_t>addrs[chunk]) + (index & ROW_MASK) * item_width


cdef inline Py_ssize_t lower_bound(const int64_t* a, Py_ssize_t n, int64_t key) noexcept nogil:
    """First position in sorted a[:n] whose value is >= key (n when none); branch-free steps."""
    if n == 0:
        return 0
    cdef const int64_t* base = a
    cdef Py_ssize_t half
    while n > 1:
        half = n // 2
        base = base + half if base[half] < key else base
        n -= half
    return (base - a) + (base[0] < key)


def hard_filter(const int64_t[::1] idx, const int64_t[::1] chunk_addrs, int64_t n_items,
                Py_ssize_t item_width, int64_t max_maturity, blocked_categories,
                const int64_t[::1] deny_idx, const uint8_t[::1] deny_reason, uint8_t[::1] reasons):
    cdef Py_ssize_t n = idx.shape[0], n_chunks = chunk_addrs.shape[0], n_deny = deny_idx.shape[0]
    if reasons.shape[0] < n:
        raise ValueError(f"reasons holds {reasons.shape[0]} entries for {n} candidates")
    if deny_reason.shape[0] < n_deny:
        raise ValueError(f"deny_reason holds {deny_reason.shape[0]} entries for {n_deny} denied items")
    if item_width <= max(ACTIVE, MATURITY, CATEGORY):
        raise ValueError(f"item_width {item_width} is too narrow for the item row layout")
    cdef uint64_t blocked = int(blocked_categories) & 0xFFFFFFFFFFFFFFFF
    cdef const int64_t* deny = &deny_idx[0] if n_deny else NULL
    cdef const int64_t* addrs = &chunk_addrs[0] if n_chunks else NULL

    cdef Py_ssize_t i, pos, kept = 0
    cdef int64_t index
    cdef const float* row
    cdef float m, c
    cdef int code
    with nogil:
        for i in range(n):
            if i + PREFETCH_AHEAD < n:
                row = row_address(addrs, n_chunks, idx[i + PREFETCH_AHEAD], item_width)
                if row != NULL:
                    prefetch(row)
            index = idx[i]
            row = row_address(addrs, n_chunks, index, item_width)
            if row == NULL or index >= n_items:
                reasons[i] = UNKNOWN
                continue
            if row[ACTIVE] != 1.0:
                reasons[i] = INACTIVE
                continue
            m = row[MATURITY]
            code = <int>m if (0.0 <= m <= MOST_RESTRICTIVE and m == <int>m) else MOST_RESTRICTIVE
            if code > max_maturity:
                reasons[i] = MATURITY_TOO_HIGH
                continue
            c = row[CATEGORY]
            if not (0.0 <= c < N_CATEGORIES) or (blocked >> <int>c) & 1:
                reasons[i] = BLOCKED_CATEGORY
                continue
            pos = lower_bound(deny, n_deny, index)
            if pos < n_deny and deny[pos] == index:
                reasons[i] = deny_reason[pos]
                continue
            reasons[i] = KEEP
            kept += 1
    return kept
