"""Experiments and config versions against a real server (real LMDB, USearch, ONNX
Runtime) over a private copy of the trained demo data."""

from __future__ import annotations

import re
import shutil
import time
from collections import Counter

import grpc
import pytest

from protos import funnel_pb2, funnel_pb2_grpc
from server.experiments import ExperimentPlan
from server.tenancy import Experiment, TenantConfig, Variant
from tests.conftest import ServerProcess
from tests.integration.test_feed import active_users, md

pytestmark = pytest.mark.integration
REFRESH_WAIT_S = 0.7  # the registry re-reads tenant configs every 0.5 s


@pytest.fixture(scope="module")
def server_on_copy(trained_data_dir, tmp_path_factory):
    data_dir, admin_key, api_key = trained_data_dir
    copy = str(tmp_path_factory.mktemp("experiments") / "data")
    shutil.copytree(data_dir, copy)
    server = ServerProcess(copy)
    yield server, copy, admin_key, api_key
    server.stop()


def admin_stub(server):
    return funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target))


def recommender(server):
    return funnel_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.target))


def upsert(server, admin_key, **changes) -> funnel_pb2.Tenant:
    stub, amd = admin_stub(server), (("x-admin-key", admin_key),)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    for key, value in changes.items():
        field = getattr(tenant, key)
        if isinstance(value, list):
            del field[:]
            field.extend(value)
        else:
            setattr(tenant, key, value)
    stored = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    time.sleep(REFRESH_WAIT_S)
    return stored


def diversity_experiment(status=funnel_pb2.EXPERIMENT_RUNNING) -> funnel_pb2.Experiment:
    return funnel_pb2.Experiment(name="div", surface="home", salt="div-1", status=status, variants=[
        funnel_pb2.Variant(name="control", weight=50),
        funnel_pb2.Variant(name="tight", weight=50, model_version="rank-candidate",
                           rules=funnel_pb2.RuleOverrides(max_per_category=1, max_streak=1))])


def variant_of(user: str) -> str:
    """The variant the server must pick, computed here from the same config (sticky, no storage)."""
    exp = Experiment("div", "home", "div-1", "running", (Variant("control", 50), Variant("tight", 50)))
    return ExperimentPlan(TenantConfig(tenant_id="demo", experiments=(exp,))).assign(user, "home").variant


def max_per_category(resp) -> int:
    return max(Counter(item.category for item in resp.items).values())


