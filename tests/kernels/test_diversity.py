"""kernels.diversity: hand-made cases for the contract and native vs reference
(exact equality) on edge cases and random inputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import diversity
from kernels._backend import PURE_PYTHON
from kernels.diversity import diversify, diversify_reference

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
IMPLS = [pytest.param(diversify_reference, id="reference"), pytest.param(diversify, id="public")]


def run(fn, categories, limit, max_per_category=0, max_streak=0, order=None, page_size=0):
    categories = np.asarray(categories, dtype=np.int32)
    order = np.arange(categories.shape[0], dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    out = fn(order, categories, limit, max_per_category, max_streak, page_size)
    assert out.dtype == np.int64 and out.ndim == 1
    return out.tolist()


def both(native, categories, limit, max_per_category, max_streak, order=None, page_size=0):
    got = run(native.diversify, categories, limit, max_per_category, max_streak, order, page_size)
    assert got == run(diversify_reference, categories, limit, max_per_category, max_streak, order, page_size)
    return got


def diverse_prefix(picked, categories, cap):
    """Length of the longest prefix of ``picked`` with at most ``cap`` of any category."""
    seen = Counter()
    for j, p in enumerate(picked):
        c = max(categories[p], -1)
        seen[c] += 1
        if seen[c] > cap:
            return j
    return len(picked)


def longest_run(values):
    best = cur = 0
    for j, v in enumerate(values):
        cur = cur + 1 if j and v == values[j - 1] else 1
        best = max(best, cur)
    return best


def test_public_function_is_the_selected_backend():
    if PURE_PYTHON:
        assert diversity.diversify is diversify_reference
    else:
        from kernels._diversity import diversify as compiled

        assert diversity.diversify is compiled


# ------------------------------------------------------------------ hand-made cases
@pytest.mark.parametrize("fn", IMPLS)
def test_category_cap(fn):
    cats = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    picked = run(fn, cats, 6, max_per_category=2)
    assert picked == [0, 1, 4, 5, 7, 8]
    assert max(Counter(cats[p] for p in picked).values()) == 2


@pytest.mark.parametrize("fn", IMPLS)
def test_streak_limit(fn):
    cats = [0, 0, 0, 1, 1, 1]
    assert run(fn, cats, 6, max_streak=1) == [0, 3, 1, 4, 2, 5]  # held-back items return when the run ends
    assert run(fn, cats, 6, max_streak=2) == [0, 1, 3, 2, 4, 5]
    assert run(fn, cats, 4, max_streak=2, max_per_category=2) == [0, 1, 3, 4]


@pytest.mark.parametrize("fn", IMPLS)
def test_fill_from_skipped_keeps_length(fn):
    cats = [4] * 6
    assert run(fn, cats, 5, max_per_category=2) == [0, 1, 2, 3, 4]
    assert run(fn, cats, 10, max_per_category=1, max_streak=1) == [0, 1, 2, 3, 4, 5]
    # once no candidate passes the cap, slots go to the best remaining in order
    assert run(fn, [0, 0, 0, 1, 0], 5, max_per_category=2, order=[4, 2, 0, 1, 3]) == [4, 2, 3, 0, 1]


@pytest.mark.parametrize("fn", IMPLS)
def test_all_negative_categories_are_one_category(fn):
    cats = [-1, -5, INT32_MIN, 0]
    assert run(fn, cats, 2, max_per_category=1) == [0, 3]
    assert run(fn, cats, 4, max_streak=1) == [0, 3, 1, 2]


@pytest.mark.parametrize("fn", IMPLS)
def test_large_categories_are_distinct(fn):
    cats = [63, 64, 64, 1000, INT32_MAX, 63, 1000, INT32_MAX]
    assert run(fn, cats, 5, max_per_category=1) == [0, 1, 3, 4, 2]
    assert run(fn, cats, 8, max_streak=1, order=[1, 2, 6, 3, 0, 5]) == [1, 6, 2, 3, 0, 5]


@pytest.mark.parametrize("fn", IMPLS)
@pytest.mark.parametrize("limit", [-3, 0, 1, 2, 3, 100])
def test_length_is_min_of_limit_and_candidates(fn, limit):
    assert len(run(fn, [1, 1, 1], limit, max_per_category=1, max_streak=1)) == max(min(limit, 3), 0)
    assert run(fn, [], limit, max_per_category=1) == []


@pytest.mark.parametrize("fn", IMPLS)
def test_disabled_rules_keep_score_order(fn):
    cats = [2, 2, 2, 2, 3]
    order = [4, 3, 2, 1, 0]
    for cap, streak in [(0, 0), (-1, -1), (0, -5)]:
        assert run(fn, cats, 5, cap, streak, order) == order


@pytest.mark.skipif(PURE_PYTHON, reason="argument checks of the compiled kernel")
@pytest.mark.parametrize("position", [-1, 3, 2**40])
def test_native_refuses_positions_outside_categories(native, position):
    with pytest.raises(IndexError):
        native.diversify(np.array([0, position], np.int64), np.zeros(3, np.int32), 2, 1, 1)


# ------------------------------------------------------------------ native vs reference
def test_edge_cases_match(native):
    cats = [-1, -2, INT32_MIN, 0, 0, 63, 63, 64, 64, 65, INT32_MAX, INT32_MAX, 5, 5, 5, 5]
    for order in (None, list(range(len(cats)))[::-1], [0, 0, 3, 3, 3, 7, 7], [5], []):
        for limit in (-1, 0, 1, 3, 8, len(cats), 2 * len(cats)):
            for cap in (-1, 0, 1, 2, 3):
                for streak in (-1, 0, 1, 2):
                    both(native, cats, limit, cap, streak, order)


CATEGORY = st.sampled_from([-1, -3, 0, 1, 2, 5, 63, 64, 1000, INT32_MIN, INT32_MAX]) | st.integers(INT32_MIN, INT32_MAX)


@st.composite
def diversity_cases(draw):
    cats = draw(st.lists(CATEGORY, max_size=80))
    order = (draw(st.permutations(range(len(cats)))) if draw(st.booleans())
             else draw(st.lists(st.integers(0, len(cats) - 1), max_size=80)) if cats else [])
    limit = draw(st.integers(-2, len(order) + 3))
    return cats, order, limit, draw(st.integers(-1, 6)), draw(st.integers(-1, 5)), draw(st.integers(-1, 7))


@settings(max_examples=300, deadline=None)
@given(case=diversity_cases())
def test_random_inputs_match(native, case):
    cats, order, limit, cap, streak, page_size = case
    picked = both(native, cats, limit, cap, streak, order, page_size)
    k = max(min(limit, len(order)), 0)
    assert len(picked) == k
    assert Counter(picked) <= Counter(order)
    if cap > 0 and streak <= 0 and page_size <= 0:
        # the walk takes min(cap, n_c) of every category c before the fill breaks the cap
        available = sum(min(cap, n) for n in Counter(max(cats[p], -1) for p in order).values())
        assert diverse_prefix(picked, cats, cap) == min(k, available)


def test_cap_holds_when_enough_other_candidates(native):
    rng = np.random.default_rng(7)
    for _ in range(50):
        cats = rng.integers(0, 8, size=200).astype(np.int32)
        order = rng.permutation(200)
        picked = run(native.diversify, cats, 12, max_per_category=2, max_streak=1, order=order)
        assert len(picked) == 12 and max(Counter(cats[picked].tolist()).values()) <= 2
        assert longest_run(cats[picked].tolist()) == 1


@pytest.mark.parametrize("fn", IMPLS)
def test_caps_hold_per_page(fn):
    cats = [0] * 6 + [1] * 6
    # page 1 takes two of each, then page 2 may again take two of each
    assert run(fn, cats, 8, max_per_category=2, page_size=4) == [0, 1, 6, 7, 2, 3, 8, 9]
    # without pages the cap binds over the whole list and the fill comes last
    assert run(fn, cats, 8, max_per_category=2) == [0, 1, 6, 7, 2, 3, 4, 5]


@pytest.mark.parametrize("fn", IMPLS)
def test_one_paged_call_keeps_every_page_within_caps(fn):
    rng = np.random.default_rng(3)
    cats = rng.integers(0, 6, size=120).tolist()
    picked = run(fn, cats, 120, max_per_category=3, max_streak=2, page_size=10)
    assert sorted(picked) == list(range(120))
    for start in range(0, 60, 10):  # the early pages have enough of every category
        page = [cats[p] for p in picked[start:start + 10]]
        assert max(Counter(page).values()) <= 3 and longest_run(page) <= 2
