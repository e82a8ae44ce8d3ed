"""ops.catalog readers and ops.load against a real LMDB store in tmp dirs."""

import json
import os
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.synth import generate, write_canonical
from kernels.layout import (
    CF_DIM,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_CF,
    ITEM_MATURITY,
    MATURITY_CODES,
    USER_CONSENT,
)
from ops.catalog import detect_format, read_dataset
from ops.interactions import Interactions
from ops.load import load_dataset, write_dataset
from server.store import DataDir, LmdbStore, user_row_view, user_seen_view

MOVIETWEETINGS = os.path.join(os.path.dirname(__file__), "..", "..", "ops", "datasets", "movietweetings-100k")


def write(path, text, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)
    return str(path)


def jsonl(*records):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def error_lines(dataset_or_report, path):
    return [(e.line, e.message) for e in dataset_or_report.errors if e.path == str(path)]


# -------------------------------------------------------------------- parsing
def test_canonical_malformed_rows_reported_with_line_numbers(tmp_path):
    items = write(tmp_path / "items.jsonl", jsonl(
        {"item_id": "a", "title": "A", "categories": ["Drama"], "maturity_rating": "PG-13",
         "created_at": "2024-01-02T00:00:00Z", "editorial_boost": 0.5},
        '{"item_id": "b",',
        {"item_id": "c", "editorial_boost": 2},
        {"item_id": "a", "title": "again"},
        "",
        {"item_id": "d", "categories": "Comedy|Drama", "active": "no", "created_at": 1700000000, "sponsored": True},
        "[1, 2]",
        {"item_id": "e", "created_at": "yesterday"},
    ))
    events = tmp_path / "events.csv"
    write(events, "user_id,item_id,type,timestamp_ms,value\n"
                  "u1,a,click,1700000000000\n"
                  "u1,a,click\n"
                  "u2,d,teleport,1700000000000\n"
                  "u2,zzz,view,1700000000000\n"
                  "u2,d,view,notanumber\n"
                  "u3,d,rating,1700000001000,7\n"
                  "u3,a,rating,1700000002000\n"
                  "u3,a,dwell,1700000003000,30\n"
                  "u3,a,impression,1700000004000\n"
                  'u1,"a,click,1700000000000\n'  # no quoting in events.csv: spoils this line only
                  "u1,a,view,99999999999999999999\n")
    write(events, b"u4,a,view,1700000005000,\xff\xfe\n", mode="ab")

    ds = read_dataset(str(tmp_path))
    assert ds.fmt == "canonical"
    assert error_lines(ds, items) == [
        (2, "invalid JSON: Expecting property name enclosed in double quotes at column 17"),
        (3, "editorial_boost 2 outside 0..1"),
        (4, "duplicate item id 'a' (first on line 1); row skipped"),
        (7, "expected a JSON object"),
        (8, "bad created_at 'yesterday' (want ISO 8601 or epoch seconds)"),
    ]
    assert [line for line, _ in error_lines(ds, events)] == [3, 4, 5, 6, 8, 11, 12, 13]
    messages = dict(error_lines(ds, events))
    assert "unknown event type 'teleport'" in messages[4]
    assert "unknown item 'zzz'" in messages[5]
    assert "rating needs a value" in messages[8]
    assert "unknown item '\"a'" in messages[11]
    assert "out of range" in messages[12]
    assert "invalid UTF-8" in messages[13]
    assert ds.n_errors == len(ds.errors) == 13

    cat = ds.catalog
    assert cat.item_ids == ["a", "d"]
    assert cat.maturity == ["PG-13", None]
    assert cat.categories == [["Drama"], ["Comedy", "Drama"]]
    assert cat.active.tolist() == [True, False] and cat.sponsored.tolist() == [False, True]
    assert cat.created_ts.tolist() == [1704153600, 1700000000]
    assert cat.editorial.tolist() == [0.5, 0.0]
    h = ds.history
    assert len(h) == 3 and ds.impressions == 1
    assert h.weight.tolist() == pytest.approx([0.6, 0.7, 0.5])
    assert h.ts.tolist() == [1700000000, 1700000001, 1700000003]
    assert h.user_ids.tolist() == ["u1", "u3"]