def test_running_experiment_assigns_variants_and_overrides_rules(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    stored = upsert(server, admin_key, experiments=[diversity_experiment()])
    stub = recommender(server)

    def feed(user, surface):
        return stub.GetFeed(funnel_pb2.FeedRequest(user_id=user, surface=surface, limit=10),
                            metadata=md(api_key), timeout=10)

    users = active_users(data_dir, 40)
    by_variant = {"control": [], "tight": []}
    for user in users:
        by_variant[variant_of(user)].append(user)
    assert by_variant["control"] and by_variant["tight"]
    # a treated user whose page repeats categories where no experiment runs (default rules: 3 per category)
    treated = next(u for u in by_variant["tight"] if max_per_category(feed(u, "search")) > 1)

    resp = feed(treated, "home")
    assert (resp.experiment, resp.variant, resp.config_version) == ("div", "tight", stored.version)
    assert re.fullmatch(r"[0-9a-f]{32}\.div\.tight", resp.request_id)
    assert len(resp.items) == 10 and max_per_category(resp) == 1  # the variant's max_per_category=1
    again = feed(treated, "home")
    assert again.variant == "tight" and again.request_id != resp.request_id  # sticky, new id each time
    outside = feed(treated, "search")
    assert (outside.experiment, outside.variant) == ("", "")
    assert re.fullmatch(r"[0-9a-f]{32}", outside.request_id)

    for user in by_variant["control"][:3]:
        resp = feed(user, "home")
        assert (resp.experiment, resp.variant) == ("div", "control")
        assert resp.request_id.endswith(".div.control")

    # a user who opts out of personalisation leaves the experiment (plain rules, no variant);
    # opting back in puts them in the same variant again (the hash, not stored state)
    amd = (("x-admin-key", admin_key),)
    opted = next(u for u in by_variant["tight"] if u != treated)
    assert feed(opted, "home").variant == "tight"
    admin_stub(server).SetConsent(funnel_pb2.ConsentRequest(tenant_id="demo", user_id=opted, personalized=False),
                                  metadata=amd)
    resp = feed(opted, "home")
    assert (resp.experiment, resp.variant) == ("", "") and re.fullmatch(r"[0-9a-f]{32}", resp.request_id)
    assert resp.mode == funnel_pb2.MODE_FALLBACK
    admin_stub(server).SetConsent(funnel_pb2.ConsentRequest(tenant_id="demo", user_id=opted, personalized=True),
                                  metadata=amd)
    assert (feed(opted, "home").experiment, feed(opted, "home").variant) == ("div", "tight")

    # GetRelated on the experiment's surface: with a user in the experiment, anonymous never
    anchor = feed(treated, "search").items[0].item_id
    related = stub.GetRelated(funnel_pb2.RelatedRequest(item_id=anchor, user_id=treated, surface="home", limit=10),
                              metadata=md(api_key), timeout=10)
    assert (related.experiment, related.variant) == ("div", "tight") and max_per_category(related) == 1
    anonymous = stub.GetRelated(funnel_pb2.RelatedRequest(item_id=anchor, surface="home", limit=10),
                                metadata=md(api_key), timeout=10)
    assert (anonymous.experiment, anonymous.variant) == ("", "")

    # stopping the experiment gives the same user the surface's own rules again
    page_1 = feed(treated, "home")
    assert page_1.next_cursor
    stopped = upsert(server, admin_key, experiments=[diversity_experiment(funnel_pb2.EXPERIMENT_STOPPED)])
    resp = feed(treated, "home")
    assert (resp.experiment, resp.config_version) == ("", stopped.version)
    assert max_per_category(resp) > 1
    # ... while the rest of a ranking paged from before the stop still reports its own variant
    page_2 = stub.GetFeed(funnel_pb2.FeedRequest(user_id=treated, surface="home", limit=10,
                                                 cursor=page_1.next_cursor), metadata=md(api_key), timeout=10)
    assert page_2.items and (page_2.experiment, page_2.variant) == ("div", "tight")
    assert page_2.request_id.endswith(".div.tight") and page_2.model_version == page_1.model_version


def test_invalid_experiment_is_rejected_naming_the_field(server_on_copy):
    server, _, admin_key, _ = server_on_copy
    bad = diversity_experiment()
    bad.variants[1].weight = 0
    with pytest.raises(grpc.RpcError) as err:
        upsert(server, admin_key, experiments=[bad])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant.experiments[0].variants[1].weight" in err.value.details()
    second = diversity_experiment()
    second.name = "div2"
    with pytest.raises(grpc.RpcError) as err:
        upsert(server, admin_key, experiments=[diversity_experiment(), second])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant.experiments[1].surface" in err.value.details() and "already runs" in err.value.details()


def test_config_history_and_restore_via_admin(server_on_copy):
    server, _, admin_key, api_key = server_on_copy
    stub, amd = admin_stub(server), (("x-admin-key", admin_key),)
    v_g = upsert(server, admin_key, maturity_policy="G", experiments=[]).version
    v_exp = upsert(server, admin_key, maturity_policy="PG13", experiments=[diversity_experiment()]).version
    new_key = "fk_rotated-key-for-restore-test-0001"
    rotated = upsert(server, admin_key, api_keys=[new_key], rotate_keys=True)
    assert rotated.api_key_count == 1 and rotated.version == v_exp + 1

    history = stub.ListConfigVersions(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    versions = [v.version for v in history.versions]
    assert history.current_version == rotated.version and versions[0] == rotated.version
    assert versions == sorted(versions, reverse=True) and versions == list(range(versions[0], 0, -1))
    summaries = {v.version: v.summary for v in history.versions}
    assert summaries[rotated.version] == "changed: api_keys"
    assert summaries[v_exp] == "changed: experiments, maturity_policy"
    assert summaries[1] == "created" and not history.truncated
    assert all(v.updated_at > 0 for v in history.versions)

    restored = stub.RestoreConfig(funnel_pb2.RestoreConfigRequest(tenant_id="demo", version=v_g), metadata=amd)
    assert restored.version == rotated.version + 1
    assert restored.maturity_policy == "G" and list(restored.experiments) == []
    assert restored.api_key_count == 1  # the current key set, not v_g's
    time.sleep(REFRESH_WAIT_S)
    rec = recommender(server)
    with pytest.raises(grpc.RpcError) as err:  # the rotated key stays revoked after the restore
        rec.GetFeed(funnel_pb2.FeedRequest(user_id="1", limit=5), metadata=md(api_key), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = rec.GetFeed(funnel_pb2.FeedRequest(user_id="1", surface="home", limit=20), metadata=md(new_key), timeout=10)
    assert resp.config_version == restored.version and resp.experiment == ""
    assert {item.maturity_rating for item in resp.items} <= {"G"}

    back = stub.RestoreConfig(funnel_pb2.RestoreConfigRequest(tenant_id="demo", version=v_exp), metadata=amd)
    assert back.version == restored.version + 1 and [e.name for e in back.experiments] == ["div"]
    assert back.experiments[0].variants[1].rules.max_per_category == 1
    assert stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd) == back

    for request, code, detail in (
            (funnel_pb2.RestoreConfigRequest(tenant_id="demo", version=10_000), grpc.StatusCode.NOT_FOUND, "version"),
            (funnel_pb2.RestoreConfigRequest(tenant_id="demo", version=0), grpc.StatusCode.INVALID_ARGUMENT, "version"),
            (funnel_pb2.RestoreConfigRequest(tenant_id="nobody", version=1), grpc.StatusCode.NOT_FOUND, "tenant_id")):
        with pytest.raises(grpc.RpcError) as err:
            stub.RestoreConfig(request, metadata=amd)
        assert err.value.code() == code and err.value.details().startswith(detail), (request, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        stub.ListConfigVersions(funnel_pb2.GetTenantRequest(tenant_id="nobody"), metadata=amd)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.ListConfigVersions(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=(("x-admin-key", "wrong"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    upsert(server, admin_key, api_keys=[api_key])  # the module's other tests use the original key


def test_an_unreadable_stored_config_keeps_the_last_known_good_one_serving(server_on_copy):
    """A config written around the Admin API that cannot be parsed or validated: the
    serving process keeps the version it has (and counts the failure), and picks up
    the next good write as usual."""
    from server.store import LmdbStore

    server, data_dir, admin_key, api_key = server_on_copy
    good = upsert(server, admin_key, maturity_policy="PG13", experiments=[])
    rec = recommender(server)

    def served():
        return rec.GetFeed(funnel_pb2.FeedRequest(user_id="1", limit=10), metadata=md(api_key), timeout=10)

    assert served().config_version == good.version
    store = LmdbStore.open(data_dir)
    try:
        with store.env.begin() as txn:
            stored = bytes(txn.get(b"demo", db=store.db["tenants"]))
        for broken in (b'{"tenant_id": "demo", "version": 9', stored.replace(b'"PG13"', b'"NC-17-ish"')):
            with store.env.begin(write=True) as txn:
                txn.put(b"demo", broken, db=store.db["tenants"])
            time.sleep(REFRESH_WAIT_S)
            for _ in range(5):
                resp = served()
                assert resp.config_version == good.version and resp.items
        with store.env.begin(write=True) as txn:
            txn.put(b"demo", stored, db=store.db["tenants"])
    finally:
        store.close()
    time.sleep(REFRESH_WAIT_S)
    fixed = upsert(server, admin_key, maturity_policy="G")
    resp = served()
    assert resp.config_version == fixed.version and {i.maturity_rating for i in resp.items} <= {"G"}
