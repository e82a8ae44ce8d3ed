"""Experiments in the tenant config: validation, deterministic sticky bucketing, split
proportions, per-surface plans, proto mapping; and the config version history on a
real LMDB store."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pytest

from protos import funnel_pb2
from server.experiments import ExperimentPlan, bucket, parse_request_id
from server.servicers.config_mapping import experiments_from_proto, experiments_to_proto
from server.store import LmdbStore
from server.tenancy import (
    ConfigError,
    Experiment,
    SurfaceRules,
    TenantConfig,
    TenantRegistry,
    Variant,
    VersionNotFound,
)
from tests.conftest import ROOT


def experiment(name="ab", surface="*", weights=(50, 50), status="running", salt="", rules=None, models=None):
    names = ["control", "treatment"] + [f"v{k}" for k in range(2, len(weights))]
    return Experiment(name=name, surface=surface, salt=salt, status=status, variants=tuple(
        Variant(names[k], w, (models or {}).get(names[k], ""), (rules or {}).get(names[k], {}))
        for k, w in enumerate(weights)))


def config(*experiments, **kw) -> TenantConfig:
    return TenantConfig(tenant_id="t1", experiments=experiments, **kw).validate()


# ----------------------------------------------------------------- validation
@pytest.mark.parametrize("experiments, field", [
    ((experiment(name="a.b"),), r"experiments\[0\]\.name"),
    ((experiment(), experiment()), r"experiments\[1\]\.name: duplicate"),
    ((experiment(weights=(100,)),), r"experiments\[0\]\.variants: must hold 2"),
    ((experiment(weights=(50, 0)),), r"experiments\[0\]\.variants\[1\]\.weight"),
    ((experiment(weights=(1, 10_000)),), r"experiments\[0\]\.variants\[0\]\.weight: below 1/10000"),
    ((experiment(status="paused"),), r"experiments\[0\]\.status"),
    ((experiment(surface=""),), r"experiments\[0\]\.surface"),
    ((experiment(name="a", surface="home"), experiment(name="b", surface="home")),
     r"experiments\[1\]\.surface: experiment 'a' already runs on surface 'home'"),
    ((experiment(rules={"treatment": {"max_per_category": -1}}),), r"experiments\[0\]\.variants\[1\]\.rules"),
    ((experiment(rules={"treatment": {"freshness_weight": 99.0}}),),
     r"experiments\[0\]\.variants\[1\]\.rules\.freshness_weight"),
    ((experiment(rules={"control": {"max_items": 3}}),),
     r"experiments\[0\]\.variants\[0\]\.rules: unknown keys max_items"),
    ((experiment(rules={"control": {"max_per_category": "3"}}),),
     r"experiments\[0\]\.variants\[0\]\.rules\.max_per_category: wrong type"),
    ((experiment(models={"treatment": "m" * 200}),), r"experiments\[0\]\.variants\[1\]\.model_version"),
])
def test_invalid_experiments_name_the_field(experiments, field):
    with pytest.raises(ConfigError, match=field):
        config(*experiments)


def test_duplicate_variant_names_are_rejected():
    exp = Experiment("ab", "*", "", "running", (Variant("x", 1), Variant("x", 1)))
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.variants\[1\]\.name: duplicate variant name 'x'"):
        config(exp)


def test_stopped_experiments_may_share_a_surface_and_round_trip_through_json():
    cfg = config(experiment(name="a", surface="home"), experiment(name="b", surface="home", status="stopped"),
                 experiment(name="c", surface="*", rules={"treatment": {"sponsored_positions": (1, 3)}},
                            models={"treatment": "rank-v7"}))
    back = TenantConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert back == cfg
    assert back.experiments[2].variants[1].rules == {"sponsored_positions": (1, 3)}
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.variants\[0\]: unknown keys colour"):
        TenantConfig.from_json(dict(cfg.to_json(), experiments=[
            {"name": "a", "variants": [{"name": "x", "colour": "red"}]}]))


# ----------------------------------------------------------------- bucketing
def test_bucket_is_the_documented_hash():
    digest = hashlib.sha256(b"salt-1\x00user-42").digest()
    assert bucket("salt-1", "user-42") == int.from_bytes(digest[:8], "big") % 10_000


ASSIGN_SCRIPT = """
import json, sys
from server.runtime import TenantRuntime
from server.tenancy import TenantConfig
config = TenantConfig.from_json(json.loads(sys.argv[1]))
runtime = TenantRuntime("t1", config, ())
print(json.dumps([runtime.experiments.assign(f"user-{k}", "home").variant for k in range(2000)]))
"""


def test_assignment_is_sticky_across_runtimes_and_processes():
    cfg = config(experiment(weights=(30, 30, 40), salt="s1"))
    here = [ExperimentPlan(cfg).assign(f"user-{k}", "home").variant for k in range(2000)]
    rebuilt = ExperimentPlan(TenantConfig.from_json(cfg.to_json()))  # a restart: the config read back
    assert [rebuilt.assign(f"user-{k}", "home").variant for k in range(2000)] == here
    # another interpreter with another hash seed: nothing depends on Python's hash()
    out = subprocess.run([sys.executable, "-c", ASSIGN_SCRIPT, json.dumps(cfg.to_json())], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT, PYTHONHASHSEED="123"))
    assert json.loads(out.stdout) == here
    assert set(here) == {"control", "treatment", "v2"}
    # a new salt reshuffles
    moved = ExperimentPlan(config(experiment(weights=(30, 30, 40), salt="s2")))
    assert sum(moved.assign(f"user-{k}", "home").variant != v for k, v in enumerate(here)) > 500


@pytest.mark.parametrize("weights", [(50, 50), (90, 10), (1, 2, 7), (3333, 3333, 3334)])
def test_split_matches_the_weights_within_a_binomial_bound(weights):
    n = 20_000
    plan = ExperimentPlan(config(experiment(weights=weights, salt="split")))
    counts: dict[str, int] = {}
    for k in range(n):
        variant = plan.assign(f"synthetic-{k}", "feed").variant
        counts[variant] = counts.get(variant, 0) + 1
    names = ["control", "treatment"] + [f"v{k}" for k in range(2, len(weights))]
    total = sum(weights)
    for name, weight in zip(names, weights):
        p = weight / total
        sigma = math.sqrt(n * p * (1 - p))
        # 5 sigma: a correct hash fails this with probability ~6e-7 per variant
        assert abs(counts.get(name, 0) - n * p) <= 5 * sigma, (name, counts, weights)


def test_plan_resolves_surface_then_star_and_applies_overrides():
    cfg = config(
        experiment(name="home_exp", surface="home", rules={"treatment": {"max_per_category": 1}},
                   models={"treatment": "rank-v2"}),
        experiment(name="all", surface="*", rules={"treatment": {"freshness_weight": 2.0}}),
        experiment(name="off", surface="search", status="stopped"),
        surfaces={"*": SurfaceRules(max_per_category=3), "home": SurfaceRules(max_per_category=4, max_streak=5),
                  "search": SurfaceRules(max_per_category=6)})
    plan = ExperimentPlan(cfg)
    users = {plan.assign(f"u{k}", "home").variant: f"u{k}" for k in range(50)}
    treated, control = users["treatment"], users["control"]
    home = plan.assign(treated, "home")
    assert (home.experiment, home.variant, home.model_version) == ("home_exp", "treatment", "rank-v2")
    assert home.rules == SurfaceRules(max_per_category=1, max_streak=5)  # override on top of the surface's rules
    assert home.request_id_suffix == ".home_exp.treatment"
    assert plan.assign(control, "home").rules == SurfaceRules(max_per_category=4, max_streak=5)
    # "search" has only a stopped experiment: the "*" experiment applies, over search's own rules
    search = plan.assign(treated, "search")
    assert search.experiment == "all"
    if search.variant == "treatment":
        assert search.rules == SurfaceRules(max_per_category=6, freshness_weight=2.0)
    other = plan.assign(treated, "unconfigured")
    assert other.experiment == "all" and other.rules.max_per_category == 3
    # anonymous: no experiment, the surface's rules
    anonymous = plan.assign("", "home")
    assert (anonymous.experiment, anonymous.variant, anonymous.request_id_suffix) == ("", "", "")
    assert anonymous.rules == cfg.surfaces["home"]
    # no running experiment at all: only the rules
    plain = ExperimentPlan(config(experiment(status="stopped"), surfaces={"*": SurfaceRules(max_streak=7)}))
    assert plain.assign(treated, "x").experiment == "" and plain.assign(treated, "x").rules.max_streak == 7


def test_request_id_parsing():
    assert parse_request_id("0123456789abcdef0123456789abcdef.ab.control") == ("ab", "control")
    assert parse_request_id("0123456789abcdef0123456789abcdef") is None
    assert parse_request_id("") is None
    assert parse_request_id("x..y") is None


def test_rule_overrides_cover_every_surface_rule():
    from dataclasses import fields

    # segment eligibility (segment_rules) is per segment, not a variant override
    assert {f.name for f in fields(SurfaceRules)} - {"segment_rules"} == set(
        funnel_pb2.RuleOverrides.DESCRIPTOR.fields_by_name)


def test_experiments_map_to_proto_and_back():
    cfg = config(experiment(name="a", surface="home", rules={
        "treatment": {"max_per_category": 0, "sponsored_positions": (), "frequency_window_s": 3600,
                      "freshness_weight": 0.5}}, models={"control": "rank-v1"}))
    msgs = experiments_to_proto(cfg.experiments)
    assert msgs[0].status == funnel_pb2.EXPERIMENT_RUNNING
    assert msgs[0].variants[1].rules.HasField("max_per_category")  # an explicit 0 is kept
    assert msgs[0].variants[1].rules.HasField("sponsored_positions")  # an explicit "no slots" is kept
    assert not msgs[0].variants[0].rules.HasField("max_per_category")
    wire = [funnel_pb2.Experiment.FromString(m.SerializeToString()) for m in msgs]
    assert experiments_from_proto(wire) == cfg.experiments
    unspecified = funnel_pb2.Experiment(name="b", surface="*", variants=[
        funnel_pb2.Variant(name="x", weight=1), funnel_pb2.Variant(name="y", weight=1)])
    with pytest.raises(ConfigError, match=r"experiments\[0\]\.status"):
        config(*experiments_from_proto([unspecified]))


# ----------------------------------------------------------------- config history
@pytest.fixture
def registry(tmp_path):
    store = LmdbStore.open(str(tmp_path))
    yield TenantRegistry(store)
    store.close()


def test_every_put_is_kept_and_restore_appends_with_current_keys(registry):
    registry.put(TenantConfig(tenant_id="t1", maturity_policy="G", api_key_hashes=("old-key",)))
    registry.put(TenantConfig(tenant_id="t1", maturity_policy="R", api_key_hashes=("old-key",),
                              experiments=(experiment(),)))
    registry.put(TenantConfig(tenant_id="t1", maturity_policy="R", api_key_hashes=("new-key",),
                              experiments=(experiment(),)))  # keys rotated
    with pytest.raises(ConfigError):
        registry.put(TenantConfig(tenant_id="t1", maturity_policy="nope"))  # rejected: no version written
    store = registry.store
    with store.snapshot() as snap:
        assert [v for v, _ in registry.history(snap.txn, "t1", 10)] == [3, 2, 1]
        assert [v for v, _ in registry.history(snap.txn, "t1", 10, before=3)] == [2, 1]
        assert registry.get_version(snap.txn, "t1", 1).maturity_policy == "G"
        assert registry.get_version(snap.txn, "t1", 2).experiments == (experiment(),)
        assert registry.get_version(snap.txn, "t1", 4) is None
        assert registry.get_version(snap.txn, "t2", 1) is None
        rows, truncated = registry.version_log(snap.txn, registry.get(snap.txn, "t1"), 2)
    assert [(v, s) for v, _, s in rows] == [(3, "changed: api_keys"), (2, "changed: experiments, maturity_policy")]
    assert truncated
    restored = registry.restore("t1", 1)
    assert (restored.version, restored.maturity_policy, restored.experiments) == (4, "G", ())
    assert restored.api_key_hashes == ("new-key",)  # the rotated key stays revoked
    with store.snapshot() as snap:
        assert registry.get(snap.txn, "t1") == restored
        assert registry.get_version(snap.txn, "t1", 4) == restored
        assert registry.get_version(snap.txn, "t1", 1).api_key_hashes == ("old-key",)  # history is unchanged
        rows, truncated = registry.version_log(snap.txn, restored, 10)
    assert [v for v, _, _ in rows] == [4, 3, 2, 1] and rows[-1][2] == "created" and not truncated
    assert rows[0][2] == "changed: experiments, maturity_policy"
    with pytest.raises(VersionNotFound, match="version"):
        registry.restore("t1", 99)
    with pytest.raises(VersionNotFound, match="tenant_id"):
        registry.restore("nobody", 1)


def test_history_of_a_tenant_written_before_the_history_existed(registry):
    store = registry.store
    legacy = TenantConfig(tenant_id="t1", version=7, updated_at=1.0).to_json()
    with store.write() as txn:
        store.put_json(txn, "tenants", b"t1", legacy)
    with store.snapshot() as snap:
        assert registry.get_version(snap.txn, "t1", 7).version == 7
        assert registry.get_version(snap.txn, "t1", 6) is None
        rows, _ = registry.version_log(snap.txn, registry.get(snap.txn, "t1"), 10)
    assert rows == [(7, 1.0, "earliest stored version")]
    stored = registry.put(TenantConfig(tenant_id="t1", maturity_policy="G"))
    assert stored.version == 8
    with store.snapshot() as snap:  # the legacy version joined the history on the next write
        rows, _ = registry.version_log(snap.txn, stored, 10)
        assert registry.get_version(snap.txn, "t1", 7).maturity_policy == "PG13"
    assert [(v, s) for v, _, s in rows] == [(8, "changed: maturity_policy"), (7, "earliest stored version")]
    assert registry.restore("t1", 7).maturity_policy == "PG13"