def test_canonical_items_csv(tmp_path):
    write(tmp_path / "items.csv", "item_id,title,categories,maturity_rating,created_at,active,extra\n"
                                  'x,"Hello, world",Drama|Crime,R,2020-05-01,true,zzz\n'
                                  "y,Two,,,,,\n"
                                  'w,"Two\nlines",Crime,,,,\n'
                                  'v,"bad\nrecord"\n'
                                  "z,short\n")
    ds = read_dataset(str(tmp_path))
    assert ds.catalog.item_ids == ["x", "y", "w"]
    assert ds.catalog.titles[0] == "Hello, world"
    assert ds.catalog.titles[2] == "Two\nlines"
    assert ds.catalog.categories == [["Drama", "Crime"], [], ["Crime"]]
    assert ds.catalog.category_names == ["Drama", "uncategorized", "Crime"]
    assert ds.catalog.created_ts.tolist() == [1588291200, 0, 0]  # no events: missing created -> 0
    assert [(e.line, e.message) for e in ds.errors] == [
        (6, "expected 7 fields, got 2 (record spans lines 6-7)"),
        (8, "expected 7 fields, got 2"),
    ]


def test_movietweetings_reader_derives_maturity_and_reports_errors(tmp_path):
    movies = write(tmp_path / "movies.dat", "0000001::Scary (1994)::Horror|Comedy\n"
                                            "0000002::Broken line\n"
                                            "0000003::No Year::Animation\n"
                                            "0000004::Grown-up (2001)::Adult\n")
    ratings = write(tmp_path / "ratings.dat", "1::0000001::7::1365029107\n"
                                              "1::0000003::x::1365029108\n"
                                              "2::9999999::5::1365029109\n"
                                              "2::0000001::11::1365029110\n"
                                              "2::0000001::5\n"
                                              "3::0000003::10::1365029111\n")
    assert detect_format(str(tmp_path)) == "movietweetings"
    ds = read_dataset(str(tmp_path))
    assert [line for line, _ in error_lines(ds, movies)] == [2]
    assert [line for line, _ in error_lines(ds, ratings)] == [2, 3, 4, 5]
    assert "unknown item '9999999'" in error_lines(ds, ratings)[1][1]
    assert ds.catalog.item_ids == ["0000001", "0000003", "0000004"]
    assert ds.catalog.maturity == ["R", "G", "NC17"]
    assert ds.catalog.created_ts.tolist() == [757382400, 1365029107, 978307200]
    assert ds.history.weight.tolist() == pytest.approx([0.7, 1.0])
    assert ds.history.user_ids.tolist() == ["1", "3"]


def test_movielens_reader(tmp_path):
    write(tmp_path / "movies.csv", "movieId,title,genres\n"
                                   '1,"Jumanji, The (1995)",Adventure|Children|Fantasy\n'
                                   "2,Plain (2000),(no genres listed)\n"
                                   "3,Too few\n")
    ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n"
                                              "1,1,4.5,964982703\n"
                                              "1,2,6,964982704\n"
                                              "2,2,3.0,964982705\n")
    assert detect_format(str(tmp_path)) == "movielens"
    ds = read_dataset(str(tmp_path))
    assert [(e.path, e.line) for e in ds.errors] == [(str(tmp_path / "movies.csv"), 4), (ratings, 3)]
    assert ds.catalog.titles[0] == "Jumanji, The (1995)"
    assert ds.catalog.maturity == ["G", "PG"]
    assert ds.catalog.categories[1] == []
    assert ds.history.weight.tolist() == pytest.approx([0.9, 0.6])


LINE = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from(["a", "u1", "click", "rating", "1e30", "99999999999999999999", "-1", "nan", "",
                              '"', "::", "|", "(1994)", "(0000)", "{", "}", "[]", "5", "null"]),
             max_size=6).map(lambda parts: ",".join(parts).encode()),
)
VALID = {
    "items.jsonl": b'{"item_id": "a", "categories": ["X"]}',
    "events.csv": b"u1,a,click,1700000000000",
    "movies.dat": b"a::T (1994)::Horror",
    "ratings.dat": b"u1::a::5::1700000000",
    "movies.csv": b"a,T (1994),Horror",
    "ratings.csv": b"u1,a,4,1700000000",
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(LINE, max_size=12), layout=st.sampled_from(
    [("items.jsonl", "events.csv"), ("movies.dat", "ratings.dat"), ("movies.csv", "ratings.csv")]))
