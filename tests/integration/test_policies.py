"""Hard filters at every degradation level, admin changes seen at once, kill switch,
never-empty, and graceful shutdown: each against a real server on a private data copy."""

from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from kernels.layout import MATURITY_CODES
from protos import funnel_pb2, funnel_pb2_grpc
from tests.conftest import ServerProcess
from tests.integration.test_feed import active_users, md

pytestmark = pytest.mark.integration


@pytest.fixture
def server_on_copy(data_dir_copy):
    data_dir, admin_key, api_key = data_dir_copy
    server = ServerProcess(data_dir)
    yield server, data_dir, admin_key, api_key
    server.stop()


def admin(server, admin_key):
    stub = funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target))
    return stub, (("x-admin-key", admin_key),)


def get_feed(server, api_key, **kw):
    stub = funnel_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.target))
    return stub.GetFeed(funnel_pb2.FeedRequest(**kw), metadata=md(api_key), timeout=10)


def update_tenant(server, admin_key, **changes):
    stub, amd = admin(server, admin_key)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    for key, value in changes.items():
        if isinstance(value, list):
            getattr(tenant, key)[:] = value
        else:
            setattr(tenant, key, value)
    stored = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    time.sleep(0.7)  # registry refresh interval is 0.5 s
    return stored


def assert_policy(resp, max_rating="PG13", blocked_categories=(), blocked_ids=()):
    assert resp.items, "never empty"
    for item in resp.items:
        assert MATURITY_CODES.get(item.maturity_rating, 99) <= MATURITY_CODES[max_rating], item
        assert item.category not in blocked_categories, item
        assert item.item_id not in blocked_ids, item


def test_filters_hold_at_every_degradation_level(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    users = active_users(data_dir, 3)
    blocked = ["Drama", "Comedy"]
    update_tenant(server, admin_key, maturity_policy="PG", blocked_categories=blocked)
    levels = set()
    # level 0: normal ranking
    resp = get_feed(server, api_key, user_id=users[0], limit=30)
    levels.add(resp.degradation_level)
    assert_policy(resp, "PG", blocked)
    # levels 3/4: every model file gone; a fresh process has no per-user cache either
    for name in os.listdir(os.path.join(data_dir, "tenants", "demo", "models")):
        os.remove(os.path.join(data_dir, "tenants", "demo", "models", name))
    server.stop()
    server2 = ServerProcess(data_dir)
    try:
        for user in users:  # no cache in the fresh process -> segment (3) or popular (4)
            resp = get_feed(server2, api_key, user_id=user, limit=30)
            levels.add(resp.degradation_level)
            assert resp.degradation_level in (3, 4)
            assert resp.mode == funnel_pb2.MODE_FALLBACK
            assert_policy(resp, "PG", blocked)
        # kill switch -> level 4 for everyone
        from server.app import set_kill_switch

        set_kill_switch(data_dir, True)
        time.sleep(0.7)
        resp = get_feed(server2, api_key, user_id=users[0], limit=30)
        assert resp.degradation_level == 4 and resp.mode == funnel_pb2.MODE_FALLBACK
        levels.add(4)
        assert_policy(resp, "PG", blocked)
    finally:
        server2.stop()
    assert {0, 4} <= levels and 3 in levels


def break_ranker(data_dir):
    """Point the deployed ranker at a file that does not exist (what a botched deploy looks like)."""
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir)
    with store.write() as txn:
        pointer = store.get_state(txn, "demo", "model:rank")
        store.set_state(txn, "demo", "model:rank", dict(pointer, sha256="0" * 64, path="tenants/demo/models/gone.onnx"))
    store.close()
    time.sleep(0.7)


