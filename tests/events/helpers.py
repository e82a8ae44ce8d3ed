"""Helpers for the event-path tests: processes, LMDB and JetStream probes, event builders."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import grpc
import numpy as np

from protos import funnel_pb2, funnel_pb2_grpc
from tests.conftest import ROOT, free_port, stop_process_group


async def probe_connect(nats_url: str, timeout: float = 10.0):
    """A NATS connection for a probe, failing within ``timeout`` when the server is down
    (nats-py's first connect retries forever with max_reconnect_attempts=0)."""
    import nats

    return await asyncio.wait_for(nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1), timeout)


def wait_until(check, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls ``check()`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _health(target: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


class Proc:
    """A funnel CLI subprocess in its own session; output goes to ``log_path``."""

    def __init__(self, args: list[str], log_path: str):
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=ROOT, FUNNEL_LOG_LEVEL="INFO")
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-4000:]

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        return stop_process_group(self.proc, sig, timeout)


class EventServer(Proc):
    """``funnel serve`` on a free port against ``nats_url`` (its own ingest worker included)."""

    def __init__(self, data_dir: str, nats_url: str, log_path: str, extra: tuple[str, ...] = ()):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        super().__init__(["serve", "--data-dir", data_dir, "--port", str(self.port), "--workers", "1",
                          "--grace", "2", "--nats", nats_url, *extra], log_path)
        self.channel = grpc.insecure_channel(self.target)
        deadline = time.monotonic() + 60
        while not _health(self.target):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log()}")
            time.sleep(0.1)

    def ingest(self, events, api_key: str, tenant: str, timeout: float = 10.0):
        md = (("x-tenant-id", tenant), ("x-api-key", api_key))
        return funnel_pb2_grpc.EventsStub(self.channel).Ingest(
            funnel_pb2.IngestRequest(events=events), metadata=md, timeout=timeout)

    def feed(self, user_id: str, api_key: str, tenant: str, limit: int = 20, cursor: str = ""):
        md = (("x-tenant-id", tenant), ("x-api-key", api_key))
        return funnel_pb2_grpc.RecommenderStub(self.channel).GetFeed(
            funnel_pb2.FeedRequest(user_id=user_id, limit=limit, cursor=cursor), metadata=md, timeout=10)

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        self.channel.close()
        return super().stop(sig, timeout)


# ------------------------------------------------------------------ probes
def _read(data_dir: str, fn):
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.env.begin() as txn:
            return fn(store, txn)
    finally:
        store.close()


def user_value(data_dir: str, tenant: str, user_id: str) -> bytes | None:
    return _read(data_dir, lambda s, txn: s.get_user_copy(txn, tenant, user_id))


def user_values(data_dir: str, tenant: str) -> dict[str, bytes]:
    return _read(data_dir, lambda s, txn: dict(s.iter_users(txn, tenant)))


def applied_seq(data_dir: str) -> int:
    raw = _read(data_dir, lambda s, txn: txn.get(b"events", db=s.db["progress"]))
    return json.loads(raw)["seq"] if raw is not None else 0


def outbox_depth(data_dir: str) -> int:
    return _read(data_dir, lambda s, txn: txn.stat(s.db["outbox"])["entries"])


def item_index(data_dir: str, tenant: str, item_id: str) -> int:
    return _read(data_dir, lambda s, txn: s.lookup_item(txn, tenant, item_id))


def item_category(data_dir: str, tenant: str, item_id: str) -> int:
    from kernels.layout import ITEM_CATEGORY

    def read(store, txn):
        index = store.lookup_item(txn, tenant, item_id)
        n_items = int(store.get_state(txn, tenant, "n_items"))
        return int(store.read_item_rows(txn, tenant, n_items)[index, ITEM_CATEGORY])

    return _read(data_dir, read)


def stream_last_seq(nats_url: str) -> int:
    async def query():
        from server.events.nats_server import STREAM

        nc = await probe_connect(nats_url)
        try:
            return (await nc.jetstream().stream_info(STREAM)).state.last_seq
        finally:
            await nc.close()

    return asyncio.run(query())


def wait_applied(data_dir: str, nats_url: str, timeout: float = 20.0) -> int:
    """Waits until the worker applied everything the stream holds now; returns that sequence."""
    last = stream_last_seq(nats_url)
    wait_until(lambda: applied_seq(data_dir) >= last, timeout, what=f"the worker to apply sequence {last}")
    return last


def counters(value: bytes) -> tuple[int, int]:
    from kernels.layout import USER_EVENT_COUNT, USER_SKIP_COUNT
    from server.store import user_row_view

    row = user_row_view(value)
    return int(row[USER_EVENT_COUNT]), int(row[USER_SKIP_COUNT])


def event(user_id: str, item_id: str, etype: int, ts_ms: int, **kw) -> funnel_pb2.Event:
    return funnel_pb2.Event(user_id=user_id, item_id=item_id, type=etype, timestamp_ms=ts_ms, **kw)


def now_ms() -> int:
    return int(time.time() * 1000)


def item_list(data_dir: str, tenant: str, name: str) -> list[int]:
    """A stored item list (e.g. "trending", "popular") as dense indices."""
    from server.store.lmdb_store import tkey

    return _read(data_dir, lambda s, txn: np.frombuffer(
        txn.get(tkey(tenant, name), db=s.db["lists"]) or b"", dtype=np.int32).tolist())


def item_stats(data_dir: str, tenant: str) -> dict:
    """{dense index: float64 counters copy} of every item with counters (db item_stats)."""
    return _read(data_dir, lambda s, txn: {i: v.copy() for i, v in s.iter_item_stats(txn, tenant)})


# ------------------------------------------------------------ erasure and consent
def admin_call(server: EventServer, admin_key: str, method: str, request, timeout: float = 10.0):
    """Calls ``Admin.<method>`` on ``server`` with ``admin_key``."""
    stub = funnel_pb2_grpc.AdminStub(server.channel)
    return getattr(stub, method)(request, metadata=(("x-admin-key", admin_key),), timeout=timeout)


def subject_messages(nats_url: str, subject: str) -> int:
    """How many messages the event stream holds on ``subject`` now."""
    async def query():
        from server.events.nats_server import STREAM

        nc = await probe_connect(nats_url)
        try:
            info = await nc.jetstream().stream_info(STREAM, subjects_filter=subject)
            return (info.state.subjects or {}).get(subject, 0)
        finally:
            await nc.close()

    return asyncio.run(query())