def test_readers_never_raise_on_garbage(tmp_path_factory, garbage, layout):
    path = tmp_path_factory.mktemp("garbage")
    for name in layout:
        write(path / name, b"\n".join([VALID[name]] + garbage + [VALID[name]]) + b"\n", mode="wb")
    ds = read_dataset(str(path))
    assert ds.catalog.item_ids[0] == "a"
    assert len(ds.history) >= 2
    assert all(e.line >= 1 for e in ds.errors)


def test_detect_format_rejects_unknown_layout(tmp_path):
    write(tmp_path / "something.txt", "x")
    with pytest.raises(ValueError, match="unrecognised dataset"):
        detect_format(str(tmp_path))
    write(tmp_path / "items.jsonl", "")
    assert detect_format(str(tmp_path)) == "canonical"


# ---------------------------------------------------------------------- store
def canonical_dir(path, items, events):
    os.makedirs(path, exist_ok=True)
    write(os.path.join(path, "items.jsonl"), jsonl(*items))
    write(os.path.join(path, "events.csv"), "".join(",".join(map(str, e)) + "\n" for e in events))
    return str(path)


def test_load_writes_store_in_one_go(tmp_path):
    src = canonical_dir(tmp_path / "src", [
        {"item_id": "a", "title": "A", "categories": ["Drama"], "maturity_rating": "pg-13"},
        {"item_id": "b", "categories": ["Comedy"], "maturity_rating": "Unrated", "sponsored": True},
        {"item_id": "c", "categories": ["Drama"], "active": False},
    ], [("u1", "a", "like", 1_700_000_000_000), ("u1", "b", "skip", 1_700_000_100_000),
        ("u2", "a", "view", 1_700_000_050_000), ("u2", "c", "view", 1_699_000_000_000)])
    data_dir = str(tmp_path / "data")
    report = load_dataset(data_dir, "t1", src, progress=False)
    assert (report.items, report.users, report.interactions, report.categories, report.n_errors) == (3, 2, 4, 2, 0)
    assert report.now_ts == 1_700_000_100
    assert "3 items" in report.summary()

    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            assert snap.state("t1", "n_items") == 3
            assert snap.state("t1", "categories") == ["Drama", "Comedy"]
            assert snap.state("t1", "now_ts") == 1_700_000_100
            assert snap.item_index("t1", "b") == 1
            meta = snap.item_meta("t1", 0)
            assert meta == {"id": "a", "title": "A", "category": "Drama", "categories": ["Drama"],
                            "maturity_rating": "PG13", "created_ts": 1_699_000_000, "sponsored": False,
                            "editorial_boost": 0.0}
            assert snap.item_meta("t1", 1)["maturity_rating"] == "Unrated"
            assert snap.item_meta("t1", 1)["sponsored"] is True
            assert snap.item_list("t1", "popular").tolist() == [0, 1]
            assert snap.item_list("t1", "trending").tolist()[0] == 0
            u1 = snap.user("t1", "u1")
            assert sorted(user_seen_view(u1).tolist()) == [0, 1]
            assert snap.user("t1", "nobody") is None
        with store.env.begin() as txn:
            rows = store.read_item_rows(txn, "t1", 3)
        assert rows[:, ITEM_ACTIVE].tolist() == [1, 1, 0]
        assert rows[:, ITEM_MATURITY].tolist() == [MATURITY_CODES["PG13"], 4, 4]
    finally:
        store.close()
    hist = Interactions.load(DataDir(data_dir).interactions("t1"))
    assert len(hist) == 4 and hist.user_ids.tolist() == ["u1", "u2"]
    assert not os.path.exists(DataDir(data_dir).interactions("t1").replace(".npz", ".tmp.npz"))


