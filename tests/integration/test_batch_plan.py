"""Batch plans: `funnel batch-plan` (a real subprocess) and Admin.BatchPlan against a real
server on a private copy of the trained demo tenant. A plan row must be exactly what
GetFeed answers for the same user, with the same versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import grpc
import pytest

from protos import funnel_pb2, funnel_pb2_grpc
from tests.conftest import ROOT, ServerProcess
from tests.integration.test_feed import md
from tests.integration.test_policies import update_tenant

pytestmark = pytest.mark.integration


def top_categories(data_dir: str, tenant: str = "demo") -> tuple[list[str], dict[str, int]]:
    """(category names, {user_id: top category id or -1}) straight from the store."""
    from server.batch_plans import top_category
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.env.begin() as txn:
            names = store.get_state(txn, tenant, "categories")
            return names, {u: top_category(v) for u, v in store.iter_users(txn, tenant)}
    finally:
        store.close()


def batch_plan(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, FUNNEL_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "server.cli", "batch-plan", "--data-dir", data_dir, "--tenant",
                           "demo", "--quiet", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def planned_server(data_dir_copy):
    data_dir, admin_key, api_key = data_dir_copy
    server = ServerProcess(data_dir)
    # no response degraded by time on a busy test machine: plans and GetFeed must match exactly
    tenant = update_tenant(server, admin_key, latency_budget_ms=10_000)
    yield server, data_dir, admin_key, api_key, tenant.version
    server.stop()


def test_plan_rows_match_get_feed_for_a_top_category_segment(planned_server, tmp_path):
    server, data_dir, admin_key, api_key, config_version = planned_server
    names, tops = top_categories(data_dir)
    category, members = Counter(c for c in tops.values() if c >= 0).most_common(1)[0]
    segment = f"top-category:{names[category]}"
    out = str(tmp_path / "plan.jsonl")
    result = batch_plan(data_dir, "--segment", segment, "--limit", "12", "--max-users", "25", "--out", out,
                        "--valid-hours", "6")
    assert result.returncode == 0, result.stderr
    assert "users/s" in result.stdout
    rows = [json.loads(line) for line in open(out)]
    assert len(rows) == min(25, members)
    assert not os.path.exists(out + ".tmp")

    recommender = funnel_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.target))
    for row in rows:
        assert tops[row["user_id"]] == category  # the segment's users only
        assert set(row) == {"user_id", "surface", "items", "model_version", "config_version", "level",
                            "generated_at", "valid_until"}
        served = recommender.GetFeed(funnel_pb2.FeedRequest(user_id=row["user_id"], surface="*", limit=12),
                                     metadata=md(api_key), timeout=10)
        assert [i["item_id"] for i in row["items"]] == [i.item_id for i in served.items]
        assert [i["reason"] for i in row["items"]] == [i.reason for i in served.items]
        # the same computation on the same versions: equal scores (JSON float round trip aside)
        assert [i["score"] for i in row["items"]] == pytest.approx([i.score for i in served.items], rel=1e-6)
        assert row["level"] == served.degradation_level
        assert row["model_version"] == served.model_version and row["model_version"]
        assert row["config_version"] == config_version
        assert row["surface"] == "*" and row["valid_until"] > row["generated_at"]

    # the Admin RPC streams the same rows (max_users bounds it)
    admin = funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target))
    streamed = list(admin.BatchPlan(funnel_pb2.BatchPlanRequest(tenant_id="demo", surface="*", segment=segment,
                                                                limit=12, max_users=10, valid_hours=6),
                                    metadata=(("x-admin-key", admin_key),), timeout=120))
    assert [r.user_id for r in streamed] == [r["user_id"] for r in rows[:10]]
    for got, row in zip(streamed, rows):
        assert [i.item_id for i in got.items] == [i["item_id"] for i in row["items"]]
        assert got.model_version == row["model_version"] and got.config_version == config_version
        assert got.valid_until_ms - got.generated_at_ms == 6 * 3_600_000


def test_a_named_segment_plans_exactly_the_users_getfeed_puts_in_it(planned_server, tmp_path):
    """Named segments (server.segments): a plan takes the users whose segment GetFeed
    computes now, and each row is what GetFeed answers them (with the segment's
    eligibility rule applied)."""
    server, data_dir, admin_key, api_key, _ = planned_server
    stub = funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target))
    amd = (("x-admin-key", admin_key),)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    tenant.segments.add(name="heavy", min_interactions=40)
    tenant.segments.add(name="all")  # a segment literally named "all": reached as "segment:all"
    tenant.surfaces["*"].segment_rules["heavy"].blocked_categories[:] = ["Drama"]
    stored = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    time.sleep(0.7)  # registry refresh interval is 0.5 s

    out = str(tmp_path / "heavy.jsonl")
    result = batch_plan(data_dir, "--segment", "heavy", "--limit", "10", "--max-users", "0", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in open(out)]
    planned = [r["user_id"] for r in rows]
    _, tops = top_categories(data_dir)  # every stored user, in store order
    recommender = funnel_pb2_grpc.RecommenderStub(grpc.insecure_channel(server.target))
    in_segment = [u for u in list(tops)[:400]
                  if stub.GetUserSegment(funnel_pb2.UserRef(tenant_id="demo", user_id=u), metadata=amd).segment
                  == "heavy"]
    assert 0 < len(in_segment) < 400
    assert [u for u in planned if u in set(list(tops)[:400])] == in_segment  # nobody missing, nobody extra
    for row in rows[:15]:
        served = recommender.GetFeed(funnel_pb2.FeedRequest(user_id=row["user_id"], limit=10),
                                     metadata=md(api_key), timeout=10)
        assert served.segment == "heavy"
        assert [i["item_id"] for i in row["items"]] == [i.item_id for i in served.items]
        assert "Drama" not in {i.category for i in served.items}
        assert row["config_version"] == stored.version

    streamed = list(stub.BatchPlan(funnel_pb2.BatchPlanRequest(tenant_id="demo", segment="segment:all",
                                                               max_users=5), metadata=amd, timeout=120))
    assert streamed and all(r.user_id not in set(planned) for r in streamed)  # "heavy" comes first in order
    with pytest.raises(grpc.RpcError) as err:
        list(stub.BatchPlan(funnel_pb2.BatchPlanRequest(tenant_id="demo", segment="segment:nope"), metadata=amd))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "heavy, all" in err.value.details()


def test_all_segment_plans_every_user_up_to_the_bound(planned_server, tmp_path):
    server, data_dir, admin_key, *_ = planned_server
    out = str(tmp_path / "all.jsonl")
    assert batch_plan(data_dir, "--max-users", "7", "--out", out).returncode == 0
    rows = [json.loads(line) for line in open(out)]
    _, tops = top_categories(data_dir)
    assert [r["user_id"] for r in rows] == list(tops)[:7]  # store order, users without affinity too
    assert all(len(r["items"]) == 20 for r in rows)  # the tenant's default_limit


def test_bad_plan_arguments_get_precise_statuses(planned_server, tmp_path):
    server, data_dir, admin_key, *_ = planned_server
    admin = funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target))
    amd = (("x-admin-key", admin_key),)
    cases = [
        (dict(tenant_id="nope"), grpc.StatusCode.NOT_FOUND, "tenant_id"),
        (dict(tenant_id="demo", surface="no-such-surface"), grpc.StatusCode.INVALID_ARGUMENT, "surface"),
        (dict(tenant_id="demo", segment="top-category:NoSuchGenre"), grpc.StatusCode.INVALID_ARGUMENT, "segment"),
        (dict(tenant_id="demo", segment="favourites"), grpc.StatusCode.INVALID_ARGUMENT, "segment"),
        (dict(tenant_id="demo", max_users=10**6), grpc.StatusCode.INVALID_ARGUMENT, "max_users"),
        (dict(tenant_id="demo", limit=5000), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ]
    for fields, code, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(admin.BatchPlan(funnel_pb2.BatchPlanRequest(**fields), metadata=amd, timeout=30))
        assert err.value.code() == code, fields
        assert err.value.details().startswith(field), err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        list(admin.BatchPlan(funnel_pb2.BatchPlanRequest(tenant_id="demo"), metadata=(("x-admin-key", "x"),)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    out = str(tmp_path / "bad.jsonl")
    for args, field in ((["--surface", "nowhere"], "surface"), (["--segment", "top-category:Nope"], "segment")):
        result = batch_plan(data_dir, *args, "--out", out)
        assert result.returncode == 2 and f"funnel batch-plan: {field}:" in result.stderr
        assert not os.path.exists(out)
