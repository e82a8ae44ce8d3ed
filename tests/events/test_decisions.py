"""The decision log end to end: a real nats-server, a real `funnel serve` (which logs every
served response to FUNNEL_DECISIONS), `funnel replay` as a real subprocess, erasure; and,
in process, the bounded buffer that drops and counts instead of blocking."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import grpc
import pytest

from protos import funnel_pb2, funnel_pb2_grpc
from server.decisions.stream import STREAM, decision_subject, find_decision, tenant_filter
from server.events.nats_server import subject_for
from tests.conftest import ROOT
from tests.events.helpers import admin_call, probe_connect, wait_until
from tests.integration.test_feed import active_users, md

pytestmark = pytest.mark.integration


def test_decision_subject_uses_the_event_streams_user_hash():
    for user in ("1", "someone-new", "ü/ñ.x*"):
        assert decision_subject("demo", user).split(".")[1:] == ["decisions", "demo",
                                                                 subject_for("demo", user).rsplit(".", 1)[1]]


# ------------------------------------------------------------------ helpers
async def _decisions(nats_url: str, tenant: str = "demo") -> list[tuple[str, funnel_pb2.Decision]]:
    """(subject, Decision) of every stored decision of ``tenant``, oldest first."""
    from nats.js.api import DeliverPolicy

    nc = await probe_connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM, subjects_filter=tenant_filter(tenant))
        total = sum((info.state.subjects or {}).values())
        found = []
        if total:
            sub = await js.subscribe(tenant_filter(tenant), stream=STREAM, ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.ALL)
            while len(found) < total:
                msg = await sub.next_msg(timeout=5)
                found.append((msg.subject, funnel_pb2.Decision.FromString(msg.data)))
            await sub.unsubscribe()
        return found
    finally:
        await nc.close()


def decisions(nats_url: str, tenant: str = "demo"):
    try:
        return asyncio.run(_decisions(nats_url, tenant))
    except Exception:  # the stream does not exist yet
        return []


def wait_logged(nats_url: str, request_ids) -> dict[str, tuple[str, funnel_pb2.Decision]]:
    wanted = set(request_ids)

    def logged():
        found = {d.request_id: (subject, d) for subject, d in decisions(nats_url)}
        return found if wanted <= set(found) else None

    return wait_until(logged, 20, interval=0.2, what="the decisions to reach FUNNEL_DECISIONS")


def replay(data_dir: str, nats_url: str, request_id: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, FUNNEL_LOG_LEVEL="WARNING")
    return subprocess.run([sys.executable, "-m", "server.cli", "replay", request_id, "--data-dir", data_dir,
                           "--nats", nats_url, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture
def logged_server(data_dir_copy, nats_server, start_server):
    """`funnel serve --nats` over a private copy of the trained demo tenant, with a latency
    budget generous enough that no response is degraded by time (replays must match)."""
    data_dir, admin_key, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    stub = funnel_pb2_grpc.AdminStub(server.channel)
    amd = (("x-admin-key", admin_key),)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    tenant.latency_budget_ms = 10_000
    stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    time.sleep(0.7)  # registry refresh
    return server, data_dir, admin_key, api_key


# ------------------------------------------------------------------ tests
def test_every_served_response_is_logged_with_its_fields(logged_server, nats_server):
    server, data_dir, admin_key, api_key = logged_server
    with_experiments = "experiments" in funnel_pb2.Tenant.DESCRIPTOR.fields_by_name
    if with_experiments:  # a running experiment on "home": its variant must reach the decision
        stub, amd = funnel_pb2_grpc.AdminStub(server.channel), (("x-admin-key", admin_key),)
        tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
        tenant.experiments.append(funnel_pb2.Experiment(
            name="dlog", surface="home", status=funnel_pb2.EXPERIMENT_RUNNING,
            variants=[funnel_pb2.Variant(name="a", weight=1), funnel_pb2.Variant(name="b", weight=1)]))
        stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
        time.sleep(0.7)  # registry refresh
    recommender = funnel_pb2_grpc.RecommenderStub(server.channel)
    users = active_users(data_dir, 2)
    started_ms = int(time.time() * 1000)
    sent = []
    for user in users:
        request = funnel_pb2.FeedRequest(user_id=user, surface="home", limit=7,
                                         exclude_item_ids=["does-not-exist"])
        sent.append((request, recommender.GetFeed(request, metadata=md(api_key), timeout=10)))
    page2 = funnel_pb2.FeedRequest(user_id=users[0], surface="home", limit=7, cursor=sent[0][1].next_cursor)
    sent.append((page2, recommender.GetFeed(page2, metadata=md(api_key), timeout=10)))
    related = funnel_pb2.RelatedRequest(item_id=sent[0][1].items[0].item_id, limit=5)
    sent.append((related, recommender.GetRelated(related, metadata=md(api_key), timeout=10)))
    with pytest.raises(grpc.RpcError):  # not served: not logged
        recommender.GetFeed(funnel_pb2.FeedRequest(user_id=""), metadata=md(api_key), timeout=10)
    version = admin_call(server, admin_key, "GetTenant", funnel_pb2.GetTenantRequest(tenant_id="demo")).version

    logged = wait_logged(nats_server.url, [r.request_id for _, r in sent])
    assert len(decisions(nats_server.url)) == len(sent)  # exactly one per served response
    for request, response in sent:
        subject, d = logged[response.request_id]
        assert subject == decision_subject("demo", request.user_id)
        assert d.tenant_id == "demo" and d.user_id == request.user_id
        assert d.user_hash == subject_for("demo", request.user_id).rsplit(".", 1)[1]
        if isinstance(request, funnel_pb2.FeedRequest):
            assert d.WhichOneof("request") == "feed" and d.feed == request and d.surface == "home"
        else:
            assert d.WhichOneof("request") == "related" and d.related == request and d.surface == "related"
        assert list(d.items) == list(response.items)  # ids, scores, reasons, positions as served
        assert d.model_version == response.model_version
        assert d.degradation_level == response.degradation_level and d.mode == response.mode
        assert d.latency_us == response.server_time_us
        assert d.config_version == version
        if with_experiments and isinstance(request, funnel_pb2.FeedRequest):
            assert d.experiment == "dlog" and d.variant in ("a", "b")
        assert (d.experiment, d.variant, d.canary) == (getattr(response, "experiment", ""),
                                                       getattr(response, "variant", ""),
                                                       getattr(response, "canary", False))
        assert started_ms <= d.served_at_ms <= int(time.time() * 1000)
    assert logged[sent[2][1].request_id][1].items[0].position == 7  # the second page as served


def test_replay_reproduces_a_decision_and_reports_a_catalog_change(logged_server, nats_server):
    server, data_dir, admin_key, api_key = logged_server
    user = active_users(data_dir, 1)[0]
    response = server.feed(user, api_key, "demo", limit=10)
    assert response.degradation_level == 0
    wait_logged(nats_server.url, [response.request_id])

    same = replay(data_dir, nats_server.url, response.request_id, "--tenant", "demo")
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().endswith("identical")

    gone = response.items[2].item_id
    admin_call(server, admin_key, "DeactivateItem", funnel_pb2.ItemRef(tenant_id="demo", item_id=gone))
    changed = replay(data_dir, nats_server.url, response.request_id)  # without --tenant: scans every tenant
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "removed" in changed.stdout and gone in changed.stdout
    assert "differs:" in changed.stdout

    missing = replay(data_dir, nats_server.url, "0" * 32, "--tenant", "demo")
    assert missing.returncode == 2 and "not found" in missing.stdout


def test_replay_uses_the_logged_config_version_or_says_it_is_gone(logged_server, nats_server):
    from server.store import LmdbStore
    from server.tenancy import history_key

    server, data_dir, admin_key, api_key = logged_server
    user = active_users(data_dir, 3)[2]
    response = server.feed(user, api_key, "demo", limit=10)
    served = wait_logged(nats_server.url, [response.request_id])[response.request_id][1]
    stub = funnel_pb2_grpc.AdminStub(server.channel)
    amd = (("x-admin-key", admin_key),)
    tenant = stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
    tenant.blocked_item_ids.append(response.items[0].item_id)  # the current config would not serve it
    current = stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd).version
    assert current > served.config_version

    restored = replay(data_dir, nats_server.url, response.request_id, "--tenant", "demo")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"config version {served.config_version} restored" in restored.stdout

    store = LmdbStore.open(data_dir)  # the logged version leaves the history
    try:
        with store.write() as txn:
            assert txn.delete(history_key("demo", served.config_version), db=store.db["config_history"])
    finally:
        store.close()
    gone = replay(data_dir, nats_server.url, response.request_id, "--tenant", "demo")
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"config version {served.config_version} not available, using {current}" in gone.stdout
    assert "removed" in gone.stdout and response.items[0].item_id in gone.stdout


def test_delete_user_purges_their_decisions(logged_server, nats_server):
    server, data_dir, admin_key, api_key = logged_server
    erased, kept = active_users(data_dir, 2)
    ids = [server.feed(u, api_key, "demo").request_id for u in (erased, erased, kept)]
    wait_logged(nats_server.url, ids)
    answer = admin_call(server, admin_key, "DeleteUser", funnel_pb2.UserRef(tenant_id="demo", user_id=erased))
    assert answer.decisions_purged == 2
    left = decisions(nats_server.url)
    assert [d.user_id for _, d in left] == [kept]
    assert not [s for s, _ in left if s == decision_subject("demo", erased)]


async def test_a_full_buffer_drops_and_counts_instead_of_blocking(trained_data_dir, nats_server):
    from server.app import ServeSettings, ServingApp
    from server.decisions.log import DecisionLog
    from server.events.outbox import Outbox
    from server.events.publisher import EventPublisher
    from server.servicers.recommender import RecommenderServicer
    from tests.conftest import free_port

    data_dir, _, api_key = trained_data_dir
    nats_server.stop()  # NATS configured but down
    app = ServingApp(ServeSettings(data_dir=data_dir, nats_url=nats_server.url))
    publisher = EventPublisher(nats_server.url, Outbox(app.store))
    await publisher.start(wait_s=0.2)
    log = DecisionLog(publisher, app.metrics, capacity=3)  # not draining yet: the buffer fills
    server = grpc.aio.server()
    funnel_pb2_grpc.add_RecommenderServicer_to_server(RecommenderServicer(app, log), server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = funnel_pb2_grpc.RecommenderStub(channel)
            users = active_users(data_dir, 5)
            answers = [await stub.GetFeed(funnel_pb2.FeedRequest(user_id=users[k % 5], limit=5),
                                          metadata=md(api_key), timeout=30) for k in range(10)]
        assert all(len(a.items) == 5 for a in answers)  # every call served
        sample = app.metrics.registry.get_sample_value
        assert log.buffered == 3
        assert sample("funnel_decisions_dropped_total", {"reason": "buffer_full"}) == 7
        await log.flush()  # the drain task's step: NATS is down, so the buffered ones are dropped too
        assert log.buffered == 0
        assert sample("funnel_decisions_dropped_total", {"reason": "nats_unavailable"}) == 3
        assert sample("funnel_decisions_logged_total") == 0
    finally:
        await server.stop(None)
        await publisher.close()
        app.store.close()


async def test_find_decision_scans_past_other_decisions(nats_server):
    """The lookup replay uses: the right decision among many, per tenant filter, or none."""
    import nats

    from server.decisions.stream import ensure_decision_stream

    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await ensure_decision_stream(js)
        for k in range(50):
            tenant = "a" if k % 2 else "b"
            d = funnel_pb2.Decision(request_id=f"r{k}", tenant_id=tenant, user_id=f"u{k}")
            await js.publish(decision_subject(tenant, f"u{k}"), d.SerializeToString(),
                             headers={"Nats-Msg-Id": f"r{k}"})
        found = await find_decision(js, "r41", "a")
        assert found.decision.user_id == "u41" and found.scanned == 21  # a's decisions only, in order
        assert (await find_decision(js, "r41", "b")).decision is None
        assert (await find_decision(js, "r48")).decision.tenant_id == "b"
        missing = await find_decision(js, "nope")
        assert missing.decision is None and missing.scanned == 50
    finally:
        await nc.close()


def test_replay_pins_the_logged_model_version_after_a_new_deploy(logged_server, nats_server):
    from tests.model_builders import good_model, upload

    server, data_dir, admin_key, api_key = logged_server
    user = active_users(data_dir, 4)[3]
    before = server.feed(user, api_key, "demo", limit=10)
    wait_logged(nats_server.url, [before.request_id])
    stub, amd = funnel_pb2_grpc.AdminStub(server.channel), (("x-admin-key", admin_key),)
    info = upload(stub, amd, good_model(seed=11))
    stub.DeployModel(funnel_pb2.DeployModelRequest(tenant_id="demo", kind="rank", version=info.version,
                                                   canary_percent=100, reason="replay test"), metadata=amd)
    time.sleep(1.2)  # registry refresh
    after = server.feed(user, api_key, "demo", limit=10)
    assert after.model_version != before.model_version and after.model_version.endswith(info.version[:12])

    pinned = replay(data_dir, nats_server.url, before.request_id, "--tenant", "demo")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert f"model version {before.model_version} loaded from the registry" in pinned.stdout