def test_reload_keeps_dense_indices_consent_and_cf(tmp_path):
    data_dir = str(tmp_path / "data")
    first = canonical_dir(tmp_path / "v1", [
        {"item_id": "a", "categories": ["X"]}, {"item_id": "b", "categories": ["Y"]},
        {"item_id": "c", "categories": ["X"]},
    ], [("u1", "a", "like", 1_700_000_000_000), ("u1", "b", "click", 1_700_000_001_000)])
    load_dataset(data_dir, "t", first, progress=False)

    store = LmdbStore.open(data_dir)
    with store.write() as txn:  # a user opts out; training fills a's CF embedding
        value = store.get_user_copy(txn, "t", "u1")
        user_row_view(value)[USER_CONSENT] = 0.0
        store.put_user(txn, "t", "u1", value)
        store.set_item_fields(txn, "t", np.array([0]), ITEM_CF, 0.5)
    store.close()

    second = canonical_dir(tmp_path / "v2", [
        {"item_id": "c", "categories": ["Z"]}, {"item_id": "d", "categories": ["Z"]},
        {"item_id": "a", "categories": ["X"]},
    ], [("u1", "d", "like", 1_700_000_002_000), ("u2", "c", "view", 1_700_000_003_000)])
    report = load_dataset(data_dir, "t", second, progress=False)
    assert (report.items, report.new_items, report.retired_items) == (3, 1, 1)

    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            assert [snap.item_index("t", i) for i in "abcd"] == [0, 1, 2, 3]
            assert snap.state("t", "n_items") == 4
            assert snap.state("t", "categories") == ["X", "Y", "Z"]
            assert snap.item_meta("t", 1)["id"] == "b"  # retired item keeps its metadata
            assert sorted(snap.item_list("t", "popular").tolist()) == [0, 2, 3]
            assert user_row_view(snap.user("t", "u1"))[USER_CONSENT] == 0.0
            assert user_row_view(snap.user("t", "u2"))[USER_CONSENT] == 1.0
        with store.env.begin() as txn:
            rows = store.read_item_rows(txn, "t", 4)
        assert rows[:, ITEM_ACTIVE].tolist() == [1, 0, 1, 1]
        assert rows[:, ITEM_CATEGORY].tolist() == [0, 1, 2, 2]
        assert rows[0, ITEM_CF] == 0.5 and (rows[0, ITEM_CF + 1:ITEM_CF + CF_DIM] == 0).all()
    finally:
        store.close()
    hist = Interactions.load(DataDir(data_dir).interactions("t"))
    assert sorted(zip(hist.user.tolist(), hist.item.tolist())) == [(0, 3), (1, 2)]


def test_temporal_split_keeps_latest_events_in_test(tmp_path):
    synth = generate(n_items=500, n_users=60, n_events=3000, n_categories=6, seed=3)
    data_dir = str(tmp_path / "data")
    write_dataset(data_dir, "s", synth.dataset(), progress=False)
    hist = Interactions.load(DataDir(data_dir).interactions("s"))
    train, test = hist.temporal_split(holdout_fraction=0.2)
    assert len(train) + len(test) == len(hist) and len(test) > 0
    for u in np.unique(hist.user):
        tr, te = train.ts[train.user == u], test.ts[test.user == u]
        assert len(tr) >= 1
        if len(te):
            assert tr.max() <= te.min()
            assert te.max() == hist.ts[hist.user == u].max()


def test_synth_canonical_round_trip(tmp_path):
    synth = generate(n_items=300, n_users=40, n_events=2000, n_categories=5, seed=1)
    write_canonical(synth, str(tmp_path))
    ds = read_dataset(str(tmp_path))
    assert ds.n_errors == 0
    assert ds.catalog.item_ids == synth.catalog.item_ids
    assert ds.catalog.category_names == synth.catalog.category_names
    assert (ds.catalog.created_ts == synth.catalog.created_ts).all()
    assert len(ds.history) == len(synth.history)
    got = sorted(zip(ds.history.user_ids[ds.history.user].tolist(), ds.history.item.tolist(),
                     ds.history.ts.tolist(), ds.history.weight.tolist()))
    want = sorted(zip(synth.history.user_ids[synth.history.user].tolist(), synth.history.item.tolist(),
                      synth.history.ts.tolist(), synth.history.weight.tolist()))
    assert got == want


def test_load_bundled_movietweetings(tmp_path):
    def lines(name):
        with open(os.path.join(MOVIETWEETINGS, name), encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f]

    started = time.perf_counter()
    report = load_dataset(str(tmp_path), "mt", MOVIETWEETINGS, progress=False)
    elapsed = time.perf_counter() - started
    movies, ratings = lines("movies.dat"), lines("ratings.dat")
    movie_errors = sum(e.path.endswith("movies.dat") for e in report.errors)
    rating_errors = {e.line for e in report.errors if e.path.endswith("ratings.dat")}
    assert report.n_errors == len(report.errors)
    assert report.fmt == "movietweetings"
    assert report.items == len(movies) - movie_errors
    assert report.interactions == len(ratings) - len(rating_errors)
    assert report.users == len({r.split("::")[0] for n, r in enumerate(ratings, 1) if n not in rating_errors})
    assert elapsed < 30, elapsed

    store = LmdbStore.open(str(tmp_path))
    try:
        with store.snapshot() as snap:
            assert snap.state("mt", "n_items") == report.items
            assert len(snap.item_list("mt", "popular")) == report.items  # all active
            pulp = snap.item_index("mt", "0110912")
            if pulp is not None:  # Crime|Thriller
                assert snap.item_meta("mt", pulp)["maturity_rating"] == "PG13"
            assert len(snap.state("mt", "categories")) == report.categories
    finally:
        store.close()


