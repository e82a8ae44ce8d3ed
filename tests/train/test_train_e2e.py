import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from indexes.ann import open_index
from kernels.layout import CF_DIM, FEATURES, ITEM_CF, N_FEATURES, USER_CF, USER_HAS_CF
from ops.catalog import read_dataset
from ops.load import load_dataset
from ops.train import train_tenant
from ops.train.content import content_vectors
from ops.train.evaluate import MODELS, evaluate
from server.models.onnx_build import model_sha256
from server.store import LmdbStore, empty_user_value, user_row_view

N_CATEGORIES, ITEMS_PER_CATEGORY, N_USERS, EVENTS_PER_USER = 5, 30, 400, 20
DAY_MS = 86_400_000


def write_synthetic(path, seed=0):
    """A canonical dataset with structure: each user prefers one category, item
    popularity is skewed, and events run forward in time."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    names = ["drama", "comedy", "horror", "family", "scifi"]
    with open(os.path.join(path, "items.jsonl"), "w") as f:
        for c in range(N_CATEGORIES):
            for k in range(ITEMS_PER_CATEGORY):
                f.write(json.dumps({
                    "item_id": f"i{c}-{k}", "title": f"{names[c]} story part {k}",
                    "categories": [names[c]] + ([names[(c + 1) % N_CATEGORIES]] if k % 3 == 0 else []),
                    "maturity_rating": "PG", "created_at": 1_500_000_000 + 86_400 * 30 * k}) + "\n")
    popularity = 1.0 / (1.0 + np.arange(ITEMS_PER_CATEGORY))
    with open(os.path.join(path, "events.csv"), "w") as f:
        f.write("user_id,item_id,type,timestamp_ms,value\n")
        for u in range(N_USERS):
            favourite = u % N_CATEGORIES
            start = 1_600_000_000_000 + int(rng.integers(0, 200)) * DAY_MS
            for e in range(EVENTS_PER_USER):
                c = favourite if rng.random() < 0.8 else int(rng.integers(N_CATEGORIES))
                k = int(rng.choice(ITEMS_PER_CATEGORY, p=popularity / popularity.sum()))
                f.write(f"u{u},i{c}-{k},rating,{start + e * DAY_MS},{int(rng.integers(5, 11))}\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    write_synthetic(str(root / "dataset"))
    data_dir = str(root / "data")
    load_dataset(data_dir, "t1", str(root / "dataset"), progress=False)
    store = LmdbStore.open(data_dir)
    with store.write() as txn:  # a user outside the history, with a stale embedding
        value = empty_user_value()
        user_row_view(value)[USER_HAS_CF] = 1.0
        store.put_user(txn, "t1", "stranger", value)
    store.close()
    report = train_tenant(data_dir, "t1", progress=False)
    return data_dir, report


def test_publishes_indexes_and_models(trained):
    data_dir, report = trained
    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            pointers = {name: snap.state("t1", name) for name in
                        ("index:cf", "index:content", "model:prerank", "model:rank")}
            n_items = snap.state("t1", "n_items")
    finally:
        store.close()
    assert pointers["index:cf"]["metric"] == "ip" and pointers["index:content"]["metric"] == "cos"
    for name in ("index:cf", "index:content"):
        p = pointers[name]
        assert p["ndim"] == CF_DIM and p["count"] == n_items == N_CATEGORIES * ITEMS_PER_CATEGORY
        index = open_index(os.path.join(data_dir, p["path"]))
        assert len(index) == p["count"]
    for name, kind in (("model:prerank", "linear"), ("model:rank", "mlp")):
        p = pointers[name]
        assert p["kind"] == kind and p["features"] == list(FEATURES) and p["trained_at"] and p["metrics"]
        blob = open(os.path.join(data_dir, p["path"]), "rb").read()
        assert model_sha256(blob) == p["sha256"] and p["path"].endswith(p["sha256"] + ".onnx")
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        (inp,) = session.get_inputs()
        assert inp.type == "tensor(float)" and inp.shape[-1] == len(FEATURES) == N_FEATURES
        scores = session.run(None, {inp.name: np.random.default_rng(0).random((7, N_FEATURES), np.float32)})[0]
        assert scores.shape == (7,) and np.isfinite(scores).all()
    assert report.indexes == {"cf": pointers["index:cf"], "content": pointers["index:content"]}


def test_writes_embeddings_into_item_rows_and_user_values(trained):
    data_dir, _ = trained
    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            rows = store.read_item_rows(snap.txn, "t1", snap.state("t1", "n_items"))
            known = user_row_view(snap.user("t1", "u0")).copy()  # views die with the snapshot
            stranger = user_row_view(snap.user("t1", "stranger")).copy()
            index = open_index(os.path.join(data_dir, snap.state("t1", "index:cf")["path"]))
    finally:
        store.close()
    assert np.abs(rows[:, ITEM_CF:ITEM_CF + CF_DIM]).sum(axis=1).min() > 0
    assert known[USER_HAS_CF] == 1.0 and np.abs(known[USER_CF:USER_CF + CF_DIM]).sum() > 0
    assert stranger[USER_HAS_CF] == 0.0  # its embedding came from another factorisation
    # the cf index holds exactly the stored item embeddings, keyed by dense index
    np.testing.assert_allclose(index.get(np.arange(5)), rows[:5, ITEM_CF:ITEM_CF + CF_DIM], rtol=1e-6)


def test_reports_offline_metrics(trained):
    _, report = trained
    assert report.evaluation.users > 0
    for model in MODELS:
        for metric in ("recall@20", "ndcg@10"):
            assert 0.0 <= report.evaluation.metrics[model][metric] <= 1.0
    assert report.evaluation.metrics["funnel"]["recall@20"] > 0.0
    summary = report.summary()
    assert "Recall@20" in summary and "funnel" in summary and "popularity" in summary


def test_retraining_switches_to_new_files_and_keeps_old_ones(trained):
    data_dir, first = trained
    second = train_tenant(data_dir, "t1", seed=1, progress=False)
    for name in ("cf", "content"):
        assert second.indexes[name]["path"] != first.indexes[name]["path"]
        assert os.path.exists(os.path.join(data_dir, first.indexes[name]["path"]))
    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            assert snap.state("t1", "index:cf") == second.indexes["cf"]
            assert snap.state("t1", "model:rank") == second.models["rank"]
    finally:
        store.close()


def test_evaluation_never_sees_the_test_window(tmp_path):
    write_synthetic(str(tmp_path))
    dataset = read_dataset(str(tmp_path), "canonical", False)
    catalog, history = dataset.catalog, dataset.history
    content = content_vectors(catalog.titles, catalog.categories, catalog.created_ts)
    _, test = history.temporal_split(0.2)
    # scramble the items of the test window (same users, same times, so the same split)
    is_test = np.isin(np.arange(len(history)), np.flatnonzero(
        np.isin(history.user * 10**9 + history.ts, test.user * 10**9 + test.ts)))
    scrambled = history.item.copy()
    scrambled[is_test] = np.random.default_rng(1).integers(0, len(catalog), is_test.sum())
    other = type(history)(history.user_ids, history.user, scrambled, history.ts, history.weight)
    a = evaluate(catalog, history, content, 365.0)
    b = evaluate(catalog, other, content, 365.0)
    drop = {"seconds"}
    assert {k: v for k, v in a.rankers.items() if k not in drop} == {k: v for k, v in b.rankers.items() if k not in drop}
    assert a.metrics != b.metrics  # the relevant sets did change


def test_training_without_evaluation_still_publishes(tmp_path):
    write_synthetic(str(tmp_path / "dataset"))
    data_dir = str(tmp_path / "data")
    load_dataset(data_dir, "t1", str(tmp_path / "dataset"), progress=False)
    report = train_tenant(data_dir, "t1", progress=False, run_evaluation=False)
    assert report.evaluation is None and "evaluation skipped" in report.summary()
    assert set(report.models) == {"prerank", "rank"} and set(report.indexes) == {"cf", "content"}
    assert "offline_recall@20" not in report.models["rank"]["metrics"]
