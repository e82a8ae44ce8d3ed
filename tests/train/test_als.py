import numpy as np

from ops.train.als import AlsParams, train_als


def planted(n_groups=4, items_per_group=50, users_per_group=50, per_user=10, seed=0):
    """Taste groups: the users of group g consume only items of group g. One extra
    user and one extra item without any interaction."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for g in range(n_groups):
        for k in range(users_per_group):
            chosen = rng.choice(items_per_group, per_user, replace=False)
            users += [g * users_per_group + k] * per_user
            items += list(g * items_per_group + chosen)
    return (np.array(users), np.array(items), np.ones(len(users), dtype=np.float32),
            n_groups * users_per_group + 1, n_groups * items_per_group + 1)


def test_ranks_co_consumed_items_above_unrelated_ones():
    users, items, weights, n_users, n_items = planted()
    # one factor per planted group: every user's unseen group items outrank every other group's
    U, V = train_als(users, items, weights, n_users, n_items, AlsParams(factors=4))
    for u in range(n_users - 1):
        scores = V @ U[u]
        group = u // 50
        seen = items[users == u]
        unseen_own = np.setdiff1d(np.arange(group * 50, group * 50 + 50), seen)
        others = np.setdiff1d(np.arange(n_items - 1), np.arange(group * 50, group * 50 + 50))
        assert scores[unseen_own].min() > scores[others].max()


def test_default_factors_recommend_within_the_group():
    users, items, weights, n_users, n_items = planted()
    U, V = train_als(users, items, weights, n_users, n_items)
    assert U.shape == (n_users, 32) and V.shape == (n_items, 32) and U.dtype == V.dtype == np.float32
    scores = U[:-1] @ V.T
    scores[users, items] = -np.inf
    top = np.argsort(-scores, axis=1)[:, :10]
    in_group = (top // 50) == (np.arange(n_users - 1) // 50)[:, None]
    assert in_group.all(axis=1).mean() >= 0.95


def test_rows_without_interactions_get_zero_vectors_and_runs_are_deterministic():
    users, items, weights, n_users, n_items = planted()
    U1, V1 = train_als(users, items, weights, n_users, n_items, AlsParams(iterations=3, seed=5))
    U2, V2 = train_als(users, items, weights, n_users, n_items, AlsParams(iterations=3, seed=5))
    assert np.array_equal(U1, U2) and np.array_equal(V1, V2)
    assert not V1[-1].any() and not U1[-1].any()


def test_repeated_pairs_add_up():
    # one pair given twice with weight 0.5 equals it given once with weight 1
    u = np.array([0, 0, 1, 1, 1])
    i = np.array([0, 0, 1, 2, 0])
    split = train_als(u, i, np.array([0.5, 0.5, 1, 1, 1], np.float32), 2, 3, AlsParams(iterations=4))
    merged = train_als(u[1:], i[1:], np.array([1, 1, 1, 1], np.float32), 2, 3, AlsParams(iterations=4))
    np.testing.assert_allclose(split[0], merged[0], atol=1e-5)
    np.testing.assert_allclose(split[1], merged[1], atol=1e-5)


def test_rejects_out_of_range_indices():
    import pytest

    with pytest.raises(ValueError):
        train_als(np.array([0, 3]), np.array([0, 1]), np.ones(2, np.float32), 3, 2)