def test_summary_lists_first_50_errors_and_counts_all(tmp_path):
    src = canonical_dir(tmp_path / "src", [{"item_id": "a"}],
                        [("u1", "a", "click", 1_700_000_000_000)] + [("u1", "a", "bogus", i) for i in range(60)])
    report = load_dataset(str(tmp_path / "data"), "t", src, progress=False)
    assert report.n_errors == 60 and report.interactions == 1
    lines = report.summary().splitlines()
    assert lines[1] == "60 malformed rows skipped:"
    assert lines[2].endswith("events.csv:2: unknown event type 'bogus'")
    assert len([line for line in lines if "unknown event type" in line]) == 50
    assert lines[-1] == "  ... and 10 more"


def test_campaigns_get_stable_ids_lists_and_meta_across_reloads(tmp_path):
    import json

    from kernels.layout import ITEM_CAMPAIGN
    from ops.load import load_dataset
    from server.app import init_data_dir
    from server.store import LmdbStore

    def write(items):
        src = tmp_path / f"ds{len(items)}"
        src.mkdir()
        with open(src / "items.jsonl", "w") as f:
            for item_id, campaign in items:
                f.write(json.dumps({"item_id": item_id, "campaign": campaign}) + "\n")
        return str(src)

    data_dir = str(tmp_path / "data")
    init_data_dir(data_dir)
    load_dataset(data_dir, "t", write([("a", "x"), ("b", ""), ("c", "y"), ("d", "x")]), now_ts=1, progress=False)
    load_dataset(data_dir, "t", write([("a", "y"), ("b", "z"), ("c", "y")]), now_ts=1, progress=False)
    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            assert snap.state("t", "campaigns") == ["x", "y", "z"]  # ids 1, 2, 3 kept across loads
            idx = {i: snap.item_index("t", i) for i in "abcd"}
            assert [int(snap.item_row("t", idx[i])[ITEM_CAMPAIGN]) for i in "abc"] == [2, 3, 2]
            # d left the catalog: inactive, and still listed under x (the filter only denies)
            assert snap.item_list("t", "campaign:1").tolist() == [idx["d"]]
            assert sorted(snap.item_list("t", "campaign:2").tolist()) == [idx["a"], idx["c"]]
            assert snap.item_list("t", "campaign:3").tolist() == [idx["b"]]
            assert snap.item_meta("t", idx["b"])["campaign"] == "z"
    finally:
        store.close()


