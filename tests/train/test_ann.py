import os

import numpy as np
import pytest

from indexes.ann import build_index, open_index, publish_index
from server.store import DataDir, LmdbStore


def test_view_finds_exact_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    keys = np.arange(300, dtype=np.int64) * 7 + 3
    path = str(tmp_path / "cos.usearch")
    build_index(vectors, keys, "cos", path)
    index = open_index(path)
    assert len(index) == 300 and index.ndim == 16
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    found = index.search(queries, 5).keys
    exact = keys[np.argsort(-(queries @ vectors.T), axis=1)[:, :5]]
    assert [set(f) for f in found.tolist()] == [set(e) for e in exact.tolist()]


def test_inner_product_index_finds_the_best_match(tmp_path):
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    path = str(tmp_path / "ip.usearch")
    build_index(vectors, np.arange(300), "ip", path)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    found = open_index(path).search(queries, 1).keys[:, 0]
    assert (found == np.argmax(queries @ vectors.T, axis=1)).mean() >= 0.9


def test_half_precision_cosine_index(tmp_path):
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    path = str(tmp_path / "cos.usearch")
    build_index(vectors, np.arange(200), "cos", path, dtype="f16")
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = unit[17] * 3.0
    assert int(open_index(path).search(q, 1).keys[0]) == int(np.argmax(unit @ unit[17]))


def test_never_overwrites(tmp_path):
    path = str(tmp_path / "x.usearch")
    build_index(np.ones((3, 4), np.float32), np.arange(3), "ip", path)
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError):
        build_index(np.zeros((3, 4), np.float32), np.arange(3), "ip", path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["x.usearch"]


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError):
        build_index(np.ones((3, 4), np.float32), np.array([0, 0, 1]), "ip", str(tmp_path / "a"))
    with pytest.raises(ValueError):
        build_index(np.ones((3, 4), np.float32), np.arange(3), "l2", str(tmp_path / "b"))


def test_published_pointer_resolves_to_the_file(tmp_path):
    data = DataDir(str(tmp_path))
    data.ensure("t1")
    path = data.index("t1", "cf", "v1")
    build_index(np.eye(4, dtype=np.float32), np.arange(4), "ip", path)
    store = LmdbStore.open(data.root)
    try:
        with store.write() as txn:
            pointer = publish_index(store, txn, "t1", "cf", path, "v1", 4, "ip")
        with store.snapshot() as snap:
            stored = snap.state("t1", "index:cf")
        assert stored == pointer == {"path": os.path.join("tenants", "t1", "indexes", "cf.v1.usearch"),
                                     "version": "v1", "ndim": 4, "metric": "ip", "count": 4}
        index = open_index(os.path.join(data.root, stored["path"]))
        assert int(index.search(np.array([0, 0, 1, 0], np.float32), 1).keys[0]) == 2
        with store.write() as txn, pytest.raises(ValueError, match="8"):
            publish_index(store, txn, "t1", "cf", path, "v1", 8, "ip")
    finally:
        store.close()
