import numpy as np
import onnxruntime as ort

from kernels.layout import CHUNK_ROWS, CF_DIM, FEATURES, ITEM_ACTIVE, N_FEATURES
from ops.catalog import Catalog
from ops.interactions import Interactions
from ops.train.als import AlsParams
from ops.train.content import content_vectors
from ops.train.ranker import build_funnel, fit_logistic, fit_mlp, group_recall
from server.models.onnx_build import linear_model, mlp_model


def onnx_scores(model, X):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"features": X})[0]


def test_group_recall():
    scores = np.array([0.9, 0.1, 0.8, 0.5, 0.4])
    labels = np.array([0, 1, 1, 1, 0])
    groups = np.array([0, 0, 0, 1, 1])
    # group 0: top 1 is row 0 (miss) of 3 relevant; group 1: top 1 is row 3 (hit) of 1 relevant
    assert group_recall(scores, labels, groups, np.array([3.0, 1.0]), 1) == (0 + 1) / 2


def test_logistic_regression_recovers_signal_and_is_calibrated():
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((20_000, N_FEATURES)) * rng.uniform(0.1, 10, N_FEATURES) + 3).astype(np.float32)
    true_w = np.zeros(N_FEATURES)
    true_w[[0, 3]] = [1.5 / X[:, 0].std(), -2.0 / X[:, 3].std()]
    p = 1 / (1 + np.exp(-(X @ true_w - true_w @ X.mean(axis=0) - 2.0)))
    y = (rng.random(p.size) < p).astype(np.float32)
    w, b = fit_logistic(X, y)
    assert np.sign(w[0]) == 1 and np.sign(w[3]) == -1
    assert np.abs(w[[1, 2, 4]] * X[:, [1, 2, 4]].std(axis=0)).max() < 0.1
    predicted = onnx_scores(linear_model(w, b), X)
    np.testing.assert_allclose(predicted, X @ w + b, rtol=1e-4, atol=1e-4)
    assert abs((1 / (1 + np.exp(-predicted))).mean() - y.mean()) < 0.01


def test_exported_mlp_scores_raw_features_like_training_did():
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((6000, N_FEATURES)) * 5 + 10).astype(np.float32)
    y = ((X[:, 0] - 10) * (X[:, 1] - 10) > 30).astype(np.float32)  # rare, and needs a hidden layer
    groups = np.repeat(np.arange(60), 100)
    fit, val = groups < 50, groups >= 50
    totals = np.bincount(groups[val] - 50, weights=y[val])
    layers, metrics = fit_mlp(X[fit], y[fit], (X[val], y[val], groups[val] - 50, totals), batch=128, max_epochs=30)
    assert [W.shape for W, _ in layers] == [(N_FEATURES, 32), (32, 16), (16, 1)]
    scores = onnx_scores(mlp_model(layers), X[val])
    # the standardisation folded into the first layer reproduces the validation score exactly
    assert abs(group_recall(scores, y[val], groups[val] - 50, totals, 20) - metrics["val_recall@20"]) < 1e-4
    oracle = group_recall(y[val], y[val], groups[val] - 50, totals, 20)
    assert metrics["val_recall@20"] > 0.8 * oracle


def test_offline_funnel_candidates_across_chunks():
    rng = np.random.default_rng(2)
    n_items, n_users = CHUNK_ROWS + 500, 60
    catalog = Catalog(
        item_ids=[f"i{k}" for k in range(n_items)], titles=[f"title {k % 50}" for k in range(n_items)],
        categories=[[f"c{k % 7}"] for k in range(n_items)], maturity=["PG"] * n_items,
        created_ts=np.full(n_items, 1_500_000_000), active=np.arange(n_items) % 10 != 0,
        sponsored=np.zeros(n_items, bool), editorial=np.zeros(n_items, np.float32))
    # every user consumes items from both chunks
    user = np.repeat(np.arange(n_users), 12)
    item = np.where(rng.random(user.size) < 0.5, rng.integers(0, 400, user.size),
                    rng.integers(CHUNK_ROWS, n_items, user.size))
    ts = 1_600_000_000 + np.arange(user.size) * 60
    history = Interactions(np.array([f"u{u}" for u in range(n_users)]), user.astype(np.int32),
                           item.astype(np.int32), ts, np.full(user.size, 0.8, np.float32))
    content = content_vectors(catalog.titles, catalog.categories, catalog.created_ts)
    funnel = build_funnel(catalog, history, int(ts.max()), content, 365.0, AlsParams(iterations=3))
    assert funnel.chunks.shape[0] == 2
    for u, items, X in funnel.candidates(np.arange(0, n_users, 7)):
        assert X.shape == (items.size, N_FEATURES) and items.size > 0
        assert not np.isin(items, item[user == u]).any()
        assert (funnel.item_rows[items, ITEM_ACTIVE] == 1.0).all()
        assert (items >= CHUNK_ROWS).any()
        np.testing.assert_allclose(X[:, FEATURES.index("cf_score")],
                                   funnel.item_factors[items] @ funnel.user_factors[u], rtol=1e-4, atol=1e-5)
        from_cf = X[:, FEATURES.index("from_cf")]
        assert set(np.unique(from_cf)) <= {0.0, 1.0} and from_cf.sum() > 0
        for name in ("content_similarity", "trending_score"):
            assert (X[:, FEATURES.index(name)] >= 0).all() and (X[:, FEATURES.index(name)] <= 1).all()
    assert funnel.item_factors.shape == (n_items, CF_DIM)
