"""``funnel train``: offline learning and index building for one tenant.

:func:`train_tenant` reads what ``funnel load`` wrote (ops/load.py) and

1. evaluates on a per-user temporal holdout (ops.train.evaluate: popularity,
   CF-only and the full funnel; Recall@20 and NDCG@10);
2. trains for serving on the full history: ALS (ops.train.als) embeddings for
   every item row and every user in the history, the "cf" index (inner product
   over the embeddings of active items with history) and the "content" index
   (cosine over ops.train.content vectors of items with metadata), keyed by
   dense item index, and the pre-ranker and ranker
   (ops.train.ranker.train_rankers);
3. writes the index files (new versioned names) and the models
   (content-addressed), then switches everything in ONE LMDB write
   transaction: item CF columns, user CF columns (USER_HAS_CF = 1 for users in
   the history, 0 for every other user, whose embedding came from another
   factorisation), state ``index:cf``, ``index:content``, ``model:prerank``,
   ``model:rank`` (each model also registered in the model registry and noted as
   the "*" stable in its deploy record, server.models.deploy). Serving never sees
   embeddings from one run with indexes or models from another.

If the tenant's catalog changes while training runs (``catalog_gen`` moved, e.g.
by a reload or an item upsert; the ingest worker's counter roll-ups do not count),
the switch is refused with RuntimeError and nothing is published
(the new index files stay behind, unreferenced); train again.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from indexes.ann import build_index, publish_index
from kernels.layout import CF_DIM, FEATURES, ITEM_ACTIVE, ITEM_CF, USER_CF, USER_HAS_CF
from ops.catalog import Catalog
from ops.interactions import Interactions
from ops.train.als import AlsParams, train_als
from ops.train.content import content_vectors
from ops.train.evaluate import Evaluation, evaluate
from ops.train.ranker import train_rankers
from server.events.erasure import without_erased
from server.models.deploy import record_publish
from server.models.onnx_build import model_sha256
from server.models.registry import ModelRegistry, validate_model, write_content_addressed
from server.runtime import DEFAULT_RECENCY_HALF_LIFE_DAYS
from server.store import DataDir, LmdbStore, user_row_view
from server.tenancy import TenantRegistry
from server.store.lmdb_store import idx_key


@dataclass
class TrainReport:
    """What a training run measured and published (pointers as written to the state db)."""

    tenant: str
    items: int
    users: int
    interactions: int
    evaluation: Evaluation | None   # None when trained with evaluate=False
    indexes: dict
    models: dict
    timings: dict = field(default_factory=dict)   # stage -> seconds
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [f"trained tenant {self.tenant!r} in {self.seconds:.1f}s: {self.items} items, "
                 f"{self.users} users, {self.interactions} interactions"]
        if self.evaluation is not None:
            lines += ["offline evaluation (per-user temporal holdout, last 20% of each user's history):",
                      self.evaluation.table()]
        else:
            lines.append("offline evaluation skipped (--no-eval)")
        for name, p in self.indexes.items():
            lines.append(f"index {name}: {p['count']} vectors ({p['metric']}) -> {p['path']}")
        for name, p in self.models.items():
            lines.append(f"model {name}: {p['kind']} {p['sha256'][:12]} -> {p['path']}")
        lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def catalog_from_store(store: LmdbStore, txn, tenant: str, item_rows: np.ndarray) -> Catalog:
    """The tenant's catalog in dense-index order, rebuilt from ``item_meta`` (as
    ops.load writes it) with ACTIVE taken from the item rows."""
    metas = []
    for index in range(item_rows.shape[0]):
        meta = store.get_json(txn, "item_meta", idx_key(tenant, index))
        if meta is None:
            raise ValueError(f"tenant {tenant!r}: item {index} has no metadata; reload the catalog")
        metas.append(meta)
    return Catalog(
        item_ids=[m["id"] for m in metas],
        titles=[m.get("title", "") for m in metas],
        categories=[list(m.get("categories", [])) for m in metas],
        maturity=[m.get("maturity_rating") for m in metas],
        created_ts=np.array([m.get("created_ts", 0) for m in metas], dtype=np.int64),
        active=item_rows[:, ITEM_ACTIVE] == 1.0,
        sponsored=np.array([bool(m.get("sponsored", False)) for m in metas]),
        editorial=np.array([m.get("editorial_boost", 0.0) for m in metas], dtype=np.float32),
        category_order=store.get_state(txn, tenant, "categories", []) or [],
    )


def _version(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + digest.hexdigest()[:8]


def train_tenant(data_dir: str, tenant: str, seed: int = 0, progress: bool = True,
                 run_evaluation: bool = True) -> TrainReport:
    """Evaluate, train and publish for ``tenant`` of ``data_dir`` (module docstring).
    Raises ValueError when the tenant has no catalog or too little history."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mark = [started]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - mark[0]
        mark[0] = now

    data = DataDir(data_dir)
    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            txn = snap.txn
            n_items = int(store.get_state(txn, tenant, "n_items", 0))
            if n_items == 0:
                raise ValueError(f"tenant {tenant!r} has no catalog; run funnel load first")
            catalog_gen = store.get_state(txn, tenant, "catalog_gen", 0)
            half_life = float(store.get_state(txn, tenant, "recency_half_life_days", DEFAULT_RECENCY_HALF_LIFE_DAYS))
            half_lives = TenantRegistry(store).half_lives(txn, tenant)  # as funnel load used them
            catalog = catalog_from_store(store, txn, tenant, store.read_item_rows(txn, tenant, n_items))
        history = Interactions.load(data.interactions(tenant))
        with store.snapshot() as snap:  # erasures since the history was saved
            history = without_erased(snap.txn, store, tenant, history)
        if len(history) == 0:
            raise ValueError(f"tenant {tenant!r} has no interaction history to train on")
        content = content_vectors(catalog.titles, catalog.categories, catalog.created_ts, CF_DIM, seed)
        lap("content")
        als = AlsParams(seed=seed)
        evaluation = (evaluate(catalog, history, content, half_life, seed, als, progress, half_lives)
                      if run_evaluation else None)
        lap("evaluate")

        user_factors, item_factors = train_als(history.user, history.item, history.weight,
                                               history.n_users, n_items, als, progress)
        lap("als")
        rankers = train_rankers(catalog, history, content, half_life, seed, als, progress, half_lives)
        lap("rankers")

        data.ensure(tenant)
        cf_keys = np.flatnonzero(catalog.active & (np.abs(item_factors).sum(axis=1) > 0))
        content_keys = np.flatnonzero(np.abs(content).sum(axis=1) > 0)
        version = _version(item_factors, content)
        cf_path = data.index(tenant, "cf", version)
        content_path = data.index(tenant, "content", version)
        # inner-product HNSW needs a denser graph for good recall at serving's k=500 (0.84 -> 0.93 mean)
        build_index(item_factors[cf_keys], cf_keys, "ip", cf_path, connectivity=32, expansion_add=256)
        build_index(content[content_keys], content_keys, "cos", content_path)
        lap("indexes")

        trained_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        offline = evaluation.metrics["funnel"] if evaluation is not None else {}
        model_pointers, model_records = {}, {}
        models = ModelRegistry(store, data_dir)
        for name, kind, blob, metrics in (
                ("prerank", "linear", rankers.prerank,
                 {"val_recall@20": rankers.metrics["prerank_val_recall@20"]}),
                ("rank", "mlp", rankers.rank,
                 {"val_recall@20": rankers.metrics["rank_val_recall@20"],
                  **({"offline_recall@20": offline["recall@20"], "offline_ndcg@10": offline["ndcg@10"]}
                     if offline else {})})):
            sha = model_sha256(blob)
            path = data.model(tenant, sha)
            validate_model(blob, name, FEATURES)  # the registry's checks: never publish a model it would refuse
            write_content_addressed(path, blob)
            model_records[name] = models.new_record(tenant, name, blob, FEATURES, "funnel train",
                                                    dict(metrics, architecture=kind))
            model_pointers[name] = {"sha256": sha, "path": os.path.relpath(path, data_dir), "features": list(FEATURES),
                                    "kind": kind, "trained_at": trained_at,
                                    "metrics": dict(metrics, train_users=rankers.metrics["train_users"])}

        in_history = np.bincount(history.user, minlength=history.n_users) > 0
        row_of = {uid: u for u, uid in enumerate(history.user_ids.tolist()) if in_history[u]}
        with store.write() as txn:
            if store.get_state(txn, tenant, "catalog_gen", 0) != catalog_gen:
                raise RuntimeError(f"tenant {tenant!r}: items changed while training; nothing published, train again")
            rows = store.read_item_rows(txn, tenant, n_items)
            rows[:, ITEM_CF:ITEM_CF + CF_DIM] = item_factors
            store.put_item_rows(txn, tenant, rows)
            for user_id in [user_id for user_id, _ in store.iter_users(txn, tenant)]:
                u = row_of.get(user_id)
                value = store.get_user_copy(txn, tenant, user_id)
                row = user_row_view(value)
                if u is not None:
                    row[USER_CF:USER_CF + CF_DIM] = user_factors[u]
                    row[USER_HAS_CF] = 1.0
                elif row[USER_HAS_CF] != 0.0:
                    row[USER_HAS_CF] = 0.0
                else:
                    continue
                store.put_user(txn, tenant, user_id, value)
            index_pointers = {
                "cf": publish_index(store, txn, tenant, "cf", cf_path, version, CF_DIM, "ip"),
                "content": publish_index(store, txn, tenant, "content", content_path, version, CF_DIM, "cos"),
            }
            for name, pointer in model_pointers.items():  # registered, then published as the "*" stable
                models.put(txn, tenant, model_records[name])
                record_publish(store, txn, tenant, name, pointer, "funnel train", f"trained at {trained_at}")
        lap("publish")
    finally:
        store.close()
    return TrainReport(tenant, n_items, int(in_history.sum()), len(history), evaluation, index_pointers,
                       model_pointers, timings, time.perf_counter() - started)
