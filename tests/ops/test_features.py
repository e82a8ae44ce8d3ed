"""ops.features and the Catalog category/maturity rules, on hand-built data."""

import numpy as np
import pytest

from kernels.layout import (
    CF_DIM,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CF,
    ITEM_CREATED_DAYS,
    ITEM_MATURITY,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    MATURITY_CODES,
    MATURITY_MOST_RESTRICTIVE,
    MAX_CATEGORIES,
    SEEN_CAP,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_CONSENT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
)
from ops.catalog import Catalog, maturity_from_genres, normalize_maturity, year_from_title
from ops.features import item_base_rows, item_lists, user_segments, user_values_from_history
from ops.interactions import Interactions
from server.store import empty_user_value, push_seen, user_row_view, user_seen_view

DAY = 86400
NOW = 1_700_000_000


def make_catalog(categories, active=None, maturity=None, created_ts=None):
    n = len(categories)
    return Catalog(
        item_ids=[f"i{i}" for i in range(n)],
        titles=[f"t{i}" for i in range(n)],
        categories=[list(c) for c in categories],
        maturity=maturity if maturity is not None else ["PG"] * n,
        created_ts=created_ts if created_ts is not None else np.full(n, NOW - 10 * DAY),
        active=active if active is not None else np.ones(n, dtype=bool),
        sponsored=np.zeros(n, dtype=bool),
        editorial=np.zeros(n, dtype=np.float32),
    )


def make_history(rows, user_ids=None):
    """rows: (user index, item index, ts, weight)."""
    user, item, ts, weight = (np.array(c) for c in zip(*rows))
    n_users = int(user.max()) + 1
    ids = np.array(user_ids if user_ids is not None else [f"u{u}" for u in range(n_users)])
    return Interactions(ids, user.astype(np.int32), item.astype(np.int32), ts.astype(np.int64),
                        weight.astype(np.float32)).sorted()


# ------------------------------------------------------------------ maturity
@pytest.mark.parametrize("genres, expected", [
    (["Adult", "Animation"], "NC17"),
    (["Comedy", "Horror"], "R"),
    (["Animation", "Horror"], "R"),
    (["Drama", "Crime"], "PG13"),
    (["War"], "PG13"),
    (["Thriller", "Family"], "PG13"),
    (["Animation", "Comedy"], "G"),
    (["Family"], "G"),
    (["Children"], "G"),
    (["Drama", "Romance"], "PG"),
    ([], "PG"),
])
def test_maturity_from_genres(genres, expected):
    assert maturity_from_genres(genres) == expected


def test_maturity_strings_normalise_and_unknown_fails_closed():
    assert normalize_maturity("pg-13") == "PG13"
    assert normalize_maturity(" NC-17 ") == "NC17"
    assert normalize_maturity("TV-MA") is None
    assert normalize_maturity(None) is None
    cat = make_catalog([["a"]] * 4, maturity=["G", "PG-13", "TV-MA", None])
    rows = item_base_rows(cat, make_history([(0, 0, NOW, 1.0)]), NOW)
    assert rows[:, ITEM_MATURITY].tolist() == [MATURITY_CODES["G"], MATURITY_CODES["PG13"],
                                               MATURITY_MOST_RESTRICTIVE, MATURITY_MOST_RESTRICTIVE]


def test_year_from_title():
    assert year_from_title("Pulp Fiction (1994)") == 757382400
    assert year_from_title("Babylon 5 (1994-1998) ") == 757382400
    assert year_from_title("No year") is None


# ---------------------------------------------------------------- categories
def test_category_ids_in_order_of_first_appearance():
    cat = make_catalog([["Drama", "Crime"], ["Comedy"], ["Drama"], []])
    assert cat.category_names == ["Drama", "Comedy", "uncategorized"]
    assert cat.primary_category.tolist() == [0, 1, 0, 2]


