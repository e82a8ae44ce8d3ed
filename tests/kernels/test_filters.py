"""kernels.filters: hand-made cases for the contract, native vs reference on edge
cases and random catalogs, and a pass over rows mapped from a real LmdbStore."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import filters
from kernels._backend import PURE_PYTHON
from kernels.filters import hard_filter, hard_filter_reference
from kernels.layout import (
    CHUNK_ROWS,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_MATURITY,
    ITEM_WIDTH,
    KEEP,
    MATURITY_CODES,
    REMOVED_BLOCKED_CATEGORY,
    REMOVED_BLOCKED_ITEM,
    REMOVED_EXCLUDED,
    REMOVED_INACTIVE,
    REMOVED_MATURITY,
    REMOVED_SEEN,
    REMOVED_UNKNOWN,
)

G, PG, PG13, R, NC17 = (MATURITY_CODES[k] for k in ("G", "PG", "PG13", "R", "NC17"))
ALL_BLOCKED = (1 << 64) - 1
NAN = float("nan")

IMPLS = [pytest.param(hard_filter_reference, id="reference"), pytest.param(hard_filter, id="public")]


def make_item(cat, index, active=1.0, maturity=G, category=0):
    row = cat.row(index)
    row[ITEM_ACTIVE], row[ITEM_MATURITY], row[ITEM_CATEGORY] = active, maturity, category


def run(fn, cat, idx, max_maturity=NC17, blocked=0, deny=(), deny_reason=None):
    """Calls one implementation; returns (kept, reasons as a list)."""
    idx = np.asarray(idx, dtype=np.int64)
    deny_idx = np.asarray(deny, dtype=np.int64)
    if deny_reason is None:
        deny_reason = [REMOVED_BLOCKED_ITEM] * len(deny_idx)
    reasons = np.full(idx.shape[0], 255, dtype=np.uint8)
    kept = fn(idx, cat.addrs, cat.n_items, ITEM_WIDTH, max_maturity, blocked, deny_idx,
              np.asarray(deny_reason, dtype=np.uint8), reasons)
    return kept, reasons.tolist()


def both(native, cat, idx, **kw):
    """Native and reference must agree exactly; returns their common result."""
    got = run(native.hard_filter, cat, idx, **kw)
    want = run(hard_filter_reference, cat, idx, **kw)
    assert got == want
    assert got[0] == got[1].count(KEEP)
    return got


def test_public_function_is_the_selected_backend():
    if PURE_PYTHON:
        assert filters.hard_filter is hard_filter_reference
    else:
        from kernels._filters import hard_filter as compiled

        assert filters.hard_filter is compiled


# ------------------------------------------------------------------ hand-made cases
@pytest.mark.parametrize("fn", IMPLS)
def test_maturity_policy(fn, catalog):
    cat = catalog(4)
    for i, m in enumerate((G, PG13, R, NC17)):
        make_item(cat, i, maturity=m)
    assert run(fn, cat, [0, 1, 2, 3], max_maturity=PG13) == (2, [KEEP, KEEP, REMOVED_MATURITY, REMOVED_MATURITY])
    assert run(fn, cat, [0, 1, 2, 3], max_maturity=R) == (3, [KEEP, KEEP, KEEP, REMOVED_MATURITY])
    assert run(fn, cat, [0, 1, 2, 3], max_maturity=NC17) == (4, [KEEP] * 4)
    assert run(fn, cat, [0, 1, 2, 3], max_maturity=G) == (1, [KEEP] + [REMOVED_MATURITY] * 3)


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("maturity", [2.5, -1.0, 7.0, NAN, math.inf, -0.5, 4.0001])
def test_malformed_maturity_is_most_restrictive(fn, catalog, maturity):
    cat = catalog(1)
    make_item(cat, 0, maturity=maturity)
    assert run(fn, cat, [0], max_maturity=R) == (0, [REMOVED_MATURITY])
    assert run(fn, cat, [0], max_maturity=NC17) == (1, [KEEP])


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("active", [0.0, NAN, 2.0, 0.999, -1.0])
def test_only_active_exactly_one_passes(fn, catalog, active):
    cat = catalog(2)
    make_item(cat, 0, active=active)
    make_item(cat, 1, active=1.0)
    assert run(fn, cat, [0, 1]) == (1, [REMOVED_INACTIVE, KEEP])


@pytest.mark.parametrize("fn", IMPLS)
def test_unknown_indices(fn, catalog):
    # chunk 1 is missing; chunk 2 exists in memory but lies past n_items
    cat = catalog(2 * CHUNK_ROWS + 5, missing={1}, n_chunks=3)
    n = cat.n_items
    for i in (0, CHUNK_ROWS - 1, 2 * CHUNK_ROWS, n - 1, n, 3 * CHUNK_ROWS - 1):
        make_item(cat, i)
    make_item(cat, CHUNK_ROWS)  # written to the array but its address is 0
    idx = [0, -1, -CHUNK_ROWS, CHUNK_ROWS, CHUNK_ROWS - 1, 2 * CHUNK_ROWS, n - 1, n, 3 * CHUNK_ROWS - 1,
           3 * CHUNK_ROWS, 2**62, -(2**63)]
    u = REMOVED_UNKNOWN
    assert run(fn, cat, idx) == (4, [KEEP, u, u, u, KEEP, KEEP, KEEP, u, u, u, u, u])


@pytest.mark.parametrize("fn", IMPLS)
def test_blocked_categories(fn, catalog):
    cat = catalog(6)
    for i, c in enumerate((0, 5, 63, 64, NAN, 62.5)):
        make_item(cat, i, category=c)
    b = REMOVED_BLOCKED_CATEGORY
    idx = list(range(6))
    assert run(fn, cat, idx, blocked=0) == (4, [KEEP, KEEP, KEEP, b, b, KEEP])
    assert run(fn, cat, idx, blocked=1 << 63) == (3, [KEEP, KEEP, b, b, b, KEEP])
    assert run(fn, cat, idx, blocked=(1 << 5) | (1 << 62)) == (2, [KEEP, b, KEEP, b, b, b])
    assert run(fn, cat, idx, blocked=ALL_BLOCKED) == (0, [b] * 6)


@pytest.mark.parametrize("fn", IMPLS)
def test_deny_list_first_match_wins(fn, catalog):
    cat = catalog(10)
    for i in range(10):
        make_item(cat, i)
    deny = [2, 2, 5, 7, 7, 7]
    reasons = [REMOVED_SEEN, REMOVED_BLOCKED_ITEM, REMOVED_EXCLUDED, REMOVED_BLOCKED_ITEM, REMOVED_SEEN, 200]
    kept, got = run(fn, cat, [1, 2, 5, 7, 8, 7], deny=deny, deny_reason=reasons)
    assert (kept, got) == (2, [KEEP, REMOVED_SEEN, REMOVED_EXCLUDED, REMOVED_BLOCKED_ITEM, KEEP, REMOVED_BLOCKED_ITEM])


@pytest.mark.parametrize("fn", IMPLS)
def test_checks_run_in_contract_order(fn, catalog):
    cat = catalog(4)
    make_item(cat, 0, active=0.0, maturity=NC17, category=64)   # inactive beats maturity
    make_item(cat, 1, maturity=NC17, category=64)               # maturity beats category
    make_item(cat, 2, category=64)                              # category beats the deny list
    make_item(cat, 3)
    kept, got = run(fn, cat, [0, 1, 2, 3], max_maturity=R, deny=[0, 1, 2, 3])
    assert (kept, got) == (0, [REMOVED_INACTIVE, REMOVED_MATURITY, REMOVED_BLOCKED_CATEGORY, REMOVED_BLOCKED_ITEM])


@pytest.mark.parametrize("fn", IMPLS)
def test_empty_and_single(fn, catalog):
    cat = catalog(1)
    make_item(cat, 0)
    assert run(fn, cat, []) == (0, [])
    assert run(fn, cat, [0]) == (1, [KEEP])
    assert run(fn, cat, [0, 0, 0]) == (3, [KEEP] * 3)
    assert run(fn, catalog(0), [0, -1]) == (0, [REMOVED_UNKNOWN] * 2)


@pytest.mark.skipif(PURE_PYTHON, reason="argument checks of the compiled kernel")
def test_native_rejects_short_buffers(native, catalog):
    cat = catalog(1)
    idx = np.zeros(3, dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError):
        native.hard_filter(idx, cat.addrs, 1, ITEM_WIDTH, NC17, 0, empty, np.zeros(0, np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(ValueError):
        native.hard_filter(idx, cat.addrs, 1, ITEM_WIDTH, NC17, 0, np.zeros(2, np.int64), np.zeros(1, np.uint8),
                           np.zeros(3, np.uint8))
    with pytest.raises(ValueError):
        native.hard_filter(idx, cat.addrs, 1, 2, NC17, 0, empty, np.zeros(0, np.uint8), np.zeros(3, np.uint8))


# ------------------------------------------------------------------ native vs reference
def test_edge_cases_match(native, catalog):
    cat = catalog(CHUNK_ROWS + 3)
    values = [0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, -1.0, -0.0, 63.0, 63.9, 64.0, NAN, math.inf, -math.inf]
    rows = [(a, m, c) for a in (1.0, 0.0, NAN) for m in values for c in values]
    idx = []
    for i, (a, m, c) in enumerate(rows):
        make_item(cat, i, active=a, maturity=m, category=c)
        idx.append(i)
    idx += [-1, cat.n_items, cat.n_items + 1, CHUNK_ROWS, 2**40]
    for max_maturity in (-1, G, PG13, R, NC17, 5):
        for blocked in (0, 1, 1 << 63, (1 << 64) - 2, ALL_BLOCKED, 0x00FF00FF00FF00FF):
            both(native, cat, idx, max_maturity=max_maturity, blocked=blocked, deny=sorted(idx[::7] * 2))


FIELD_VALUES = st.sampled_from([0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 63.0, 64.0, -1.0, NAN]) | st.floats(width=32)


@st.composite
def filter_cases(draw):
    n_items = draw(st.sampled_from([0, 1, 7, CHUNK_ROWS, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 9]))
    n_chunks = max(-(-n_items // CHUNK_ROWS), 1) + draw(st.integers(0, 1))
    missing = draw(st.sets(st.integers(0, n_chunks - 1), max_size=n_chunks))
    near = [0, CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS, n_items - 1, n_items]
    index = st.integers(-3, n_items + 3) | st.sampled_from(near)
    idx = draw(st.lists(index, max_size=64))
    rows = {i: draw(st.tuples(st.sampled_from([1.0, 1.0, 0.0, NAN]), FIELD_VALUES, FIELD_VALUES))
            for i in set(idx) if 0 <= i < n_chunks * CHUNK_ROWS}
    deny = draw(st.lists(st.sampled_from(idx) if idx else index, max_size=12)) + draw(st.lists(index, max_size=4))
    deny.sort()
    deny_reason = draw(st.lists(st.integers(REMOVED_BLOCKED_ITEM, 255), min_size=len(deny), max_size=len(deny)))
    max_maturity = draw(st.integers(-1, 5))
    blocked = draw(st.integers(0, ALL_BLOCKED) | st.sampled_from([0, ALL_BLOCKED, 1 << 63]))
    return n_items, n_chunks, missing, rows, idx, deny, deny_reason, max_maturity, blocked


@settings(max_examples=150, deadline=None)
@given(case=filter_cases())
def test_random_catalogs_match(native, catalog, case):
    n_items, n_chunks, missing, rows, idx, deny, deny_reason, max_maturity, blocked = case
    cat = catalog(n_items, missing=missing, n_chunks=n_chunks)
    for i, (a, m, c) in rows.items():
        make_item(cat, i, active=a, maturity=m, category=c)
    both(native, cat, idx, max_maturity=max_maturity, blocked=blocked, deny=deny, deny_reason=deny_reason)


def test_reads_rows_mapped_from_lmdb(native, tmp_path):
    from server.store import LmdbStore

    n_items = CHUNK_ROWS + 4
    rows = np.zeros((n_items, ITEM_WIDTH), dtype=np.float32)
    rows[:, ITEM_ACTIVE] = 1.0
    rows[:, ITEM_CATEGORY] = np.arange(n_items) % 64
    rows[CHUNK_ROWS + 1, ITEM_MATURITY] = R
    rows[CHUNK_ROWS + 2, ITEM_ACTIVE] = 0.0
    store = LmdbStore.open(str(tmp_path))
    try:
        with store.write() as txn:
            store.put_item_rows(txn, "t", rows)
            store.set_state(txn, "t", "n_items", n_items)
        with store.snapshot() as snap:
            addrs, n = snap.chunks("t")
            assert n == n_items and addrs.shape == (2,) and addrs.all()
            idx = np.array([0, 5, CHUNK_ROWS, CHUNK_ROWS + 1, CHUNK_ROWS + 2, CHUNK_ROWS + 3, n_items], dtype=np.int64)
            reasons = np.zeros(idx.shape[0], dtype=np.uint8)
            deny = np.array([CHUNK_ROWS + 3], dtype=np.int64)
            kept = native.hard_filter(idx, addrs, n, ITEM_WIDTH, PG13, 1 << 5, deny,
                                      np.array([REMOVED_SEEN], dtype=np.uint8), reasons)
            assert kept == 2
            assert reasons.tolist() == [KEEP, REMOVED_BLOCKED_CATEGORY, KEEP, REMOVED_MATURITY, REMOVED_INACTIVE,
                                        REMOVED_SEEN, REMOVED_UNKNOWN]
    finally:
        store.close()