def test_level_two_serves_the_cached_ranking_filtered(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    user = active_users(data_dir, 1)[0]
    first = get_feed(server, api_key, user_id=user, limit=10)
    assert first.degradation_level == 0
    update_tenant(server, admin_key, blocked_item_ids=[first.items[0].item_id])
    break_ranker(data_dir)
    resp = get_feed(server, api_key, user_id=user, limit=10)
    assert resp.degradation_level == 2 and resp.mode == funnel_pb2.MODE_PERSONALIZED
    ids = [i.item_id for i in resp.items]
    assert first.items[0].item_id not in ids  # the cache is filtered like everything else
    assert ids[:5] == [i.item_id for i in first.items[1:6]] or set(ids) & {i.item_id for i in first.items}
    assert all("cache" in i.sources for i in resp.items[:5])
    # another user has no cache in this process: segment or popular
    other = get_feed(server, api_key, user_id=active_users(data_dir, 2)[1], limit=10)
    assert other.degradation_level in (3, 4) and other.mode == funnel_pb2.MODE_FALLBACK


def test_tenant_linear_weight_map_replaces_the_ranker(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    update_tenant(server, admin_key, linear_model_json='{"item_popularity": 1.0}')
    resp = get_feed(server, api_key, user_id=active_users(data_dir, 1)[0], limit=10)
    assert resp.degradation_level == 0 and "linear-" in resp.model_version


def test_deactivated_item_disappears_at_once_even_from_later_pages(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    user = active_users(data_dir, 1)[0]
    page1 = get_feed(server, api_key, user_id=user, limit=5)
    page2_before = get_feed(server, api_key, user_id=user, limit=5, cursor=page1.next_cursor)
    victim, victim2 = page1.items[0].item_id, page2_before.items[0].item_id
    stub, amd = admin(server, admin_key)
    assert stub.DeactivateItem(funnel_pb2.ItemRef(tenant_id="demo", item_id=victim), metadata=amd).changed
    assert stub.DeleteItem(funnel_pb2.ItemRef(tenant_id="demo", item_id=victim2), metadata=amd).changed
    after = get_feed(server, api_key, user_id=user, limit=50)
    ids = {i.item_id for i in after.items}
    assert victim not in ids and victim2 not in ids
    page2 = get_feed(server, api_key, user_id=user, limit=5, cursor=page1.next_cursor)
    assert victim2 not in {i.item_id for i in page2.items}
    with pytest.raises(grpc.RpcError) as err:
        stub.DeactivateItem(funnel_pb2.ItemRef(tenant_id="demo", item_id="nope"), metadata=amd)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_upserted_items_are_served_and_bad_items_reported(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    stub, amd = admin(server, admin_key)
    now = int(time.time())
    items = [funnel_pb2.Item(tenant_id="demo", item_id=f"fresh-{i}", title=f"Fresh {i}", categories=["Documentary"],
                             maturity_rating="G", created_at_s=now, active=True, editorial_boost=1.0)
             for i in range(3)]
    items.append(funnel_pb2.Item(tenant_id="demo", item_id="", title="no id"))
    items.append(funnel_pb2.Item(tenant_id="demo", item_id="x-rated", title="X", maturity_rating="weird",
                                 active=True, categories=["Documentary"], created_at_s=now))
    resp = stub.UpsertItems(iter(items), metadata=amd)
    assert resp.inserted == 4 and len(resp.errors) == 1 and resp.errors[0].startswith("item 3")
    update_tenant(server, admin_key, boosted_item_ids=["fresh-0", "fresh-1", "fresh-2", "x-rated"])
    feed = get_feed(server, api_key, user_id="someone-new", limit=50)
    ids = {i.item_id for i in feed.items}
    assert {"fresh-0", "fresh-1", "fresh-2"} & ids
    assert "x-rated" not in ids  # unknown rating is the most restrictive: fails closed under PG13
    assert any(i.reason == "Editor's pick" for i in feed.items if i.item_id.startswith("fresh-"))


def test_never_empty_while_any_item_is_eligible(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    with store.snapshot() as snap:
        categories = snap.state("demo", "categories")
    store.close()
    keep = "Animation"
    update_tenant(server, admin_key, maturity_policy="G", blocked_categories=[c for c in categories if c != keep])
    for user in active_users(data_dir, 2) + ["brand-new-user"]:
        resp = get_feed(server, api_key, user_id=user, limit=10)
        assert resp.items
        assert all(i.category == keep and i.maturity_rating == "G" for i in resp.items)


def test_invalid_tenant_config_is_rejected_and_old_one_keeps_serving(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    stub, amd = admin(server, admin_key)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    for field, value in (("maturity_policy", "XXX"), ("linear_model_json", '{"no_such_feature": 1}'),
                         ("default_limit", 500), ("trending_half_life_days", float("inf"))):
        bad = funnel_pb2.Tenant()
        bad.CopyFrom(tenant)
        setattr(bad, field, value)
        with pytest.raises(grpc.RpcError) as err:
            stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=bad), metadata=amd)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    assert stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd).version == tenant.version
    assert get_feed(server, api_key, user_id="1", limit=5).items
    with pytest.raises(grpc.RpcError) as err:
        stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=(("x-admin-key", "nope"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_user_signals(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    stub, amd = admin(server, admin_key)
    user = active_users(data_dir, 1)[0]
    sig = stub.GetUserSignals(funnel_pb2.UserRef(tenant_id="demo", user_id=user), metadata=amd)
    assert sig.known and sig.has_embedding and sig.top_categories and sig.recent_item_ids
    assert not stub.GetUserSignals(funnel_pb2.UserRef(tenant_id="demo", user_id="ghost"), metadata=amd).known


def test_two_workers_share_the_port_and_drain_on_sigterm(trained_data_dir):
    data_dir, _, api_key = trained_data_dir
    server = ServerProcess(data_dir, workers=2)
    try:
        results, errors = [], []

        def load():
            stub = funnel_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.target))
            for i in range(40):
                try:
                    results.append(len(stub.GetFeed(funnel_pb2.FeedRequest(user_id=str(i), limit=10),
                                                    metadata=md(api_key), timeout=10).items))
                except grpc.RpcError as exc:
                    errors.append(exc.code())

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(results) == 160 and min(results) == 10
    finally:
        assert server.stop() == 0


def test_frequency_caps_and_campaigns_round_trip_through_admin(server_on_copy):
    server, data_dir, admin_key, api_key = server_on_copy
    stub, amd = admin(server, admin_key)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    tenant.surfaces["ads"].CopyFrom(funnel_pb2.SurfaceRules(max_per_category=2, frequency_cap=3,
                                                            campaign_frequency_cap=5))
    stored = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    ads = stored.surfaces["ads"]
    assert (ads.frequency_cap, ads.campaign_frequency_cap, ads.frequency_window_s) == (3, 5, 86400)
    for rules, field in ((funnel_pb2.SurfaceRules(frequency_cap=513), "frequency_cap"),
                         (funnel_pb2.SurfaceRules(frequency_cap=1, frequency_window_s=10), "frequency_window_s")):
        bad = funnel_pb2.Tenant()
        bad.CopyFrom(stored)
        bad.surfaces["ads"].CopyFrom(rules)
        with pytest.raises(grpc.RpcError) as err:
            stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=bad), metadata=amd)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()

    promo = [funnel_pb2.Item(tenant_id="demo", item_id=f"promo-{k}", title="Promo", categories=["Drama"],
                             maturity_rating="G", active=True, sponsored=True, campaign_id="spring")
             for k in range(2)]
    promo.append(funnel_pb2.Item(tenant_id="demo", item_id="promo-x", title="x", campaign_id="c" * 257))
    resp = stub.UpsertItems(iter(promo), metadata=amd)
    assert resp.inserted == 2 and len(resp.errors) == 1 and "campaign_id" in resp.errors[0]
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            cid = snap.state("demo", "campaigns").index("spring") + 1
            members = sorted(snap.item_list("demo", f"campaign:{cid}").tolist())
            assert members == sorted(snap.item_index("demo", f"promo-{k}") for k in range(2))
    finally:
        store.close()
