"""Named segments end to end: a real server applies a segment's surface eligibility at
level 0 and at levels 3/4, answers the segment in FeedResponse and GetUserSegment,
rejects bad segment config naming the field; `funnel segments build` writes the
lists level 3 serves for a named segment."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from protos import funnel_pb2
from server.segments import SEGMENT_LIST_PREFIX
from tests.conftest import ROOT, ServerProcess
from tests.integration.test_feed import active_users
from tests.integration.test_policies import admin, get_feed

pytestmark = pytest.mark.integration
BIG_CATEGORIES = ("Drama", "Comedy", "Thriller", "Action")


def segments_cli(data_dir, *args):
    return subprocess.run([sys.executable, "-m", "server.cli", "segments", *args, "--data-dir", data_dir],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)


def read_list(data_dir, name):
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            return snap.item_list("demo", name).copy()
    finally:
        store.close()


def item_ids(data_dir, indices):
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.snapshot() as snap:
            return {snap.item_meta("demo", int(i))["id"] for i in indices}
    finally:
        store.close()


def user_segment(server, admin_key, user_id):
    stub, amd = admin(server, admin_key)
    return stub.GetUserSegment(funnel_pb2.UserRef(tenant_id="demo", user_id=user_id), metadata=amd)


def test_segment_eligibility_holds_at_every_level_and_build_feeds_level_three(data_dir_copy):
    data_dir, admin_key, api_key = data_dir_copy
    server = ServerProcess(data_dir)
    try:
        users = active_users(data_dir, 40)
        fan = users[0]
        top = user_segment(server, admin_key, fan).top_category
        assert top and top != "none"
        allowed = next(c for c in BIG_CATEGORIES if c != top)
        other = next(u for u in users[1:] if user_segment(server, admin_key, u).top_category != top)

        # the fan's segment may see only `allowed`; everyone else must not see it
        stub, amd = admin(server, admin_key)
        tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
        tenant.segments.add(name="fans", top_categories=[top], min_interactions=1)
        tenant.segments.add(name="rest")
        tenant.surfaces["*"].segment_rules["fans"].allowed_categories[:] = [allowed]
        tenant.surfaces["*"].segment_rules["rest"].blocked_categories[:] = [allowed]
        stored = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
        assert [s.name for s in stored.segments] == ["fans", "rest"]
        assert list(stored.surfaces["*"].segment_rules["fans"].allowed_categories) == [allowed]
        time.sleep(0.7)  # registry refresh interval is 0.5 s

        seg = user_segment(server, admin_key, fan)
        assert seg.segment == "fans" and seg.known and seg.interactions >= 1
        resp = get_feed(server, api_key, user_id=fan, limit=20)
        assert resp.degradation_level == 0 and resp.segment == "fans"
        assert len(resp.items) == 20 and {i.category for i in resp.items} == {allowed}
        assert resp.filtered["blocked_category"] > 0
        page2 = get_feed(server, api_key, user_id=fan, limit=20, cursor=resp.next_cursor)
        assert page2.segment == "fans" and {i.category for i in page2.items} <= {allowed}
        resp = get_feed(server, api_key, user_id=other, limit=20)
        assert resp.segment == "rest" and resp.items and allowed not in {i.category for i in resp.items}
        anonymous = get_feed(server, api_key, user_id="nobody-ever-seen", limit=10)
        assert anonymous.segment == "rest" and allowed not in {i.category for i in anonymous.items}

        # bad segment config is rejected naming the field; the stored config keeps serving
        bad = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
        bad.surfaces["home"].segment_rules["nope"].blocked_categories[:] = ["Drama"]
        with pytest.raises(grpc.RpcError) as err:
            stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=bad), metadata=amd)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "surfaces['home'].segment_rules['nope']" in err.value.details()
        bad = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
        bad.segments.add(name="fans")
        with pytest.raises(grpc.RpcError) as err:
            stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=bad), metadata=amd)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "segments[2].name" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.GetUserSegment(funnel_pb2.UserRef(tenant_id="nosuch", user_id="1"), metadata=amd)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # the build writes one list per named segment
        assert len(read_list(data_dir, SEGMENT_LIST_PREFIX + "fans")) == 0
        result = segments_cli(data_dir, "build", "--tenant", "demo")
        assert result.returncode == 0, result.stderr
        assert "fans" in result.stdout and "rest" in result.stdout
        fans_list = read_list(data_dir, SEGMENT_LIST_PREFIX + "fans")
        assert len(fans_list) > 0 and len(read_list(data_dir, SEGMENT_LIST_PREFIX + "rest")) > 0

        # levels 3/4: no model files, a fresh process (no per-user cache)
        models = os.path.join(data_dir, "tenants", "demo", "models")
        for name in os.listdir(models):
            os.remove(os.path.join(models, name))
    finally:
        server.stop()
    server = ServerProcess(data_dir)
    try:
        resp = get_feed(server, api_key, user_id=fan, limit=20)
        assert resp.degradation_level == 3 and resp.segment == "fans"
        assert len(resp.items) == 20 and {i.category for i in resp.items} == {allowed}
        from_list = [i.item_id for i in resp.items if "segment" in i.sources]
        assert from_list and set(from_list) <= item_ids(data_dir, fans_list)  # the named segment's list
        resp = get_feed(server, api_key, user_id=other, limit=20)
        assert resp.degradation_level in (3, 4) and resp.segment == "rest"
        assert resp.items and allowed not in {i.category for i in resp.items}
        from server.app import set_kill_switch

        set_kill_switch(data_dir, True)  # level 4 for everyone: still the segment's eligibility
        time.sleep(0.7)
        resp = get_feed(server, api_key, user_id=fan, limit=20)
        assert resp.degradation_level == 4 and resp.segment == "fans"
        assert len(resp.items) == 20 and {i.category for i in resp.items} == {allowed}
    finally:
        server.stop()


def test_level_three_prefers_the_named_segment_list_over_the_top_category_list(data_dir_copy):
    """In-process (an expired budget forces the fallback path): before the build the
    top-category list serves level 3; after it, the named segment's list."""
    from server.app import ServeSettings, ServingApp
    from server.pipeline.state import SOURCE_SEGMENT, request_state
    from server.store import LmdbStore
    from server.tenancy import Segment, TenantRegistry

    data_dir, _, _ = data_dir_copy
    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            config = registry.get(snap.txn, "demo")
        registry.put(config.__class__.from_json(dict(config.to_json(), segments=[
            {"name": "heavy", "min_interactions": 50}])))
    finally:
        store.close()
    user = active_users(data_dir, 1)[0]

    def level_three():
        app = ServingApp(ServeSettings(data_dir=data_dir))
        with app.store.snapshot() as snap:
            state = request_state(snap, app.registry.get(snap, "demo"), user, "*", 20, -1.0)
            result = app.funnel.run(state)
            top = int(np.argmax(state.affinity()))
            segment_items = set(result.ranking.items[result.ranking.sources == SOURCE_SEGMENT].tolist())
            return state.segment, result.level, segment_items, set(snap.item_list("demo", f"segment:{top}").tolist())

    segment, level, served, by_category = level_three()
    assert segment == "heavy" and level == 3 and served and served <= by_category
    assert segments_cli(data_dir, "build", "--tenant", "demo").returncode == 0
    named = set(read_list(data_dir, SEGMENT_LIST_PREFIX + "heavy").tolist())
    assert named != by_category
    segment, level, served, _ = level_three()
    assert segment == "heavy" and level == 3 and served and served <= named
    assert not served <= by_category  # a different list than before


def test_segments_build_reports_an_unknown_tenant(data_dir_copy):
    result = segments_cli(data_dir_copy[0], "build", "--tenant", "nosuch")
    assert result.returncode == 2 and "tenant" in result.stderr


def test_funnel_load_rebuilds_the_named_segment_lists(data_dir_copy):
    from ops.load import load_dataset
    from server.store import LmdbStore
    from server.tenancy import TenantRegistry
    from tests.conftest import DATASET

    data_dir, _, _ = data_dir_copy
    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            config = registry.get(snap.txn, "demo")
        registry.put(config.__class__.from_json(dict(config.to_json(), segments=[{"name": "any"}])))
    finally:
        store.close()
    assert len(read_list(data_dir, SEGMENT_LIST_PREFIX + "any")) == 0
    load_dataset(data_dir, "demo", DATASET, progress=False)
    assert len(read_list(data_dir, SEGMENT_LIST_PREFIX + "any")) > 0
