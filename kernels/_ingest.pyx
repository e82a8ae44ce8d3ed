# Native per-event updates of the ingest worker; must give bytes identical to
# kernels.ingest's references (apply_user_event_reference, touch_seen_reference,
# update_item_stats_reference), whose module docstring is the contract:
#
#   user: count/skips (+ recovery of an offline row's exact counts, round half to even),
#         ACTIVITY = log1p(count), SKIP_RATE = skips / count, AFFINITY decayed to
#         ref = max(LAST_ACTIVE_DAYS * 86400, clock) (float32 * float32 / float32 + float32),
#         LAST_ACTIVE_DAYS = max(itself, t / 86400), then the seen ring takes ``index``;
#   item: TREND and EVENTS decayed to T_REF = max(T_REF, t), share = 2**(-(T_REF - t) / half_life).
#
# Doubles for the scalars, floats where NumPy works on the float32 row; pow(2.0, x) as
# Python's ``2.0 ** x``; max(a, b) = b if b > a else a, as Python's max.

from libc.math cimport expm1, isfinite, log1p, nearbyint, pow
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcpy, memmove

from kernels import layout

cdef int USER_WIDTH = layout.USER_WIDTH
cdef int ACTIVITY = layout.USER_ACTIVITY
cdef int SKIP_RATE = layout.USER_SKIP_RATE
cdef int LAST_ACTIVE = layout.USER_LAST_ACTIVE_DAYS
cdef int EVENT_COUNT = layout.USER_EVENT_COUNT
cdef int SKIP_COUNT = layout.USER_SKIP_COUNT
cdef int AFFINITY = layout.USER_AFFINITY
cdef int N_CATEGORIES = layout.MAX_CATEGORIES
cdef int STAT_WIDTH = layout.STAT_WIDTH
cdef int T_REF = layout.STAT_T_REF
cdef int COUNT = layout.STAT_COUNT
cdef int WEIGHT_SUM = layout.STAT_WEIGHT_SUM
cdef int SKIPS = layout.STAT_SKIPS
cdef int TREND = layout.STAT_TREND
cdef int EVENTS = layout.STAT_EVENTS
cdef int N_EVENT_TYPES = layout.N_EVENT_TYPES
cdef Py_ssize_t VALUE_BYTES = layout.USER_WIDTH * 4 + 8 + layout.SEEN_CAP * 4

cdef enum:
    SEEN_CAP = 256

assert SEEN_CAP == layout.SEEN_CAP

cdef double DAY_SECONDS = 86400.0
cdef double SKIP_BELOW = 0.5


cdef inline double py_max(double a, double b) noexcept nogil:
    return b if b > a else a


cdef inline double round_even(double x) noexcept nogil:
    return nearbyint(x) if isfinite(x) else x


cdef void touch(int32_t* tail, int32_t index) noexcept nogil:
    cdef int32_t head = tail[0], count = tail[1]
    cdef int32_t* ring = tail + 2
    cdef int32_t ordered[SEEN_CAP]
    cdef int k, n
    if not (0 <= count <= SEEN_CAP and 0 <= head < SEEN_CAP):
        head = count = 0
        tail[0] = tail[1] = 0
    if count < SEEN_CAP:
        for k in range(count):
            if ring[k] == index:
                memmove(ring + k, ring + k + 1, (count - 1 - k) * sizeof(int32_t))
                ring[count - 1] = index
                return
        ring[count] = index
        tail[0] = (count + 1) % SEEN_CAP
        tail[1] = count + 1
        return
    for k in range(SEEN_CAP):
        if ring[k] == index:
            break
    else:
        ring[head] = index
        tail[0] = (head + 1) % SEEN_CAP
        return
    n = 0
    for k in range(SEEN_CAP):
        if ring[(head + k) % SEEN_CAP] != index:
            ordered[n] = ring[(head + k) % SEEN_CAP]
            n += 1
    ordered[n] = index
    n += 1
    memcpy(ring, ordered, n * sizeof(int32_t))
    tail[0] = n % SEEN_CAP
    tail[1] = n


cdef inline unsigned char* user_value(unsigned char[::1] value) except NULL:
    if value.shape[0] < VALUE_BYTES:
        raise ValueError(f"a user value holds {VALUE_BYTES} bytes, got {value.shape[0]}")
    return &value[0]


def touch_seen(unsigned char[::1] value, int64_t index):
    cdef unsigned char* base = user_value(value)
    touch(<int32_t*>(base + USER_WIDTH * 4), <int32_t>index)


def apply_user_event(unsigned char[::1] value, int64_t index, int64_t category, double weight, double t,
                     double clock, double half_life_s):
    cdef unsigned char* base = user_value(value)
    cdef float* row = <float*>base
    cdef float* affinity = row + AFFINITY
    cdef double count = row[EVENT_COUNT], skips = row[SKIP_COUNT], ref
    cdef float decay
    cdef int c
    if count == 0.0 and row[ACTIVITY] > 0:
        count = round_even(expm1(<double>row[ACTIVITY]))
        skips = round_even(<double>row[SKIP_RATE] * count)
    count += 1.0
    skips += 1.0 if weight < SKIP_BELOW else 0.0
    row[EVENT_COUNT] = <float>count
    row[SKIP_COUNT] = <float>skips
    row[ACTIVITY] = <float>log1p(count)
    row[SKIP_RATE] = <float>(skips / count)
    ref = py_max(<double>row[LAST_ACTIVE] * DAY_SECONDS, clock)
    if t > ref:
        decay = <float>pow(2.0, -(t - ref) / half_life_s)
        for c in range(N_CATEGORIES):
            affinity[c] = affinity[c] * decay
        ref = t
    if 0 <= category < N_CATEGORIES:
        affinity[category] = affinity[category] + <float>(weight * pow(2.0, -(ref - t) / half_life_s))
    row[LAST_ACTIVE] = <float>py_max(<double>row[LAST_ACTIVE], t / DAY_SECONDS)
    touch(<int32_t*>(base + USER_WIDTH * 4), <int32_t>index)


def update_item_stats(double[::1] stats, int64_t event_type, weight, double t, double half_life_s):
    if stats.shape[0] < STAT_WIDTH:
        raise ValueError(f"item stats hold {STAT_WIDTH} values, got {stats.shape[0]}")
    cdef double* s = &stats[0]
    cdef double ref = s[T_REF], decay, share, w
    cdef int k
    if t > ref:
        if ref > 0:
            decay = pow(2.0, -(t - ref) / half_life_s)
            s[TREND] *= decay
            for k in range(N_EVENT_TYPES):
                s[EVENTS + k] *= decay
        s[T_REF] = ref = t
    share = pow(2.0, -(ref - t) / half_life_s)
    if 0 < event_type < N_EVENT_TYPES:
        s[EVENTS + event_type] += share
    if weight is not None:
        w = weight
        s[COUNT] += 1.0
        s[WEIGHT_SUM] += w
        s[SKIPS] += 1.0 if w < SKIP_BELOW else 0.0
        s[TREND] += w * share
