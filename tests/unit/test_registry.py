"""Model registry validation, deployments (canary, ramp, rollback, auto-rollback) and
canary assignment, on a real LMDB store and real ONNX Runtime sessions."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from kernels.layout import FEATURES, N_FEATURES
from server.models.canary import CanaryMonitor
from server.models.deploy import Deployer, DeployError, Guardrails, read, read_all
from server.models.onnx_build import linear_model
from server.models.registry import ModelRegistry, ModelRejected, probe_batch
from server.models.runtime import Scorer
from server.models.selection import BUCKETS, KindModels, SurfaceModels, canary_bucket
from server.store import LmdbStore
from server.tenancy import TenantConfig, TenantRegistry
from tests.model_builders import (
    good_model,
    nan_everywhere_model,
    saturated_affinity_model,
    two_output_columns_model,
)


@pytest.fixture
def store_dir(tmp_path):
    data_dir = str(tmp_path)
    store = LmdbStore.open(data_dir)
    TenantRegistry(store).put(TenantConfig(tenant_id="shop"))
    yield store, data_dir
    store.close()


def stored_models(store, data_dir):
    with store.snapshot() as snap:
        records = ModelRegistry(store, data_dir).list(snap.txn, "shop")
    files = os.listdir(os.path.join(data_dir, "tenants", "shop", "models")) \
        if os.path.isdir(os.path.join(data_dir, "tenants", "shop", "models")) else []
    return records, files


# ------------------------------------------------------------------ registry
def test_a_valid_model_is_registered_content_addressed_and_once(store_dir):
    store, data_dir = store_dir
    registry = ModelRegistry(store, data_dir)
    blob = good_model(1)
    record, created = registry.register("shop", "rank", blob, FEATURES, "alice", {"auc": 0.7})
    assert created and record.version == __import__("hashlib").sha256(blob).hexdigest()
    assert (record.kind, record.uploaded_by, record.metrics, record.size) == ("rank", "alice", {"auc": 0.7}, len(blob))
    with open(os.path.join(data_dir, record.path), "rb") as f:
        assert f.read() == blob
    again, created = registry.register("shop", "rank", blob, FEATURES, "bob")
    assert not created and again == record
    with store.snapshot() as snap:
        assert registry.get(snap.txn, "shop", record.version[:12]) == record   # unique prefix
        assert registry.get(snap.txn, "shop", record.version[:8]) is None      # too short to name it
        assert registry.get(snap.txn, "other", record.version) is None         # per tenant
    with pytest.raises(ModelRejected, match="registered as a rank model"):
        registry.register("shop", "prerank", blob)


@pytest.mark.parametrize("blob, features, kind, reason", [
    (linear_model(np.ones(N_FEATURES + 1, dtype=np.float32), 0.0), FEATURES, "rank", "width"),
    (good_model(1), FEATURES[:-1] + ("no_such_feature",), "rank", "unknown feature.*no_such_feature"),
    (good_model(1), FEATURES[:-1] + (FEATURES[0],), "rank", "distinct"),
    (nan_everywhere_model(), FEATURES, "rank", "probe: 264 of 264 scores are NaN"),
    (two_output_columns_model(), FEATURES, "rank", r"expected \[N\] or \[N, 1\]"),
    (b"\x08\x01garbage", FEATURES, "rank", "cannot be loaded"),
    (good_model(1), FEATURES, "reranker", "kind"),
    (b"", FEATURES, "rank", "no bytes"),
])
def test_invalid_models_are_refused_and_nothing_is_stored(store_dir, blob, features, kind, reason):
    store, data_dir = store_dir
    with pytest.raises(ModelRejected, match=reason):
        ModelRegistry(store, data_dir).register("shop", kind, blob, features)
    assert stored_models(store, data_dir) == ([], [])


def test_the_size_limit_is_checked_before_loading(store_dir, monkeypatch):
    store, data_dir = store_dir
    monkeypatch.setattr("server.models.registry.MAX_MODEL_BYTES", 100)
    with pytest.raises(ModelRejected, match="above the limit of 100"):
        ModelRegistry(store, data_dir).register("shop", "rank", good_model(1))


def test_a_model_over_a_subset_of_features_scores_its_own_columns():
    names = ("item_popularity", "cf_score")
    scorer = Scorer(linear_model(np.array([2.0, 10.0], dtype=np.float32), 0.5), "subset", names)
    x = np.random.default_rng(0).random((5, N_FEATURES), dtype=np.float32)
    expected = 2.0 * x[:, FEATURES.index("item_popularity")] + 10.0 * x[:, FEATURES.index("cf_score")] + 0.5
    np.testing.assert_allclose(scorer.score(x), expected, rtol=1e-5)


def test_the_probe_misses_a_model_that_breaks_only_at_affinity_one():
    """Why the auto-rollback test's canary passes registration: the probe samples
    category_affinity from [0, 1), real users reach exactly 1.0."""
    features = probe_batch(FEATURES)
    assert features[:, FEATURES.index("category_affinity")].max() < 1.0
    scorer = Scorer(saturated_affinity_model(), "sat")
    x = np.zeros((3, N_FEATURES), dtype=np.float32)
    x[:, FEATURES.index("category_affinity")] = [0.2, 1.0, 0.9]
    scores, nonfinite = scorer.score_counted(x)
    assert nonfinite == 1 and np.isfinite(scores).all()  # sunk to the floor, and counted


# --------------------------------------------------------------- deployments
@pytest.fixture
def deployer(store_dir):
    store, data_dir = store_dir
    registry = ModelRegistry(store, data_dir)
    versions = {name: registry.register("shop", kind, good_model(seed))[0].version
                for name, kind, seed in (("a", "rank", 1), ("b", "rank", 2), ("c", "rank", 3), ("p", "prerank", 4))}
    return Deployer(store, registry), store, versions


def test_deploy_ramp_promote_rollback_with_history(deployer):
    d, store, v = deployer
    d.deploy("shop", "*", "rank", v["a"], 100, actor="ann", reason="first")
    dep = d.deploy("shop", "*", "rank", v["b"][:12], 30, Guardrails(max_nan_rate=0.0, min_requests=5), "ann", "try b")
    assert (dep.stable, dep.canary, dep.canary_percent) == (v["a"], v["b"], 30.0)
    salt = dep.salt
    dep = d.ramp("shop", "*", "rank", 60, "bob", "looks fine")
    assert (dep.canary_percent, dep.salt) == (60.0, salt)  # ramping keeps every user's side
    dep = d.rollback("shop", "*", "rank", "bob", "changed my mind")
    assert (dep.stable, dep.canary) == (v["a"], None)
    d.deploy("shop", "*", "rank", v["c"], 10)
    dep = d.ramp("shop", "*", "rank", 100, "cat", "promote")
    assert (dep.stable, dep.canary) == (v["c"], None)
    with store.snapshot() as snap:  # "*" stable is the model:rank pointer serving reads
        assert store.get_state(snap.txn, "shop", "model:rank")["sha256"] == v["c"]
    dep = d.rollback("shop", "*", "rank", "cat", "c is worse")  # no canary: back to the previous stable
    assert dep.stable == v["a"]
    assert [(h["action"], h["actor"], h["reason"]) for h in dep.history] == [
        ("promote", "ann", "first"), ("canary", "ann", "try b"), ("ramp", "bob", "looks fine"),
        ("rollback", "bob", "changed my mind"), ("canary", "", ""), ("promote", "cat", "promote"),
        ("rollback", "cat", "c is worse")]
    with store.snapshot() as snap:
        assert store.get_state(snap.txn, "shop", "model:rank")["sha256"] == v["a"]


def test_deploy_errors_name_the_problem(deployer):
    d, store, v = deployer
    cases = [
        (dict(tenant="nope", kind="rank", version=v["a"]), "not_found", "tenant_id"),
        (dict(kind="rank", version="f" * 64), "not_found", "version"),
        (dict(kind="prerank", version=v["a"]), "precondition", "is a rank model"),
        (dict(kind="rank", version=v["a"], canary_percent=101), "invalid", "canary_percent"),
        (dict(kind="ranker", version=v["a"]), "invalid", "kind"),
        (dict(kind="rank", version=v["a"], guardrails=Guardrails(max_nan_rate=2.0)), "invalid", "max_nan_rate"),
    ]
    for kw, code, text in cases:
        kw = dict(dict(tenant="shop", surface="*", canary_percent=100.0), **kw)
        with pytest.raises(DeployError, match=text) as err:
            d.deploy(kw.pop("tenant"), kw.pop("surface"), kw.pop("kind"), kw.pop("version"), **kw)
        assert err.value.code == code
    with pytest.raises(DeployError, match="no rank canary") as err:
        d.ramp("shop", "*", "rank", 50)
    assert err.value.code == "precondition"
    TenantRegistry(store).put(TenantConfig(tenant_id="shop", linear_model_json='{"cf_score": 1.0}'))
    with pytest.raises(DeployError, match="linear_model_json") as err:
        d.deploy("shop", "*", "rank", v["a"], 100)
    assert err.value.code == "precondition"
    with store.snapshot() as snap:
        assert read_all(store, snap.txn, "shop") == []  # nothing was written by a refused call


def test_auto_rollback_is_idempotent_and_logged(deployer):
    d, store, v = deployer
    d.deploy("shop", "*", "rank", v["a"], 100)
    d.deploy("shop", "home", "rank", v["b"], 50, Guardrails(max_nan_rate=0.0))
    assert d.auto_rollback("shop", "rank", "home", v["b"], {"nan_rate": 0.5}, "nan rate 0.5 > 0")
    assert not d.auto_rollback("shop", "rank", "home", v["b"], {"nan_rate": 0.5}, "again")  # second process
    with store.snapshot() as snap:
        dep = read(store, snap.txn, "shop", "rank", "home")
    assert dep.canary is None and dep.stable is None  # home inherits the "*" stable again
    assert [h["action"] for h in dep.history] == ["canary", "auto-rollback"]
    assert dep.history[-1]["measured"] == {"nan_rate": 0.5} and dep.history[-1]["dropped"] == v["b"]


def test_every_change_bumps_the_deploy_generation(deployer):
    d, store, v = deployer

    def gen():
        with store.snapshot() as snap:
            return store.get_state(snap.txn, "shop", "deploy_gen", 0)

    before = gen()
    d.deploy("shop", "*", "rank", v["a"], 100)
    d.deploy("shop", "*", "rank", v["b"], 5)
    d.ramp("shop", "*", "rank", 6)
    d.rollback("shop", "*", "rank")
    assert gen() == before + 4


# ------------------------------------------------------- canary assignment
def test_canary_share_is_within_a_binomial_bound_and_sticky():
    n, p = 20_000, 0.30
    users = [f"user-{i}" for i in range(n)]
    models = KindModels(stable="S", canary="C", threshold=int(p * BUCKETS), salt="s1")
    on = np.array([models.use_canary(u) for u in users])
    assert abs(on.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert (np.array([models.use_canary(u) for u in users]) == on).all()        # sticky
    ramped = KindModels(stable="S", canary="C", threshold=int(0.6 * BUCKETS), salt="s1")
    assert all(ramped.use_canary(u) for u, c in zip(users, on) if c)            # ramp up keeps canary users
    other = KindModels(stable="S", canary="C", threshold=int(p * BUCKETS), salt="s2")
    assert (np.array([other.use_canary(u) for u in users]) != on).mean() > 0.3  # a new deploy reshuffles
    assert not models.use_canary("")                                            # anonymous: stable
    assert 0 <= canary_bucket("s", "u") < BUCKETS


class _FakeScorer:
    def __init__(self, version):
        self.version = version


def test_choices_are_prebuilt_and_an_override_replaces_the_ranker():
    stable, canary, override = _FakeScorer("s" * 12), _FakeScorer("c" * 12), _FakeScorer("o" * 12)
    prerank = KindModels(stable=_FakeScorer("p" * 12))
    surface = SurfaceModels(prerank, KindModels(stable=stable, canary=canary, threshold=BUCKETS, salt="x",
                                                watch=object()))
    choice = surface.choose("u1")
    assert choice.rank is canary and choice.canary and choice.version == "p" * 12 + "+" + "c" * 12
    assert surface.choose("u2") is surface.choose("u3")  # no allocation per request
    forced = surface.choose("u1", override)
    assert forced.rank is override and not forced.canary and forced is surface.choose("u9", override)


def test_a_canary_window_trips_only_after_min_requests(store_dir):
    store, data_dir = store_dir
    monitor = CanaryMonitor(store, data_dir)
    tripped = []
    monitor.trip = lambda watch, why, measured: tripped.append((why, measured))
    watch = monitor.watch("shop", "rank", "*", "v" * 64, "salt", Guardrails(max_nan_rate=0.0, min_requests=10))
    watch.record(False, 100, 3, 0.01)
    for _ in range(8):
        watch.record(False, 100, 0, 0.01)
    assert tripped == []
    watch.record(False, 100, 0, 0.01)
    assert len(tripped) == 1 and "max_nan_rate" in tripped[0][0]
    assert tripped[0][1]["nonfinite_scores"] == 3 and tripped[0][1]["requests"] == 10
    latency = monitor.watch("shop", "rank", "*", "w" * 64, "salt",
                            Guardrails(max_p99_ms=50.0, max_error_rate=0.5, min_requests=8))
    for _ in range(8):
        latency.record(False, 10, 0, 0.2)
    assert "p99" in tripped[-1][0] and tripped[-1][1]["p99_ms"] == pytest.approx(200.0)
