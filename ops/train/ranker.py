"""The learned rankers, and the offline copy of serving's candidate funnel they learn from.

:class:`OfflineFunnel` is what serving would know after a history: item rows
(ops.features.item_base_rows + ALS item embeddings), user values
(ops.features.user_values_from_history + ALS user embeddings), the precomputed
lists (ops.features.item_lists) and content vectors, decayed with the tenant's
half-lives (ops.features.HalfLives) as ``funnel load`` and the ingest worker do. Its candidates follow
server/pipeline/default.py: CF top 500 by dot product, content top 300 around
the mean vector of the user's 5 most recent items, trending (33 per top-3
affinity category + the tenant list, 200 in all, strength 1 -> 0.5 by rank),
the newest 100 (tenant-boosted items are not modelled); merged with the
per-source strengths max-pooled into the source signals; inactive and
already-seen items dropped; features assembled by
kernels.features.assemble_features. Retrieval is exact here where serving uses
the ANN indexes.

Training without leakage (:func:`train_rankers`): the given history is split
per user in time (ops.interactions.Interactions.temporal_split) into a prefix
and a label window. Everything the features see is built from the prefix
alone; a candidate's label is whether the user interacted with it in the label
window. The pre-ranker (L2 logistic regression) learns from every candidate;
the ranker (MLP 12-32-16-1, Adam, binary cross-entropy) learns from the
pre-ranker's top PRERANK_KEEP per user, as it sees them in serving, and stops
early on Recall@20 of held-out users. Feature standardisation is folded into
the exported weights, so the ONNX models take raw feature rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kernels.features import assemble_features
from kernels.layout import (
    CF_DIM,
    CHUNK_ROWS,
    CHUNK_ROWS_LOG2,
    ITEM_ACTIVE,
    ITEM_CF,
    ITEM_WIDTH,
    MAX_CATEGORIES,
    N_FEATURES,
    N_SOURCE_SIGNALS,
    SIGNAL_CF,
    SIGNAL_CONTENT,
    SIGNAL_TRENDING,
    USER_AFFINITY,
    USER_CF,
    USER_HAS_CF,
    USER_WIDTH,
)
from ops.catalog import Catalog
from ops.features import HalfLives, item_base_rows, item_lists, user_values_from_history
from ops.interactions import Interactions
from ops.train.als import AlsParams, train_als
from server.models.onnx_build import linear_model, mlp_model
from server.store import user_recent_items

# serving's funnel (server/pipeline/default.py and its sources)
CF_K = 500
CONTENT_K = 300
CONTENT_SEEDS = 5
TRENDING_K = 200
TOP_CATEGORIES = 3
NEW_K = 100
PRERANK_KEEP = 300

LABEL_FRACTION = 0.2        # share of each user's training history that becomes labels
MAX_TRAIN_USERS = 20_000    # users sampled for ranker training (bounds time on big tenants)
VALIDATION_SHARE = 0.1      # of those, held out for early stopping
NEGATIVES_PER_USER = 100    # negatives sampled per user for training rows; all positives kept
USER_BATCH = 256


@dataclass
class OfflineFunnel:
    """Serving's view of a tenant after ``history`` (see the module docstring)."""

    history: Interactions
    now_ts: int
    half_life_days: float
    item_rows: np.ndarray       # float32[n_items, ITEM_WIDTH], CF columns filled
    user_values: list           # bytearray per history.user_ids entry, CF filled
    user_factors: np.ndarray    # float32[n_users, CF_DIM]
    item_factors: np.ndarray    # float32[n_items, CF_DIM]
    lists: dict
    content: np.ndarray         # float32[n_items, CF_DIM], unit length or zero
    seen_ptr: np.ndarray = field(init=False)    # CSR of each user's distinct history items
    seen_items: np.ndarray = field(init=False)
    chunks: np.ndarray = field(init=False)      # item rows in the store's chunk layout
    chunk_addrs: np.ndarray = field(init=False)

    def __post_init__(self):
        n_items = self.item_rows.shape[0]
        pairs = np.unique(self.history.user.astype(np.int64) * n_items + self.history.item)
        self.seen_items = (pairs % n_items).astype(np.int64)
        self.seen_ptr = np.zeros(self.history.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs // n_items, minlength=self.history.n_users), out=self.seen_ptr[1:])
        n_chunks = max(1, (n_items + CHUNK_ROWS - 1) >> CHUNK_ROWS_LOG2)
        self.chunks = np.zeros((n_chunks, CHUNK_ROWS, ITEM_WIDTH), dtype=np.float32)
        self.chunks.reshape(-1, ITEM_WIDTH)[:n_items] = self.item_rows
        self.chunk_addrs = np.array([c.ctypes.data for c in self.chunks], dtype=np.int64)
        self._active = np.flatnonzero(self.item_rows[:, ITEM_ACTIVE] == 1.0)
        self._with_content = np.flatnonzero(np.abs(self.content).sum(axis=1) > 0)
        self._mark = np.zeros(n_items, dtype=bool)

    def seen(self, user: int) -> np.ndarray:
        return self.seen_items[self.seen_ptr[user]:self.seen_ptr[user + 1]]

    def user_row(self, user: int) -> np.ndarray:
        return np.frombuffer(self.user_values[user], dtype=np.float32, count=USER_WIDTH)

    def affinity(self, user: int) -> np.ndarray:
        raw = self.user_row(user)[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
        total = float(raw.sum())
        return (raw / total).astype(np.float32) if total > 0 else np.zeros(MAX_CATEGORIES, dtype=np.float32)

    def candidates(self, users: np.ndarray):
        """Yield (user, items int64[n], features float32[n, N_FEATURES]) per user, in order."""
        for lo in range(0, len(users), USER_BATCH):
            batch = np.asarray(users[lo:lo + USER_BATCH], dtype=np.int64)
            cf = self._top(self.user_factors[batch], self.item_factors, self._active, CF_K)
            seeds = [user_recent_items(self.user_values[u], CONTENT_SEEDS).astype(np.int64) for u in batch]
            queries = np.stack([self.content[s].mean(axis=0) if s.size else np.zeros(CF_DIM, np.float32)
                                for s in seeds])
            norms = np.linalg.norm(queries, axis=1, keepdims=True)
            queries = np.divide(queries, norms, out=np.zeros_like(queries), where=norms > 0)
            content, content_sim = self._top(queries, self.content, self._with_content, CONTENT_K, with_scores=True)
            for j, u in enumerate(batch):
                has_cf = self.user_row(u)[USER_HAS_CF] == 1.0
                has_content = norms[j, 0] > 0
                items, signals = self._merge(
                    cf[j] if has_cf else None,
                    (content[j], np.clip(content_sim[j], 0.0, 1.0)) if has_content else None,
                    self._trending(u))
                items, signals = self._filter(u, items, signals)
                features = np.empty((items.shape[0], N_FEATURES), dtype=np.float32)
                categories = np.empty(items.shape[0], dtype=np.int32)
                assemble_features(items, self.chunk_addrs, ITEM_WIDTH, self.user_row(u), self.affinity(u),
                                  signals, self.now_ts / 86400.0, self.half_life_days, features, categories)
                yield int(u), items, features

    @staticmethod
    def _top(queries, vectors, allowed, k, with_scores=False):
        """Per query row: the (up to) k allowed rows of ``vectors`` with the largest dot product."""
        k = min(k, allowed.size)
        if k == 0:
            empty = np.zeros((queries.shape[0], 0), dtype=np.int64)
            return (empty, empty.astype(np.float32)) if with_scores else empty
        scores = queries @ vectors[allowed].T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        items = allowed[np.take_along_axis(part, order, axis=1)]
        return (items, np.take_along_axis(top_scores, order, axis=1)) if with_scores else items

    def _trending(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        affinity = self.affinity(user)
        lists = []
        if affinity.any():
            per_category = TRENDING_K // (2 * TOP_CATEGORIES)
            lists += [self.lists[f"trending:{c}"][:per_category]
                      for c in np.argsort(-affinity, kind="stable")[:TOP_CATEGORIES] if affinity[c] > 0]
        lists.append(self.lists["trending"][:TRENDING_K - sum(map(len, lists))])
        strength = [np.linspace(1.0, 0.5, len(x), dtype=np.float32) for x in lists]
        return np.concatenate(lists).astype(np.int64), np.concatenate(strength)

    def _merge(self, cf, content, trending):
        parts = [(self.lists["new"][:NEW_K].astype(np.int64), None, None)]
        if cf is not None:
            parts.append((cf, np.ones(cf.shape[0], dtype=np.float32), SIGNAL_CF))
        if content is not None:
            parts.append((content[0], content[1].astype(np.float32), SIGNAL_CONTENT))
        parts.append((trending[0], trending[1], SIGNAL_TRENDING))
        items, inverse = np.unique(np.concatenate([p[0] for p in parts]), return_inverse=True)
        signals = np.zeros((items.shape[0], N_SOURCE_SIGNALS), dtype=np.float32)
        offset = 0
        for part_items, strength, signal in parts:
            where = inverse[offset:offset + part_items.shape[0]]
            offset += part_items.shape[0]
            if signal is not None:
                np.maximum.at(signals[:, signal], where, strength)
        return items, signals

    def _filter(self, user, items, signals):
        seen = self.seen(user)
        self._mark[seen] = True
        keep = ~self._mark[items] & (self.item_rows[items, ITEM_ACTIVE] == 1.0)
        self._mark[seen] = False
        return items[keep], np.ascontiguousarray(signals[keep])


def build_funnel(catalog: Catalog, history: Interactions, now_ts: int, content: np.ndarray,
                 half_life_days: float, als: AlsParams = AlsParams(), progress: bool = False,
                 half_lives: HalfLives = HalfLives()) -> OfflineFunnel:
    """Everything serving would know after ``history`` (rows after ``now_ts`` ignored).
    ``half_life_days``: the item recency half-life; ``half_lives``: the tenant's feature decay."""
    history = history.subset(history.ts <= now_ts)
    rows = item_base_rows(catalog, history, now_ts)
    user_factors, item_factors = train_als(history.user, history.item, history.weight,
                                           history.n_users, len(catalog), als, progress)
    rows[:, ITEM_CF:ITEM_CF + CF_DIM] = item_factors
    values = user_values_from_history(history, rows, now_ts, half_lives.affinity_days)
    has_history = np.bincount(history.user, minlength=history.n_users) > 0
    for u in np.flatnonzero(has_history):
        row = np.frombuffer(values[u], dtype=np.float32, count=USER_WIDTH)
        row[USER_CF:USER_CF + CF_DIM] = user_factors[u]
        row[USER_HAS_CF] = 1.0
    return OfflineFunnel(history, now_ts, half_life_days, rows, values, user_factors, item_factors,
                         item_lists(rows, history, now_ts, half_lives.trending_days, half_lives.affinity_days),
                         content)


# ------------------------------------------------------------------ models
@dataclass
class Rankers:
    """Exported models and what training measured (validation users)."""

    prerank: bytes
    rank: bytes
    metrics: dict


def _standardizer(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X.mean(axis=0)
    sigma = X.std(axis=0)
    return mu, np.where(sigma > 1e-6, sigma, 1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 25) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method on standardised
    features; returns (weights, bias) for raw features: p = sigmoid(X @ w + b)."""
    mu, sigma = _standardizer(X)
    Z = np.hstack([(X - mu) / sigma, np.ones((X.shape[0], 1))])
    theta = np.zeros(Z.shape[1])
    penalty = np.full(Z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = _sigmoid(Z @ theta)
        grad = Z.T @ (p - y) + penalty * theta
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    w = theta[:-1] / sigma
    return w.astype(np.float32), float(theta[-1] - w @ mu)


def _mlp_forward(params: list, X: np.ndarray) -> list:
    """Activations [X, h1, ..., logits] of the MLP params = [W0, b0, W1, b1, ...]."""
    acts = [X]
    n_layers = len(params) // 2
    for k in range(n_layers):
        h = acts[-1] @ params[2 * k] + params[2 * k + 1]
        acts.append(np.maximum(h, 0.0) if k < n_layers - 1 else h)
    return acts


def _mlp_grads(params: list, X: np.ndarray, y: np.ndarray, weight_decay: float) -> list:
    """Gradients of mean binary cross-entropy (+ L2 on weights) w.r.t. params."""
    acts = _mlp_forward(params, X)
    delta = ((_sigmoid(acts[-1][:, 0]) - y) / y.size)[:, None]  # d loss / d logit
    grads = [None] * len(params)
    for k in range(len(params) // 2 - 1, -1, -1):
        W = params[2 * k]
        grads[2 * k] = acts[k].T @ delta + weight_decay * W
        grads[2 * k + 1] = delta.sum(axis=0)
        if k > 0:
            delta = (delta @ np.ascontiguousarray(W.T)) * (acts[k] > 0)
    return grads


def fit_mlp(X: np.ndarray, y: np.ndarray, val: tuple, hidden=(32, 16), lr: float = 2e-3,
            weight_decay: float = 1e-5, batch: int = 512, max_epochs: int = 40, patience: int = 4,
            seed: int = 0) -> tuple[list, dict]:
    """MLP with ReLU hidden layers and one logit, trained with Adam on binary
    cross-entropy over standardised features. ``val`` = (X_val, y_val, group_val,
    relevant_per_group) scores the model by mean Recall@20 (:func:`group_recall`) after every epoch;
    training stops after ``patience`` epochs without improvement and keeps the
    best epoch. Returns ([(W, b), ...] for raw features, {"val_recall@20", "epochs"})."""
    rng = np.random.default_rng(seed)
    mu, sigma = _standardizer(X)
    Xs = ((X - mu) / sigma).astype(np.float32)
    Xv = ((val[0] - mu) / sigma).astype(np.float32)
    y = y.astype(np.float32)
    sizes = (X.shape[1],) + tuple(hidden) + (1,)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):  # He initialisation
        params += [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32), np.zeros(b, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, eps, t = 0.9, 0.999, 1e-8, 0
    best, best_params, best_epoch, epochs = -1.0, params, 0, 0
    for epoch in range(max_epochs):
        epochs = epoch + 1
        order = rng.permutation(Xs.shape[0])
        for lo in range(0, order.size, batch):
            idx = order[lo:lo + batch]
            t += 1
            for p, g, m_, v_ in zip(params, _mlp_grads(params, Xs[idx], y[idx], weight_decay), m, v):
                m_ *= beta1
                m_ += (1 - beta1) * g
                v_ *= beta2
                v_ += (1 - beta2) * g * g
                p -= lr * (m_ / (1 - beta1 ** t)) / (np.sqrt(v_ / (1 - beta2 ** t)) + eps)
        score = group_recall(_mlp_forward(params, Xv)[-1][:, 0], val[1], val[2], val[3], 20)
        if score > best:
            best, best_params, best_epoch = score, [p.copy() for p in params], epoch
        elif epoch - best_epoch >= patience:
            break
    W0, b0 = best_params[0], best_params[1]
    # fold the standardisation into the first layer: ((x - mu) / sigma) W + b
    layers = [((W0 / sigma[:, None].astype(np.float32)), (b0 - (mu / sigma) @ W0).astype(np.float32))]
    layers += list(zip(best_params[2::2], best_params[3::2]))
    return layers, {"val_recall@20": round(float(best), 5), "epochs": epochs}


def group_recall(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray, totals: np.ndarray, k: int) -> float:
    """Mean over groups 0..len(totals)-1 of (positives among the group's k best
    scores) / totals[group]; ``totals`` counts each group's relevant items, found or not."""
    order = np.lexsort((-scores, groups))
    g = groups[order]
    starts = np.searchsorted(g, np.arange(totals.size))
    rank = np.arange(g.size) - starts[g]
    hits = np.bincount(g, weights=(labels[order] > 0) & (rank < k), minlength=totals.size)
    return float(np.mean(hits / totals))


def _sample(labels: np.ndarray, negatives: int, rng) -> np.ndarray:
    """Positions of every positive and of up to ``negatives`` random negatives, ascending."""
    neg = np.flatnonzero(labels == 0)
    if neg.size > negatives:
        neg = rng.choice(neg, negatives, replace=False)
    return np.sort(np.concatenate([np.flatnonzero(labels > 0), neg]))


def train_rankers(catalog: Catalog, history: Interactions, content: np.ndarray, half_life_days: float,
                  seed: int = 0, als: AlsParams = AlsParams(), progress: bool = False,
                  half_lives: HalfLives = HalfLives()) -> Rankers:
    """Learn the pre-ranker and the ranker from ``history`` alone (see the module docstring)."""
    started = time.perf_counter()
    prefix, window = history.temporal_split(LABEL_FRACTION)
    funnel = build_funnel(catalog, prefix, int(prefix.ts.max()), content, half_life_days, als, progress,
                          half_lives)
    n_items = len(catalog)
    # labels: window items the user had not seen in the prefix (seen items are never candidates)
    pairs = np.unique(window.user.astype(np.int64) * n_items + window.item)
    pairs = pairs[~np.isin(pairs, funnel.history.user.astype(np.int64) * n_items + funnel.history.item)]
    label_ptr = np.zeros(history.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // n_items, minlength=history.n_users), out=label_ptr[1:])
    label_items = pairs % n_items

    rng = np.random.default_rng(seed)
    users = np.flatnonzero(np.diff(label_ptr) > 0)
    if users.size > MAX_TRAIN_USERS:
        users = np.sort(rng.choice(users, MAX_TRAIN_USERS, replace=False))
    is_val = rng.random(users.size) < VALIDATION_SHARE
    if is_val.all() or not is_val.any():
        raise ValueError(f"too little history to train rankers ({users.size} users with labels)")
    fit_users, val_users = users[~is_val], users[is_val]

    def labelled(which, desc):
        # candidates are regenerated per pass: keeping every user's full matrix costs too much memory
        stream = funnel.candidates(which)
        if progress:
            from tqdm import tqdm

            stream = tqdm(stream, total=which.size, desc=desc, unit="user", leave=False)
        for u, items, X in stream:
            yield X, np.isin(items, label_items[label_ptr[u]:label_ptr[u + 1]]).astype(np.float32)

    # pass 1, pre-ranker: every positive and sampled negatives of each training user's candidates
    Xs, ys = [], []
    for X, y in labelled(fit_users, "prerank data"):
        k = _sample(y, NEGATIVES_PER_USER, rng)
        Xs.append(X[k])
        ys.append(y[k])
    w, b = fit_logistic(np.concatenate(Xs), np.concatenate(ys))

    # pass 2, ranker: only the pre-ranker's best PRERANK_KEEP per user, as serving scores them
    Xs, ys, Xv, yv, gv, pre_hits, found = [], [], [], [], [], 0.0, 0.0
    for j, (X, y) in enumerate(labelled(np.concatenate([fit_users, val_users]), "rank data")):
        found += y.sum()
        keep = np.argsort(-(X @ w + b), kind="stable")[:PRERANK_KEEP]
        if j < fit_users.size:
            k = keep[_sample(y[keep], NEGATIVES_PER_USER, rng)]
            Xs.append(X[k])
            ys.append(y[k])
        else:
            g = j - fit_users.size
            Xv.append(X[keep])
            yv.append(y[keep])
            gv.append(np.full(keep.size, g, dtype=np.int64))
            pre_hits += y[keep[:20]].sum() / np.diff(label_ptr)[val_users[g]]
    val_totals = np.diff(label_ptr)[val_users].astype(np.float64)
    layers, mlp_metrics = fit_mlp(np.concatenate(Xs), np.concatenate(ys),
                                  (np.concatenate(Xv), np.concatenate(yv), np.concatenate(gv), val_totals), seed=seed)
    metrics = {
        "train_users": int(fit_users.size),
        "val_users": int(val_users.size),
        "label_coverage": round(float(found / np.diff(label_ptr)[users].sum()), 4),
        "prerank_val_recall@20": round(float(pre_hits / val_users.size), 5),
        "rank_val_recall@20": mlp_metrics["val_recall@20"],
        "rank_epochs": mlp_metrics["epochs"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    return Rankers(linear_model(w, b), mlp_model(layers), metrics)
