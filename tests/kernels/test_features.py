"""kernels.features: hand-made cases for the contract, native vs reference on edge
cases and random catalogs, and a pass over rows mapped from a real LmdbStore.

Every column but cf_score must match the reference exactly; cf_score is a float32
dot product whose summation order differs, so it is compared to within a few
float32 ulps of sum(|u_d * r_d|).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kernels import features
from kernels._backend import PURE_PYTHON
from kernels.features import assemble_features, assemble_features_reference
from kernels.layout import (
    CF_DIM,
    CHUNK_ROWS,
    FEATURES,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CF,
    ITEM_CREATED_DAYS,
    ITEM_EDITORIAL,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    ITEM_WIDTH,
    MAX_CATEGORIES,
    N_FEATURES,
    N_SOURCE_SIGNALS,
    USER_ACTIVITY,
    USER_CF,
    USER_HAS_CF,
    USER_SKIP_RATE,
    USER_WIDTH,
)

NAN = float("nan")
COL = {name: j for j, name in enumerate(FEATURES)}
IMPLS = [pytest.param(assemble_features_reference, id="reference"), pytest.param(assemble_features, id="public")]


def user(has_cf=1.0, cf=None, skip_rate=0.25, activity=3.0):
    u = np.zeros(USER_WIDTH, dtype=np.float32)
    u[USER_HAS_CF], u[USER_SKIP_RATE], u[USER_ACTIVITY] = has_cf, skip_rate, activity
    if cf is not None:
        u[USER_CF:USER_CF + CF_DIM] = cf
    return u


def run(fn, cat, idx, user_row, affinity=None, signals=None, now_days=100.0, half_life_days=7.0):
    """Calls one implementation on fresh buffers; returns (out, categories)."""
    idx = np.asarray(idx, dtype=np.int64)
    n = idx.shape[0]
    if affinity is None:
        affinity = np.zeros(MAX_CATEGORIES, dtype=np.float32)
    if signals is None:
        signals = np.zeros((n, N_SOURCE_SIGNALS), dtype=np.float32)
    out = np.full((n, N_FEATURES), -123.0, dtype=np.float32)
    categories = np.full(n, -99, dtype=np.int32)
    fn(idx, cat.addrs, ITEM_WIDTH, user_row, affinity, signals, now_days, half_life_days, out, categories)
    return out, categories


def assert_same(got, want, cf_scale):
    """Exact equality except cf_score (see the module docstring); NaN equals NaN."""
    (out, cats), (ref_out, ref_cats) = got, want
    np.testing.assert_array_equal(cats, ref_cats)
    np.testing.assert_array_equal(out[:, 1:], ref_out[:, 1:])
    cf, ref_cf = out[:, 0].astype(np.float64), ref_out[:, 0].astype(np.float64)
    np.testing.assert_array_equal(np.isnan(cf), np.isnan(ref_cf))
    cf, ref_cf, cf_scale = cf[~np.isnan(cf)], ref_cf[~np.isnan(cf)], cf_scale[~np.isnan(cf)]
    # float32 subnormals (< 1.2e-38) keep few significant bits, so relative error is
    # unbounded there; 64 float32 subnormal steps (9e-44) of slack cover it and nothing else
    subnormal_slack = np.finfo(np.float32).smallest_subnormal * 64
    assert np.all((cf == ref_cf) | (np.abs(cf - ref_cf) <= 1e-5 * cf_scale + subnormal_slack))


def cf_scale(cat, idx, user_row):
    ucf = np.abs(user_row[USER_CF:USER_CF + CF_DIM].astype(np.float64))
    return np.array([ucf @ np.abs(cat.row(int(i))[ITEM_CF:ITEM_CF + CF_DIM].astype(np.float64)) for i in idx])


def test_public_function_is_the_selected_backend():
    if PURE_PYTHON:
        assert features.assemble_features is assemble_features_reference
    else:
        from kernels._features import assemble_features as compiled

        assert features.assemble_features is compiled


# ------------------------------------------------------------------ hand-made cases
@pytest.mark.parametrize("fn", IMPLS)
def test_columns_of_one_item(fn, catalog):
    cat = catalog(CHUNK_ROWS + 2)
    index = CHUNK_ROWS + 1
    r = cat.row(index)
    r[ITEM_ACTIVE], r[ITEM_CATEGORY], r[ITEM_POPULARITY], r[ITEM_CREATED_DAYS] = 1.0, 3.0, 0.5, 93.0
    r[ITEM_EDITORIAL], r[ITEM_QUALITY], r[ITEM_SKIP_RATE] = 0.125, 0.75, 0.0625
    r[ITEM_CF:ITEM_CF + CF_DIM] = np.arange(CF_DIM)
    affinity = np.zeros(MAX_CATEGORIES, dtype=np.float32)
    affinity[3] = 0.25
    signals = np.array([[0.5, 0.875, 1.0]], dtype=np.float32)
    out, cats = run(fn, cat, [index], user(cf=0.5), affinity, signals, now_days=100.0, half_life_days=7.0)
    expected = {
        "cf_score": 0.5 * sum(range(CF_DIM)), "category_affinity": 0.25, "item_popularity": 0.5,
        "item_recency": 0.5, "editorial_boost": 0.125, "item_quality": 0.75, "item_skip_rate": 0.0625,
        "user_skip_rate": 0.25, "user_activity": 3.0, "content_similarity": 0.5, "trending_score": 0.875,
        "from_cf": 1.0,
    }
    assert set(expected) == set(FEATURES)
    assert {name: float(out[0, COL[name]]) for name in FEATURES} == pytest.approx(expected, rel=1e-6)
    assert cats.tolist() == [3]


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("has_cf", [0.0, NAN, 0.5, 2.0])
def test_cf_score_needs_a_user_embedding(fn, catalog, has_cf):
    cat = catalog(1)
    cat.row(0)[ITEM_CF:ITEM_CF + CF_DIM] = 1.0
    out, _ = run(fn, cat, [0], user(has_cf=has_cf, cf=1.0))
    assert out[0, COL["cf_score"]] == 0.0


@pytest.mark.parametrize("fn", IMPLS)
def test_category_affinity_and_unknown_categories(fn, catalog):
    cat = catalog(6)
    for i, c in enumerate((0.0, 63.0, 64.0, -1.0, NAN, 5.5)):
        cat.row(i)[ITEM_CATEGORY] = c
    affinity = np.arange(MAX_CATEGORIES, dtype=np.float32) / 100
    out, cats = run(fn, cat, range(6), user(), affinity)
    assert cats.tolist() == [0, 63, -1, -1, -1, 5]
    assert out[:, COL["category_affinity"]].tolist() == pytest.approx([0.0, 0.63, 0.0, 0.0, 0.0, 0.05])


@pytest.mark.parametrize("fn", IMPLS)
def test_recency(fn, catalog):
    cat = catalog(5)
    for i, created in enumerate((100.0, 93.0, 86.0, 120.0, NAN)):
        cat.row(i)[ITEM_CREATED_DAYS] = created
    out, _ = run(fn, cat, range(5), user(), now_days=100.0, half_life_days=7.0)
    rec = out[:, COL["item_recency"]]
    assert rec[:4].tolist() == pytest.approx([1.0, 0.5, 0.25, 1.0])  # created in the future: no boost past 1
    assert math.isnan(rec[4])


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("half_life", [0.0, -7.0, NAN])
def test_half_life_must_be_positive(fn, catalog, half_life):
    with pytest.raises(ValueError):
        run(fn, catalog(1), [0], user(), half_life_days=half_life)


@pytest.mark.parametrize("fn", IMPLS)
def test_empty_input_writes_nothing(fn, catalog):
    out = np.full((0, N_FEATURES), 1.0, dtype=np.float32)
    cats = np.zeros(0, dtype=np.int32)
    fn(np.zeros(0, np.int64), catalog(1).addrs, ITEM_WIDTH, user(), np.zeros(MAX_CATEGORIES, np.float32),
       np.zeros((0, N_SOURCE_SIGNALS), np.float32), 0.0, 1.0, out, cats)


@pytest.mark.skipif(PURE_PYTHON, reason="argument checks of the compiled kernel")
def test_native_refuses_bad_indices_and_buffers(native, catalog):
    cat = catalog(CHUNK_ROWS + 1, missing={1})
    for bad in (-1, CHUNK_ROWS, 2 * CHUNK_ROWS):
        with pytest.raises(IndexError):
            run(native.assemble_features, cat, [0, bad], user())
    zeros = np.zeros
    args = dict(idx=zeros(2, np.int64), chunk_addrs=cat.addrs, item_width=ITEM_WIDTH, user_row=user(),
                affinity=zeros(MAX_CATEGORIES, np.float32), signals=zeros((2, N_SOURCE_SIGNALS), np.float32),
                now_days=0.0, half_life_days=1.0, out=zeros((2, N_FEATURES), np.float32),
                categories=zeros(2, np.int32))
    native.assemble_features(**args)
    for name, value in [("item_width", ITEM_CF), ("user_row", zeros(USER_WIDTH - 1, np.float32)),
                        ("affinity", zeros(MAX_CATEGORIES - 1, np.float32)),
                        ("signals", zeros((1, N_SOURCE_SIGNALS), np.float32)),
                        ("out", zeros((2, N_FEATURES + 1), np.float32)), ("categories", zeros(1, np.int32))]:
        with pytest.raises(ValueError):
            native.assemble_features(**dict(args, **{name: value}))


# ------------------------------------------------------------------ native vs reference
def test_edge_cases_match(native, catalog):
    cat = catalog(2 * CHUNK_ROWS)
    values = [0.0, 1.0, -1.0, 0.5, 63.0, 63.5, 64.0, 1e30, -1e30, NAN, math.inf, -math.inf, -0.0]
    idx = []
    for i, v in enumerate(values):
        for index in (i, CHUNK_ROWS + i):
            r = cat.row(index)
            r[:] = v
            r[ITEM_CF:ITEM_CF + CF_DIM] = np.linspace(-1, 1, CF_DIM) * (i + 1)
            idx.append(index)
    cat.row(0)[ITEM_CF] = NAN
    idx += idx[:3]
    n = len(idx)
    affinity = np.linspace(0, 1, MAX_CATEGORIES, dtype=np.float32)
    signals = np.array([values[j % len(values)] for j in range(n * N_SOURCE_SIGNALS)], np.float32).reshape(n, -1)
    for u in (user(cf=np.linspace(1, -1, CF_DIM)), user(has_cf=0.0), user(skip_rate=NAN, activity=math.inf)):
        for now in (0.0, 100.0, 1e9, NAN, math.inf):
            for half_life in (1e-30, 1.0, 7.0, math.inf):
                kw = dict(affinity=affinity, signals=signals, now_days=now, half_life_days=half_life)
                assert_same(run(native.assemble_features, cat, idx, u, **kw),
                            run(assemble_features_reference, cat, idx, u, **kw), cf_scale(cat, idx, u))


FLOATS = st.floats(width=32)
FIELD = FLOATS | st.sampled_from([0.0, 3.0, 63.0, 64.0, -1.0])
UNIT = st.floats(-1.0, 1.0, width=32)


@st.composite
def feature_cases(draw):
    n_items = draw(st.sampled_from([1, 5, CHUNK_ROWS + 3]))
    idx = draw(st.lists(st.integers(0, n_items - 1), max_size=32))
    distinct = sorted(set(idx))
    rows = np.zeros((len(distinct), ITEM_WIDTH), dtype=np.float32)
    rows[:, :ITEM_SKIP_RATE + 1] = draw(arrays(np.float32, (len(distinct), ITEM_SKIP_RATE + 1), elements=FIELD))
    rows[:, ITEM_CF:ITEM_CF + CF_DIM] = draw(arrays(np.float32, (len(distinct), CF_DIM), elements=UNIT))
    u = user(has_cf=draw(st.sampled_from([1.0, 1.0, 0.0])), cf=draw(arrays(np.float32, CF_DIM, elements=UNIT)),
             skip_rate=draw(FLOATS), activity=draw(FLOATS))
    affinity = draw(arrays(np.float32, MAX_CATEGORIES, elements=FLOATS))
    signals = draw(arrays(np.float32, (len(idx), N_SOURCE_SIGNALS), elements=FLOATS))
    now = draw(st.floats(-1e6, 1e6) | st.sampled_from([NAN, math.inf]))
    half_life = draw(st.floats(1e-6, 1e6))
    return n_items, dict(zip(distinct, rows, strict=True)), idx, u, affinity, signals, now, half_life


@settings(max_examples=100, deadline=None)
@given(case=feature_cases())
def test_random_catalogs_match(native, catalog, case):
    n_items, rows, idx, u, affinity, signals, now, half_life = case
    cat = catalog(n_items)
    for i, row in rows.items():
        cat.row(i)[:] = row
    kw = dict(affinity=affinity, signals=signals, now_days=now, half_life_days=half_life)
    assert_same(run(native.assemble_features, cat, idx, u, **kw),
                run(assemble_features_reference, cat, idx, u, **kw), cf_scale(cat, idx, u))


def test_strided_signals_and_readonly_user_row_from_lmdb(native, tmp_path):
    from server.store import LmdbStore, empty_user_value, user_row_view

    n_items = CHUNK_ROWS + 2
    rows = np.zeros((n_items, ITEM_WIDTH), dtype=np.float32)
    rows[:, ITEM_ACTIVE] = 1.0
    rows[:, ITEM_CATEGORY] = 7.0
    rows[:, ITEM_POPULARITY] = np.arange(n_items) / n_items
    rows[:, ITEM_CF:ITEM_CF + CF_DIM] = 0.25
    value = empty_user_value()
    u = np.frombuffer(value, dtype=np.float32, count=USER_WIDTH)
    u[USER_HAS_CF], u[USER_CF:USER_CF + CF_DIM] = 1.0, 2.0
    store = LmdbStore.open(str(tmp_path))
    try:
        with store.write() as txn:
            store.put_item_rows(txn, "t", rows)
            store.set_state(txn, "t", "n_items", n_items)
            store.put_user(txn, "t", "alice", value)
        with store.snapshot() as snap:
            addrs, _ = snap.chunks("t")
            user_row = user_row_view(snap.user("t", "alice"))
            assert not user_row.flags.writeable
            idx = np.array([1, CHUNK_ROWS + 1], dtype=np.int64)
            affinity = np.zeros(MAX_CATEGORIES, dtype=np.float32)
            affinity[7] = 0.5
            signals = np.arange(2 * 2 * N_SOURCE_SIGNALS, dtype=np.float32).reshape(4, N_SOURCE_SIGNALS)[::2]
            out = np.zeros((2, N_FEATURES), dtype=np.float32)
            cats = np.zeros(2, dtype=np.int32)
            native.assemble_features(idx, addrs, ITEM_WIDTH, user_row, affinity, signals, 0.0, 7.0, out, cats)
    finally:
        store.close()
    assert cats.tolist() == [7, 7]
    np.testing.assert_array_equal(out[:, COL["cf_score"]], [0.5 * CF_DIM] * 2)
    np.testing.assert_array_equal(out[:, COL["category_affinity"]], [0.5, 0.5])
    np.testing.assert_array_equal(out[:, COL["item_popularity"]], rows[idx, ITEM_POPULARITY])
    np.testing.assert_array_equal(out[:, COL["content_similarity"]:], signals)
