"""Offline evaluation on a per-user temporal holdout.

The history is split with ``Interactions.temporal_split(HOLDOUT_FRACTION)``:
each user's latest 20% of interactions are the test window. Everything a model
uses — ALS, item and user features, lists, the rankers (trained by
ops.train.ranker.train_rankers on the training part alone, split again) — is
built from the training part only. A user's relevant set is their test-window
items they had not interacted with in training (seen items are never
recommended); users without any are skipped.

Models, each recommending 20 active, unseen items:

* ``popularity``: most interactions in training;
* ``cf``: ALS dot product over every item;
* ``funnel``: the serving funnel (ops.train.ranker.OfflineFunnel candidates ->
  pre-ranker over all -> ranker over the best PRERANK_KEEP), scored by the
  exported ONNX models in onnxruntime.

Recall@20 = |top 20 ∩ relevant| / |relevant|; NDCG@10 with binary gains and
the ideal ranking of min(|relevant|, 10) hits; both averaged over users.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from kernels.layout import ITEM_ACTIVE
from ops.catalog import Catalog
from ops.features import HalfLives
from ops.interactions import Interactions
from ops.train.als import AlsParams
from ops.train.ranker import PRERANK_KEEP, build_funnel, train_rankers

HOLDOUT_FRACTION = 0.2
MAX_EVAL_USERS = 10_000    # test users sampled beyond this (bounds time on big tenants)
K_RECALL, K_NDCG = 20, 10
TOP_N = max(K_RECALL, K_NDCG)
MODELS = ("popularity", "cf", "funnel")
_DCG = 1.0 / np.log2(np.arange(K_NDCG) + 2.0)


@dataclass
class Evaluation:
    """Per-model metrics (``metrics[model]["recall@20" | "ndcg@10"]``) and context."""

    metrics: dict
    users: int
    candidate_recall: float     # share of relevant items among the funnel's filtered candidates
    rankers: dict               # ops.train.ranker.Rankers.metrics of the evaluated rankers
    seconds: float

    def table(self) -> str:
        lines = [f"{'model':<12}{'Recall@20':>11}{'NDCG@10':>10}"]
        lines += [f"{m:<12}{self.metrics[m]['recall@20']:>11.4f}{self.metrics[m]['ndcg@10']:>10.4f}"
                  for m in MODELS]
        lines.append(f"({self.users} test users; funnel candidates hold {self.candidate_recall:.1%} "
                     f"of the relevant items)")
        return "\n".join(lines)


def _session(model: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _score(top: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """(recall@20, ndcg@10) of one ranked list (best first) against a relevant set."""
    hit = np.isin(top[:TOP_N], relevant)
    recall = hit[:K_RECALL].sum() / relevant.size
    dcg = float((hit[:K_NDCG] * _DCG[:hit[:K_NDCG].size]).sum())
    return float(recall), dcg / float(_DCG[:min(relevant.size, K_NDCG)].sum())


def _rank_with(prerank, rank, features: np.ndarray) -> np.ndarray:
    """Positions of the TOP_N best rows as serving ranks them: pre-ranker over all,
    ranker over the pre-ranker's best PRERANK_KEEP."""
    if features.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    scores = prerank.run(None, {"features": features})[0]
    keep = _top(scores, PRERANK_KEEP)
    final = rank.run(None, {"features": np.ascontiguousarray(features[keep])})[0]
    return keep[_top(final, TOP_N)]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest scores, best first."""
    if scores.size > k:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]
    return np.argsort(-scores, kind="stable")


def evaluate(catalog: Catalog, history: Interactions, content: np.ndarray, half_life_days: float,
             seed: int = 0, als: AlsParams = AlsParams(), progress: bool = False,
             half_lives: HalfLives = HalfLives()) -> Evaluation:
    """Train every model on the training part of ``history`` and score it on the test window."""
    started = time.perf_counter()
    train, test = history.temporal_split(HOLDOUT_FRACTION)
    funnel = build_funnel(catalog, train, int(train.ts.max()), content, half_life_days, als, progress, half_lives)
    rankers = train_rankers(catalog, train, content, half_life_days, seed, als, progress, half_lives)
    n_items = len(catalog)

    pairs = np.unique(test.user.astype(np.int64) * n_items + test.item)
    users_of, items_of = pairs // n_items, pairs % n_items
    fresh = ~np.isin(pairs, funnel.history.user.astype(np.int64) * n_items + funnel.history.item)
    users_of, items_of = users_of[fresh], items_of[fresh]
    ptr = np.zeros(history.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users_of, minlength=history.n_users), out=ptr[1:])
    users = np.flatnonzero(np.diff(ptr) > 0)
    rng = np.random.default_rng(seed)
    if users.size > MAX_EVAL_USERS:
        users = np.sort(rng.choice(users, MAX_EVAL_USERS, replace=False))

    active = funnel.item_rows[:, ITEM_ACTIVE] == 1.0
    counts = np.bincount(funnel.history.item, minlength=n_items)
    candidates = np.flatnonzero(active)
    popular = candidates[np.lexsort((candidates, -counts[candidates]))]  # ties: lower index first
    prerank, rank = _session(rankers.prerank), _session(rankers.rank)
    totals = {m: np.zeros(2) for m in MODELS}
    found = relevant_total = 0
    stream = funnel.candidates(users)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=users.size, desc="evaluate", unit="user", leave=False)
    for u, items, features in stream:
        relevant = items_of[ptr[u]:ptr[u + 1]]
        seen = funnel.seen(u)
        top_pop = popular[:TOP_N + seen.size]
        totals["popularity"] += _score(top_pop[~np.isin(top_pop, seen)], relevant)
        cf = funnel.item_factors @ funnel.user_factors[u]
        cf[seen] = -np.inf
        cf[~active] = -np.inf
        top_cf = _top(cf, TOP_N)
        totals["cf"] += _score(top_cf[np.isfinite(cf[top_cf])], relevant)
        totals["funnel"] += _score(items[_rank_with(prerank, rank, features)], relevant)
        found += int(np.isin(relevant, items).sum())
        relevant_total += relevant.size
    n = max(users.size, 1)
    metrics = {m: {"recall@20": round(float(t[0] / n), 5), "ndcg@10": round(float(t[1] / n), 5)}
               for m, t in totals.items()}
    return Evaluation(metrics, int(users.size), found / max(relevant_total, 1), rankers.metrics,
                      time.perf_counter() - started)
