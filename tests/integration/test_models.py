"""Model registry and deployments against real `funnel serve` processes: uploads
refused with the old model still serving, a 30 % canary (share and stickiness), ramp
and rollback under background traffic on two workers, automatic rollback of a bad
canary, and `funnel index publish`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from kernels.layout import FEATURES
from protos import funnel_pb2, funnel_pb2_grpc
from tests.conftest import ROOT, ServerProcess, free_port, wait_serving
from tests.integration.test_feed import active_users, md
from tests.model_builders import (
    batch_multiple_model,
    good_model,
    nan_everywhere_model,
    saturated_affinity_model,
    slow_model,
    upload,
)
from server.models.onnx_build import linear_model

pytestmark = pytest.mark.integration


class MetricsServer(ServerProcess):
    """`funnel serve` with Prometheus endpoints (worker i on metrics_port + i)."""

    def __init__(self, data_dir: str, workers: int):
        self.port, self.metrics_port = free_port(), free_port()
        while self.metrics_port + 1 == self.port:
            self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT, FUNNEL_LOG_LEVEL="WARNING")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--data-dir", data_dir, "--port", str(self.port),
             "--workers", str(workers), "--grace", "5", "--no-embedded-nats", "--no-ingest",
             "--metrics-port", str(self.metrics_port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        wait_serving(self.target, self.proc)
        self.workers = workers

    def metric_total(self, name: str) -> float:
        total = 0.0
        for i in range(self.workers):
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port + i}/metrics", timeout=5).read()
            for line in text.decode().splitlines():
                if line.startswith(name + "{") or line.startswith(name + " "):
                    total += float(line.rsplit(" ", 1)[1])
        return total


def admin(server, admin_key):
    return funnel_pb2_grpc.AdminStub(grpc.insecure_channel(server.target)), (("x-admin-key", admin_key),)


def feed(target, api_key, user_id):
    """One GetFeed on a fresh connection (SO_REUSEPORT spreads connections over the workers)."""
    with grpc.insecure_channel(target) as channel:
        return funnel_pb2_grpc.RecommenderStub(channel).GetFeed(
            funnel_pb2.FeedRequest(user_id=user_id, limit=10), metadata=md(api_key), timeout=20)


def rank_tag(resp) -> str:
    return resp.model_version.split("+")[-1]


class Traffic:
    """Background GetFeed threads; every failure is kept."""

    def __init__(self, target, api_key, users, threads=3):
        self.target, self.api_key, self.users = target, api_key, users
        self.stop, self.failures, self.served = threading.Event(), [], 0
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, k):
        channel = grpc.insecure_channel(self.target)
        stub = funnel_pb2_grpc.RecommenderStub(channel)
        i = k
        while not self.stop.is_set():
            try:
                resp = stub.GetFeed(funnel_pb2.FeedRequest(user_id=self.users[i % len(self.users)], limit=10),
                                    metadata=md(self.api_key), timeout=20)
                assert resp.items and resp.model_version, resp
                self.served += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(exc))
            i += len(self.threads)
        channel.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def wait_for(predicate, timeout=3.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def test_invalid_models_are_refused_and_the_old_one_keeps_serving(data_dir_copy):
    data_dir, admin_key, api_key = data_dir_copy
    server = ServerProcess(data_dir)
    try:
        stub, amd = admin(server, admin_key)
        before = feed(server.target, api_key, "1")
        listed = stub.ListModels(funnel_pb2.ListModelsRequest(tenant_id="demo"), metadata=amd)
        assert sorted(m.kind for m in listed.models) == ["prerank", "rank"]  # what train registered
        assert {m.uploaded_by for m in listed.models} == {"funnel train"}
        refused = [
            (linear_model(np.ones(len(FEATURES) + 2, dtype=np.float32), 0.0), FEATURES, "width"),
            (good_model(1), FEATURES[:-1] + ("watch_time_z",), "unknown feature"),
            (nan_everywhere_model(), FEATURES, "NaN"),
        ]
        for blob, features, reason in refused:
            with pytest.raises(grpc.RpcError) as err:
                upload(stub, amd, blob, features=features)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and reason in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            upload(stub, amd, b"\0" * ((64 << 20) + 1), chunk=1 << 20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for request, code in ((funnel_pb2.ListModelsRequest(tenant_id="nope"), grpc.StatusCode.NOT_FOUND),
                              (funnel_pb2.ListModelsRequest(tenant_id="demo", kind="x"),
                               grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as err:
                stub.ListModels(request, metadata=amd)
            assert err.value.code() == code
        with pytest.raises(grpc.RpcError) as err:
            stub.ListModels(funnel_pb2.ListModelsRequest(tenant_id="demo"), metadata=(("x-admin-key", "wrong"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        after = stub.ListModels(funnel_pb2.ListModelsRequest(tenant_id="demo"), metadata=amd)
        assert len(after.models) == 2
        deploy_errors = [
            (dict(kind="rank", version="0" * 64), grpc.StatusCode.NOT_FOUND),
            (dict(kind="prerank", version=[m.version for m in after.models if m.kind == "rank"][0]),
             grpc.StatusCode.FAILED_PRECONDITION),
            (dict(kind="rank", version=after.models[0].version, canary_percent=150), grpc.StatusCode.INVALID_ARGUMENT),
        ]
        for fields, code in deploy_errors:
            with pytest.raises(grpc.RpcError) as err:
                stub.DeployModel(funnel_pb2.DeployModelRequest(tenant_id="demo", **fields), metadata=amd)
            assert err.value.code() == code, fields
        time.sleep(0.7)
        resp = feed(server.target, api_key, "1")
        assert resp.degradation_level == 0 and resp.model_version == before.model_version and not resp.canary
    finally:
        server.stop()


def test_canary_ramp_and_rollback_under_traffic_on_two_workers(data_dir_copy):
    data_dir, admin_key, api_key = data_dir_copy
    server = ServerProcess(data_dir, workers=2)
    traffic = None
    try:
        stub, amd = admin(server, admin_key)
        stable = feed(server.target, api_key, "1")
        old_tag = rank_tag(stable)
        info = upload(stub, amd, good_model(7), uploaded_by="tester", metrics_json='{"auc": 0.71}')
        assert info.created and info.uploaded_by == "tester" and json.loads(info.metrics_json) == {"auc": 0.71}
        new_tag = info.version[:12]
        traffic = Traffic(server.target, api_key, [f"bg-{i}" for i in range(50)])

        dep = stub.DeployModel(funnel_pb2.DeployModelRequest(
            tenant_id="demo", kind="rank", version=info.version, canary_percent=30, reason="canary 30",
            guardrails=funnel_pb2.Guardrails(max_error_rate=0.5)), metadata=amd + (("x-actor", "ops-bot"),))
        assert (dep.canary, dep.canary_percent, dep.history[-1].actor) == (info.version, 30, "ops-bot")
        time.sleep(1.2)  # every worker refreshes within refresh_s (0.5 s)
        users = [f"canary-user-{i}" for i in range(300)]
        side = {}
        for user in users:
            resp = feed(server.target, api_key, user)
            assert resp.degradation_level == 0
            assert rank_tag(resp) == (new_tag if resp.canary else old_tag)
            side[user] = resp.canary
        share, p = np.mean(list(side.values())), 0.30
        assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / len(users)), share
        for user in users[:60]:  # sticky, whichever worker answers
            assert feed(server.target, api_key, user).canary == side[user]

        stub.RampModel(funnel_pb2.RampModelRequest(tenant_id="demo", kind="rank", percent=100, reason="good"),
                       metadata=amd)
        assert wait_for(lambda: all(rank_tag(feed(server.target, api_key, f"r{i}")) == new_tag for i in range(20)))
        for i in range(20):  # promoted: stable for everyone, on every worker
            resp = feed(server.target, api_key, users[i])
            assert rank_tag(resp) == new_tag and not resp.canary

        dep = stub.RollbackModel(funnel_pb2.RollbackModelRequest(tenant_id="demo", kind="rank", reason="undo"),
                                 metadata=amd)
        assert dep.stable.startswith(old_tag) and not dep.canary
        assert wait_for(lambda: all(rank_tag(feed(server.target, api_key, f"b{i}")) == old_tag for i in range(20)))
        listed = stub.ListDeployments(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
        rank = [d for d in listed.deployments if d.kind == "rank" and d.surface == "*"][0]
        assert [h.action for h in rank.history] == ["publish", "canary", "promote", "rollback"]
        assert [h.reason for h in rank.history][1:] == ["canary 30", "good", "undo"]
        traffic.finish()
        assert traffic.failures == [] and traffic.served > 0
    finally:
        if traffic is not None:
            traffic.finish()
        server.stop()


def single_category_users(data_dir, n):
    """Users whose whole history is in one category (their category_affinity feature is exactly 1.0)."""
    from kernels.layout import MAX_CATEGORIES, USER_AFFINITY
    from server.store import LmdbStore, user_row_view

    store = LmdbStore.open(data_dir)
    found = []
    with store.snapshot() as snap:
        for user_id, value in store.iter_users(snap.txn, "demo"):
            affinity = user_row_view(value)[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
            if np.count_nonzero(affinity) == 1:
                found.append(user_id)
                if len(found) == n:
                    break
    store.close()
    assert len(found) >= 50
    return found


def auto_rollback_run(data_dir, admin_key, api_key, blob, guardrails, users):
    """Deploys ``blob`` as a 50 % rank canary with ``guardrails`` on two workers and
    sends GetFeed for ``users`` until the canary is rolled back; checks every worker
    drops it and that one rollback was counted. Returns (served, the
    auto-rollback history entry, its measured values); served = responses that a
    canary model scored (a canary that fails serves none; its requests degrade)."""
    server = MetricsServer(data_dir, workers=2)
    try:
        stub, amd = admin(server, admin_key)
        stable_tag = rank_tag(feed(server.target, api_key, "1"))
        info = upload(stub, amd, blob)  # accepted: the registry's probe cannot see the flaw
        stub.DeployModel(funnel_pb2.DeployModelRequest(
            tenant_id="demo", kind="rank", version=info.version, canary_percent=50, guardrails=guardrails),
            metadata=amd)
        time.sleep(1.2)

        def rolled_back():
            listed = stub.ListDeployments(funnel_pb2.GetTenantRequest(tenant_id="demo"), metadata=amd)
            return [d for d in listed.deployments if d.kind == "rank" and d.surface == "*" and not d.canary]

        served_canary, done = 0, None
        for i in range(1500):
            resp = feed(server.target, api_key, users[i % len(users)])
            served_canary += resp.canary
            if i % 20 == 19:
                done = rolled_back()
                if done:
                    break
        assert done, "the canary was never rolled back"
        event = done[0].history[-1]
        assert event.action == "auto-rollback" and event.dropped == info.version
        assert event.actor.startswith("auto-rollback")
        time.sleep(1.2)
        for i in range(30):  # every worker dropped the canary
            resp = feed(server.target, api_key, users[i % len(users)])
            assert not resp.canary and rank_tag(resp) == stable_tag
        assert server.metric_total("funnel_canary_rollbacks_total") == 1.0  # one writer, whichever tripped
        return served_canary, event, json.loads(event.measured_json)
    finally:
        server.stop()


def test_a_canary_that_breaks_a_guardrail_is_rolled_back_automatically(data_dir_copy):
    """The bad canary adds log(1 - category_affinity): finite on the registry's probe
    (which samples affinity in [0, 1)), -inf for candidates in the only category a
    user has watched (affinity exactly 1.0), which real users with a one-category
    history produce. So registration accepts it, and the max_nan_rate = 0 guardrail
    catches it in traffic."""
    data_dir, admin_key, api_key = data_dir_copy
    served, event, measured = auto_rollback_run(
        data_dir, admin_key, api_key, saturated_affinity_model(),
        funnel_pb2.Guardrails(max_nan_rate=0.0, min_requests=10), single_category_users(data_dir, 400))
    assert "max_nan_rate" in event.reason and served > 0
    assert measured["nonfinite_scores"] > 0 and measured["requests"] >= 10


def test_a_canary_that_fails_at_run_time_is_rolled_back_on_its_error_rate(data_dir_copy):
    """The canary runs only on batches whose size is a multiple of 8: the probe's 264
    rows pass, the ranker's 300 candidates make ONNX Runtime fail. Every such request
    still gets an answer (from a fallback level) and counts as a canary error."""
    data_dir, admin_key, api_key = data_dir_copy
    served, event, measured = auto_rollback_run(
        data_dir, admin_key, api_key, batch_multiple_model(8),
        funnel_pb2.Guardrails(max_error_rate=0.2, min_requests=10), active_users(data_dir, 200))
    assert "max_error_rate" in event.reason and served == 0
    assert measured["scorer_errors"] > 0.2 * measured["requests"] and measured["requests"] >= 10


def test_a_canary_slower_than_its_latency_guardrail_is_rolled_back(data_dir_copy):
    """A finite but slow ranker (tens of ms for 300 rows) against max_p99_ms = 30: the
    canary's requests are measured, never the stable model's."""
    data_dir, admin_key, api_key = data_dir_copy
    _, event, measured = auto_rollback_run(
        data_dir, admin_key, api_key, slow_model(),
        funnel_pb2.Guardrails(max_p99_ms=30.0, min_requests=10), active_users(data_dir, 200))
    assert "max_p99_ms" in event.reason
    assert measured["p99_ms"] > 30.0 and measured["scorer_errors"] == 0 and measured["nonfinite_scores"] == 0


def test_index_publish_swaps_a_checked_index_while_serving(data_dir_copy, tmp_path):
    """The rebuilt cf index leaves out every item the cf source served to some users;
    after `funnel index publish` none of those comes from cf any more, without a restart."""
    from indexes.ann import build_index, open_index
    from kernels.layout import CF_DIM, ITEM_CF
    from server.store import LmdbStore
    from server.store.lmdb_store import idx_key

    data_dir, admin_key, api_key = data_dir_copy
    store = LmdbStore.open(data_dir)
    with store.snapshot() as snap:
        pointer = store.get_state(snap.txn, "demo", "index:cf")
        n_items = store.get_state(snap.txn, "demo", "n_items")
        index_of = {(store.get_json(snap.txn, "item_meta", idx_key("demo", i)) or {}).get("id"): i
                    for i in range(n_items)}
        rows = store.read_item_rows(snap.txn, "demo", n_items)  # the CF embeddings the cf index holds
    store.close()

    def cf_items(server, users):
        return {item.item_id for user in users
                for item in feed_limit(server.target, api_key, user, 50).items if "cf" in item.sources}

    server = ServerProcess(data_dir)
    try:
        users = active_users(data_dir, 8)
        removed = cf_items(server, users)
        assert removed
        old = open_index(os.path.join(data_dir, pointer["path"]))
        keys = np.array(sorted(set(int(k) for k in old.keys) - {index_of[i] for i in removed}), dtype=np.int64)
        vectors = rows[keys, ITEM_CF:ITEM_CF + CF_DIM]
        rebuilt, wrong_metric, wrong_dims = (str(tmp_path / n) for n in ("cf.usearch", "cos.usearch", "d16.usearch"))
        build_index(vectors, keys, "ip", rebuilt)
        build_index(vectors, keys, "cos", wrong_metric)
        build_index(vectors[:, :16], keys, "ip", wrong_dims)

        def publish(path, kind="cf"):
            return subprocess.run([sys.executable, "-m", "server.cli", "index", "publish", "--data-dir", data_dir,
                                   "--tenant", "demo", "--kind", kind, path], cwd=ROOT, capture_output=True,
                                  text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)

        for path, reason in ((wrong_metric, "metric"), (wrong_dims, "16-d")):
            result = publish(path)
            assert result.returncode == 2 and reason in result.stderr, result.stderr
        garbage = tmp_path / "garbage.usearch"
        garbage.write_bytes(b"not an index" * 1000)
        for path, tenant, kind, code, reason in (
                (wrong_metric, "demo", "cf", grpc.StatusCode.INVALID_ARGUMENT, "metric"),
                (wrong_dims, "demo", "cf", grpc.StatusCode.INVALID_ARGUMENT, "16-d"),
                (str(garbage), "demo", "cf", grpc.StatusCode.INVALID_ARGUMENT, "not a USearch index"),
                (rebuilt, "demo", "bm25", grpc.StatusCode.INVALID_ARGUMENT, "kind"),
                (rebuilt, "nobody", "cf", grpc.StatusCode.NOT_FOUND, "nobody")):
            with pytest.raises(grpc.RpcError) as refused:
                publish_rpc(server.target, admin_key, path, tenant, kind)
            assert refused.value.code() == code and reason in refused.value.details(), refused.value.details()
        assert cf_items(server, users[:2]) & removed  # refused files changed nothing
        info = publish_rpc(server.target, admin_key, rebuilt, "demo", "cf")
        assert (info.kind, info.count, info.metric) == ("cf", keys.size, "ip") and info.version.endswith("-published")
        time.sleep(1.0)
        now = cf_items(server, users)
        assert now and not (now & removed)
        result = publish(rebuilt)  # the CLI publishes the same file as a new version
        assert result.returncode == 0 and "-published" in result.stdout, result.stderr
        time.sleep(1.0)
        now = cf_items(server, users)
        assert now and not (now & removed)
        assert os.listdir(os.path.join(data_dir, "uploads")) == []  # uploads are cleaned up
    finally:
        server.stop()


def publish_rpc(target, admin_key, path, tenant, kind, chunk=1 << 16):
    def chunks():
        with open(path, "rb") as f:
            first = True
            while data := f.read(chunk):
                yield funnel_pb2.IndexChunk(tenant_id=tenant, kind=kind, data=data) if first else \
                    funnel_pb2.IndexChunk(data=data)
                first = False

    with grpc.insecure_channel(target) as channel:
        return funnel_pb2_grpc.AdminStub(channel).PublishIndex(chunks(), metadata=(("x-admin-key", admin_key),),
                                                               timeout=60)


def feed_limit(target, api_key, user_id, limit):
    with grpc.insecure_channel(target) as channel:
        return funnel_pb2_grpc.RecommenderStub(channel).GetFeed(
            funnel_pb2.FeedRequest(user_id=user_id, limit=limit), metadata=md(api_key), timeout=20)


def test_an_experiment_model_override_wins_over_the_deployment(data_dir_copy):
    """In process: a variant's registered rank version scores its users; an unknown one
    is ignored (the deployment serves), and so is any override under linear_model_json."""
    from dataclasses import replace

    from server.app import ServeSettings, ServingApp
    from server.models.registry import ModelRegistry
    from server.pipeline.state import request_state
    from server.tenancy import Experiment, TenantRegistry, Variant

    data_dir, _, _ = data_dir_copy
    app = ServingApp(ServeSettings(data_dir=data_dir))
    try:
        record, _ = ModelRegistry(app.store, data_dir).register("demo", "rank", good_model(11), uploaded_by="t")
        tenants = TenantRegistry(app.store)

        def serve_with(model_version, **config):
            with app.store.snapshot() as snap:
                current = tenants.get(snap.txn, "demo")
            experiment = Experiment("models", status="running", variants=(
                Variant("a", model_version=model_version), Variant("b", model_version=model_version)))
            tenants.put(replace(current, experiments=(experiment,), **config))
            app.registry.invalidate("demo")
            with app.store.snapshot() as snap:
                runtime = app.registry.get(snap, "demo")
                results = [app.funnel.run(request_state(snap, runtime, f"u{i}", "home", 10, 5.0)) for i in range(5)]
            return runtime, results

        runtime, results = serve_with(record.version[:16])
        assert all(r.level == 0 and r.model_version.endswith("+" + record.tag) and not r.canary for r in results)
        deployed = runtime.rank.version
        _, results = serve_with("f" * 64)  # not registered: the deployment serves
        assert all(r.model_version.endswith("+" + deployed) for r in results)
        _, results = serve_with(record.version, linear_model_json='{"cf_score": 1.0}')
        assert all("+linear-" in r.model_version for r in results)
    finally:
        app.store.close()