def test_category_cap_maps_overflow_to_other():
    cat = make_catalog([[f"c{i}"] for i in range(70)] + [["c3"]])
    assert len(cat.category_names) == MAX_CATEGORIES
    assert cat.category_names[:63] == [f"c{i}" for i in range(63)]
    assert cat.category_names[63] == "other"
    assert cat.primary_category[62] == 62
    assert (cat.primary_category[63:70] == 63).all()
    assert cat.primary_category[70] == 3
    rows = item_base_rows(cat, make_history([(0, 0, NOW, 1.0)]), NOW)
    assert rows[:, ITEM_CATEGORY].max() == MAX_CATEGORIES - 1


def test_category_order_keeps_prior_ids():
    cat = make_catalog([["Comedy"], ["Horror"]]).with_category_order(["Drama", "Comedy"])
    assert cat.category_names == ["Drama", "Comedy", "Horror"]
    assert cat.primary_category.tolist() == [1, 2]


# ----------------------------------------------------------------- item rows
def test_item_base_rows():
    cat = make_catalog([["a"], ["a"], ["b"], ["b"]], active=np.array([True, True, True, False]),
                       created_ts=np.array([0, DAY, 2 * DAY, 3 * DAY]))
    hist = make_history([
        (0, 0, NOW - 5, 1.0), (1, 0, NOW - 4, 1.0), (2, 0, NOW - 3, 0.2), (0, 1, NOW - 2, 0.1),
        (1, 1, NOW + 100, 1.0),  # after now_ts: ignored
    ])
    rows = item_base_rows(cat, hist, NOW)
    assert rows[:, ITEM_ACTIVE].tolist() == [1, 1, 1, 0]
    assert rows[:, ITEM_CATEGORY].tolist() == [0, 0, 1, 1]
    assert rows[:, ITEM_CREATED_DAYS].tolist() == [0, 1, 2, 3]
    assert rows[0, ITEM_POPULARITY] == pytest.approx(1.0)
    assert rows[1, ITEM_POPULARITY] == pytest.approx(np.log1p(1) / np.log1p(3))
    assert rows[2, ITEM_POPULARITY] == 0.0
    assert rows[0, ITEM_QUALITY] == pytest.approx((2.2 + 1.0) / 5)
    assert rows[2, ITEM_QUALITY] == pytest.approx(0.5)  # no interactions: the prior
    skip_prior = 2 / 4  # two of four interactions below 0.5
    assert rows[0, ITEM_SKIP_RATE] == pytest.approx((1 + 2 * skip_prior) / 5)
    assert rows[2, ITEM_SKIP_RATE] == pytest.approx(skip_prior)
    assert (rows[:, ITEM_CF:ITEM_CF + CF_DIM] == 0).all()
    assert ((rows[:, ITEM_POPULARITY] >= 0) & (rows[:, ITEM_POPULARITY] <= 1)).all()


