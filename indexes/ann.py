"""Approximate nearest-neighbour indexes (USearch HNSW) and their publication.

An index file is written once under a versioned name (server.store.paths.DataDir.index)
and never overwritten. Serving finds the active one through the tenant state
``index:<name>`` = {"path" (relative to the data dir), "version", "ndim", "metric",
"count"}, so a rebuild is: build a new file, then switch the pointer in one LMDB
write transaction. Readers that still map the old file keep a valid view.
"""

from __future__ import annotations

import os

# onnxruntime must be loaded before usearch: usearch's extension carries its own
# libstdc++ with GNU-unique symbols, and onnxruntime segfaults at import if those win.
import onnxruntime  # noqa: F401
import numpy as np
from usearch.index import Index

METRICS = ("ip", "cos")
DTYPES = ("f32", "f16", "i8")
DEFAULT_EXPANSION_SEARCH = 128


def build_index(vectors: np.ndarray, keys: np.ndarray, metric: str, path: str, dtype: str = "f32",
                connectivity: int = 16, expansion_add: int = 128) -> None:
    """Build an HNSW index of ``vectors`` (float32[n, d]) under ``keys`` (int64[n],
    unique, >= 0) and save it to ``path``. Raises FileExistsError if ``path`` exists:
    the file appears complete or not at all (written aside, then hard-linked)."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    if vectors.ndim != 2 or keys.shape != (vectors.shape[0],):
        raise ValueError(f"vectors {vectors.shape} and keys {keys.shape} do not match")
    if keys.size and (keys.min() < 0 or np.unique(keys).size != keys.size):
        raise ValueError("keys must be unique and non-negative")
    if os.path.exists(path):
        raise FileExistsError(path)
    index = Index(ndim=vectors.shape[1], metric=metric, dtype=dtype, connectivity=connectivity,
                  expansion_add=expansion_add, expansion_search=DEFAULT_EXPANSION_SEARCH)
    if keys.size:
        index.add(keys.astype(np.uint64), vectors)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        index.save(tmp)
        os.link(tmp, path)  # fails instead of replacing a file that appeared meanwhile
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def open_index(path: str, expansion_search: int = DEFAULT_EXPANSION_SEARCH) -> Index:
    """Memory-mapped, read-only view of a saved index (pages load on demand and are
    shared between processes)."""
    index = Index.restore(path, view=True)
    if index is None:
        raise ValueError(f"{path} is not a USearch index")
    index.expansion_search = expansion_search
    return index


def publish_index(store, txn, tenant: str, name: str, path: str, version: str, ndim: int, metric: str) -> dict:
    """Point tenant state ``index:<name>`` at the index file ``path`` inside ``txn``
    (a write transaction of ``store``, whose environment lives at <data dir>/store).
    Checks the file's dimensions against ``ndim``; returns the pointer written."""
    meta = Index.metadata(path)
    if meta is None:
        raise ValueError(f"{path} is not a USearch index")
    if int(meta["dimensions"]) != ndim:
        raise ValueError(f"{path} holds {meta['dimensions']}-d vectors, expected {ndim}")
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    root = os.path.dirname(os.path.abspath(store.config.path))
    pointer = {
        "path": os.path.relpath(os.path.abspath(path), root),
        "version": version,
        "ndim": int(ndim),
        "metric": metric,
        "count": int(meta["count_present"]),
    }
    store.set_state(txn, tenant, f"index:{name}", pointer)
    return pointer


INDEX_METRICS = {"cf": "ip", "content": "cos"}  # the metric each kind of tenant index uses


def publish_index_file(store, data_dir: str, tenant: str, kind: str, source: str) -> dict:
    """Copies the USearch file ``source`` in under a new versioned name and points
    ``index:<kind>`` at it, in one LMDB transaction of ``store`` (the data dir's). Raises
    ValueError, leaving the current index in place, when the file's dimensions or metric
    do not match the tenant's vectors or its keys are not item indices of the tenant."""
    import shutil
    from datetime import datetime, timezone

    from kernels.layout import CF_DIM
    from server.store import DataDir

    expected_metric = INDEX_METRICS.get(kind)
    if expected_metric is None:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(INDEX_METRICS)}")
    try:
        meta = Index.metadata(source)
    except (ValueError, RuntimeError) as exc:  # e.g. "Not a dense USearch index!"
        raise ValueError(f"the file is not a USearch index ({exc})") from None
    if meta is None:
        raise ValueError("the file is not a USearch index")
    if int(meta["dimensions"]) != CF_DIM:
        raise ValueError(f"the file holds {meta['dimensions']}-d vectors; the tenant's {kind} vectors are {CF_DIM}-d")
    metric = str(meta["kind_metric"].name).lower()
    if metric != expected_metric:
        raise ValueError(f"the file uses the {metric} metric; the {kind} index must use {expected_metric}")
    with store.snapshot() as snap:
        n_items = int(store.get_state(snap.txn, tenant, "n_items", 0))
    if n_items == 0:
        raise ValueError(f"tenant {tenant!r} has no catalog")
    view = Index.restore(source, view=True)
    keys = np.asarray(view.keys, dtype=np.int64) if len(view) else np.empty(0, dtype=np.int64)
    if keys.size and int(keys.max()) >= n_items:
        raise ValueError(f"the file has key {int(keys.max())}, outside the tenant's {n_items} items")
    del view
    version = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-published"
    data = DataDir(data_dir)
    data.ensure(tenant)
    target = data.index(tenant, kind, version)
    tmp = f"{target}.tmp-{os.getpid()}"
    shutil.copyfile(source, tmp)
    os.link(tmp, target)  # never replaces an existing file
    os.unlink(tmp)
    with store.write() as txn:
        return publish_index(store, txn, tenant, kind, target, version, CF_DIM, expected_metric)