def test_load_decays_with_the_tenants_half_lives_when_it_has_a_config(tmp_path):
    """"t1" is configured with affinity 1 day and trending 0.5 days before its load; "t2" has
    no config (the defaults, 30 and 7). Same history: a is liked and purchased two days
    before now, b viewed now (both Drama)."""
    from kernels.layout import STAT_TREND, USER_AFFINITY
    from ops.catalog import EVENT_WEIGHTS as W
    from ops.features import HalfLives
    from server.tenancy import TenantConfig, TenantRegistry

    now, day = 1_700_000_000, 86400
    src = canonical_dir(tmp_path / "src", [{"item_id": "a", "categories": ["Drama"]},
                                           {"item_id": "b", "categories": ["Drama"]}],
                        [("u1", "a", "like", (now - 2 * day) * 1000), ("u2", "a", "purchase", (now - 2 * day) * 1000),
                         ("u1", "b", "view", now * 1000)])
    data_dir = str(tmp_path / "data")
    store = LmdbStore.open(data_dir)
    try:
        TenantRegistry(store).put(TenantConfig(tenant_id="t1", affinity_half_life_days=1.0,
                                               trending_half_life_days=0.5))
    finally:
        store.close()
    configured = load_dataset(data_dir, "t1", src, progress=False)
    default = load_dataset(data_dir, "t2", src, progress=False)
    assert configured.half_lives == HalfLives(1.0, 0.5) and default.half_lives == HalfLives(30.0, 7.0)
    assert "half-lives: affinity 1d, trending 0.5d" in configured.summary().splitlines()[0]

    a_trend = W["like"] + W["purchase"]  # at now - 2 days
    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            for tenant, hl in (("t1", HalfLives(1.0, 0.5)), ("t2", HalfLives())):
                drama = 0  # the first category seen
                got = user_row_view(snap.user(tenant, "u1"))[USER_AFFINITY + drama]
                assert got == pytest.approx(W["like"] * 2 ** (-2 / hl.affinity_days) + W["view"], rel=1e-6), tenant
                a, b = snap.item_index(tenant, "a"), snap.item_index(tenant, "b")
                with store.env.begin() as txn:
                    stats = store.get_item_stats(txn, tenant, a)
                assert stats[STAT_TREND] == pytest.approx(a_trend * 2 ** (-2 / hl.trending_days), rel=1e-6), tenant
            # a leads trending with 7 days (1.9 * 2**(-2/7) = 1.56 > 0.5), b with half a day (0.12 < 0.5)
            assert snap.item_list("t1", "trending").tolist() == [b, a]
            assert snap.item_list("t2", "trending").tolist() == [a, b]
    finally:
        store.close()


def test_a_reload_and_segments_never_bring_back_erased_or_opted_out_history(tmp_path):
    """Tombstones (Admin.DeleteUser, SetConsent) filter the offline history wherever it is
    read: a re-import of the same files keeps an erased user out and an opted-out user's
    pre-opt-out rows out; later rows (after the tombstone) count as a new user's."""
    from server.events.erasure import erase_stored, set_consent, without_erased

    t0 = 1_700_000_000_000
    events = [("gone", "a", "like", t0), ("gone", "b", "click", t0 + 1000), ("quiet", "a", "view", t0 + 2000),
              ("quiet", "b", "like", t0 + 3000), ("kept", "a", "click", t0 + 4000)]
    src = canonical_dir(tmp_path / "src", [{"item_id": "a", "categories": ["X"]},
                                           {"item_id": "b", "categories": ["Y"]}], events)
    data_dir = str(tmp_path / "data")
    load_dataset(data_dir, "t", src, progress=False)
    store = LmdbStore.open(data_dir)
    erase_stored(store, "t", "gone", 0, "", now_ms=t0 + 10_000)
    set_consent(store, "t", "quiet", False, now_ms=t0 + 2500)  # after quiet's first row, before its second
    store.close()

    again = canonical_dir(tmp_path / "again", [{"item_id": "a", "categories": ["X"]},
                                               {"item_id": "b", "categories": ["Y"]}],
                          events + [("gone", "b", "view", t0 + 20_000)])  # after the erasure: a new user's
    report = load_dataset(data_dir, "t", again, progress=False)
    hist = Interactions.load(DataDir(data_dir).interactions("t"))
    rows = sorted((hist.user_ids[u], int(ts)) for u, ts in zip(hist.user.tolist(), hist.ts.tolist()))
    assert rows == [("gone", (t0 + 20_000) // 1000), ("kept", (t0 + 4000) // 1000)]  # quiet: opted out now
    assert (report.users, report.interactions) == (2, 2)
    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            assert len(user_seen_view(snap.user("t", "gone"))) == 1  # only the post-erasure view
            quiet = snap.user("t", "quiet")  # the opted-out row as SetConsent left it
            assert user_row_view(quiet)[USER_CONSENT] == 0.0 and user_seen_view(quiet).tolist() == []
            # reading the old saved file through the tombstones drops the same rows
            full = Interactions(np.array(["gone", "quiet"]), np.array([0, 1], dtype=np.int32),
                                np.array([0, 0], dtype=np.int32), np.array([t0 // 1000, t0 // 1000 + 3]),
                                np.ones(2, dtype=np.float32))
            assert len(without_erased(snap.txn, store, "t", full)) == 0
        set_consent(store, "t", "quiet", True, now_ms=t0 + 2600)  # opting back in: later rows count again
        with store.snapshot() as snap:
            left = without_erased(snap.txn, store, "t", full)
            assert left.user_ids.tolist() == ["quiet"] and left.user.tolist() == [0]
    finally:
        store.close()