# ---------------------------------------------------------------- user values
def test_user_affinity_favours_interacted_category():
    cat = make_catalog([["Drama"], ["Drama"], ["Comedy"], ["Horror"]])
    rows = item_base_rows(cat, make_history([(0, 0, NOW, 1.0)]), NOW)
    hist = make_history([
        (0, 0, NOW - DAY, 0.9), (0, 1, NOW - 2 * DAY, 0.8), (0, 2, NOW - 3 * DAY, 0.6),
        (1, 3, NOW - 60 * DAY, 1.0), (1, 2, NOW, 0.6),
    ])
    values = user_values_from_history(hist, rows, NOW)
    assert len(values) == 2
    aff0 = user_row_view(values[0])[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    assert aff0.argmax() == 0  # Drama
    assert aff0[0] == pytest.approx(0.9 * 2 ** (-1 / 30) + 0.8 * 2 ** (-2 / 30), rel=1e-5)
    assert aff0[2] == 0.0  # never touched Horror
    # recency wins: an old Horror 1.0 (two half-lives) loses to a fresh Comedy 0.6
    aff1 = user_row_view(values[1])[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    assert aff1[1] == pytest.approx(0.6)
    assert aff1[2] == pytest.approx(0.25, rel=1e-5)
    assert user_segments(hist, rows, NOW).tolist() == [0, 1]

    row0 = user_row_view(values[0])
    assert row0[USER_ACTIVITY] == pytest.approx(np.log1p(3))
    assert row0[USER_SKIP_RATE] == 0.0
    assert row0[USER_LAST_ACTIVE_DAYS] == pytest.approx((NOW - DAY) / DAY)
    assert row0[USER_CONSENT] == 1.0
    assert user_row_view(values[1])[USER_SKIP_RATE] == 0.0


def test_seen_ring_holds_most_recent_distinct_items():
    n_items = SEEN_CAP + 50
    cat = make_catalog([["a"]] * n_items)
    rows = item_base_rows(cat, make_history([(0, 0, NOW, 1.0)]), NOW)
    # user 0 sees items 0..n-1 in order, then item 5 again (latest); user 1 sees two items
    events = [(0, i, NOW - 1000 + i, 0.7) for i in range(n_items)] + [(0, 5, NOW, 0.7)]
    events += [(1, 3, NOW - 10, 0.2), (1, 4, NOW - 20, 0.9)]
    hist = make_history(events)
    values = user_values_from_history(hist, rows, NOW)

    expected0 = list(range(n_items - SEEN_CAP + 1, n_items)) + [5]
    assert sorted(user_seen_view(values[0]).tolist()) == sorted(expected0)
    assert 0 not in user_seen_view(values[0])
    assert sorted(user_seen_view(values[1]).tolist()) == [3, 4]
    assert user_row_view(values[1])[USER_SKIP_RATE] == pytest.approx(0.5)

    # byte-identical to what the store's own push_seen produces
    for value, items in ((values[0], expected0), (values[1], [4, 3])):
        ref = empty_user_value()
        push_seen(ref, items)
        tail = len(ref) - len(user_row_view(ref)) * 4
        assert bytes(value[-tail:]) == bytes(ref[-tail:])


# --------------------------------------------------------------------- lists
def test_item_lists():
    n = 3000
    cats = [["a"] if i % 2 == 0 else ["b"] for i in range(n)]
    active = np.ones(n, dtype=bool)
    active[[7, 8, 2000]] = False
    created = NOW - np.arange(n) * DAY
    cat = make_catalog(cats, active=active, created_ts=created)
    rng = np.random.default_rng(1)
    events = [(int(u), int(i), NOW - int(rng.integers(0, 30 * DAY)), float(rng.random()))
              for u, i in zip(rng.integers(0, 300, 20000), (rng.pareto(1.0, 20000) * 50).astype(int) % n)]
    events += [(300, 1, NOW, 1.0), (300, 3, NOW, 1.0)]  # a user purely into category "b"
    hist = make_history(events)
    rows = item_base_rows(cat, hist, NOW)
    lists = item_lists(rows, hist, NOW)

    popular = lists["popular"]
    assert popular.dtype == np.int32
    assert sorted(popular.tolist()) == sorted(np.flatnonzero(active).tolist())
    pop = rows[popular, ITEM_POPULARITY]
    assert (np.diff(pop) <= 0).all()
    ties = pop[1:] == pop[:-1]
    assert (popular[1:][ties] > popular[:-1][ties]).all()

    assert len(lists["trending"]) == 1000
    assert not set(lists["trending"].tolist()) & {7, 8, 2000}
    assert len(lists["trending:0"]) <= 500 and (rows[lists["trending:0"], ITEM_CATEGORY] == 0).all()
    assert (rows[lists["trending:1"], ITEM_CATEGORY] == 1).all()
    assert lists["new"].tolist() == [i for i in range(n) if active[i]][:1000]
    assert all(f"trending:{c}" in lists and f"segment:{c}" in lists for c in range(MAX_CATEGORIES))
    assert len(lists["trending:5"]) == 0

    segments = user_segments(hist, rows, NOW)
    assert segments[300] == 1
    seg_b = lists["segment:1"]
    assert 0 < len(seg_b) <= 200 and {1, 3} <= set(seg_b.tolist())
    assert not set(seg_b.tolist()) & {7, 8, 2000}


def test_popular_list_covers_items_without_history():
    cat = make_catalog([["a"]] * 5, active=np.array([True, False, True, True, True]))
    hist = make_history([(0, 3, NOW, 1.0)])
    lists = item_lists(item_base_rows(cat, hist, NOW), hist, NOW)
    assert lists["popular"].tolist() == [3, 0, 2, 4]
    assert lists["trending"].tolist() == [3]
