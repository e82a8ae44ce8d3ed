"""The serving process: gRPC (grpc.aio on uvloop), health, reflection, metrics,
graceful shutdown, and N workers sharing one port through SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos import funnel_pb2, funnel_pb2_grpc
from server.cursor import CursorCodec
from server.decisions.log import DecisionLog
from server.events.nats_server import EVENTS_MAX_AGE_DAYS
from server.metrics import Metrics
from server.pipeline.default import default_funnel
from server.runtime import RuntimeRegistry
from server.events.servicer import EventsServicer
from server.servicers.admin import AdminServicer
from server.servicers.recommender import RecommenderServicer
from server.store import LmdbStore

log = logging.getLogger("funnel.server")
MAX_MESSAGE_BYTES = 16 << 20
ITEM_META_CACHE = 200_000
UPLOADS_DIR = "uploads"  # Admin.PublishIndex's temporary files (emptied at serve start)


@dataclass
class ServeSettings:
    data_dir: str = "./funnel-data"
    host: str = "127.0.0.1"
    port: int = 50051
    workers: int = 1
    metrics_port: int = 0          # 0 = no metrics endpoint; worker i listens on metrics_port + i
    grace_s: float = 10.0          # drain time for in-flight calls on shutdown
    refresh_s: float = 0.5         # how often tenant config / model / index pointers are re-checked
    max_concurrent_rpcs: int = 256  # per worker; more in flight get RESOURCE_EXHAUSTED at once (0 = no cap)
    # events (issue 3, server.events): JetStream for Events.Ingest and the ingest worker
    nats_url: str = ""             # "" = the embedded nats-server below (or none: spool to the outbox)
    embedded_nats: bool = True     # with nats_url "": run nats-server -js on 127.0.0.1:nats_port
    nats_port: int = 4222          # 0 = any free port
    ingest: bool = True            # run the ingest worker process (JetStream -> LMDB user features)
    decision_log: bool = True      # with NATS: log every served response to FUNNEL_DECISIONS (server.decisions)
    events_max_age_days: float = EVENTS_MAX_AGE_DAYS  # FUNNEL_EVENTS retention by age (set by the ingest worker);
    #                                                  0 = forever
    events_max_bytes: int = 0      # FUNNEL_EVENTS size cap; when full, new events spool to the outbox; 0 = none


def load_settings(path: str, **overrides) -> ServeSettings:
    """ServeSettings from the [serve] table of a TOML file; unknown keys are an error.
    ``overrides`` (command-line flags that were given) win over the file."""
    import tomllib
    from dataclasses import fields

    with open(path, "rb") as f:
        doc = tomllib.load(f)
    unknown_tables = set(doc) - {"serve"}
    if unknown_tables:
        raise ValueError(f"{path}: unknown tables: {', '.join(sorted(unknown_tables))}")
    values = doc.get("serve", {})
    known = {f.name: f.type for f in fields(ServeSettings)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"{path}: unknown keys in [serve]: {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = ServeSettings(**values)
    for name, kind in (("port", int), ("workers", int), ("metrics_port", int), ("grace_s", float),
                       ("refresh_s", float), ("nats_port", int), ("max_concurrent_rpcs", int),
                       ("events_max_age_days", float), ("events_max_bytes", int)):
        value = getattr(settings, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: [serve].{name} must be a non-negative number")
        setattr(settings, name, kind(value))
    if settings.workers < 1:
        raise ValueError(f"{path}: [serve].workers must be at least 1")
    return settings


def init_data_dir(data_dir: str) -> str | None:
    """Creates the store and its secrets. Returns a new admin key the first time
    (printed once, stored hashed), None when one exists already."""
    store = LmdbStore.open(data_dir)
    try:
        with store.write() as txn:
            if store.get_json(txn, "meta", b"cursor_secret") is None:
                store.put_json(txn, "meta", b"cursor_secret", secrets.token_hex(32))
            if store.get_json(txn, "meta", b"admin_key_hash") is None:
                import hashlib

                key = "fa_" + secrets.token_urlsafe(32)
                store.put_json(txn, "meta", b"admin_key_hash", hashlib.sha256(key.encode()).hexdigest())
                return key
        return None
    finally:
        store.close()


class ServingApp:
    """What the servicers share inside one worker process."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.store = LmdbStore.open(settings.data_dir)
        self.metrics = Metrics()
        self.registry = RuntimeRegistry(self.store, settings.data_dir, refresh_s=settings.refresh_s,
                                        metrics=self.metrics)
        self.funnel = default_funnel(self.metrics)
        with self.store.snapshot() as snap:
            secret = self.store.get_json(snap.txn, "meta", b"cursor_secret")
            self.admin_key_hash = self.store.get_json(snap.txn, "meta", b"admin_key_hash") or ""
        if secret is None:
            raise SystemExit(f"{settings.data_dir} is not initialised: run `funnel init --data-dir {settings.data_dir}`")
        self.cursors = CursorCodec(bytes.fromhex(secret))
        self._kill_switch = (0.0, False)
        self._item_meta: dict[tuple[str, int], tuple[int, dict]] = {}

    def item_meta(self, snap, tenant_id: str, index: int) -> dict:
        """Display metadata of an item, cached per process until the next catalog write
        (catalog_gen); parsing JSON for every item of every response costs ~10 us each."""
        gen = snap.catalog_gen(tenant_id)
        key = (tenant_id, index)
        hit = self._item_meta.get(key)
        if hit is not None and hit[0] == gen:
            return hit[1]
        meta = snap.item_meta(tenant_id, index) or {}
        if len(self._item_meta) >= ITEM_META_CACHE:
            self._item_meta.clear()  # cheap bound; refills with what is hot
        self._item_meta[key] = (gen, meta)
        return meta

    @property
    def kill_switch(self) -> bool:
        """Global switch to non-personalised serving, re-read at most every refresh_s."""
        checked, value = self._kill_switch
        now = time.monotonic()
        if now - checked >= self.settings.refresh_s:
            with self.store.snapshot() as snap:
                value = bool(self.store.get_json(snap.txn, "meta", b"kill_switch", False))
            self._kill_switch = (now, value)
        return value

    def warm_up(self, requests_per_tenant: int = 20) -> list[str]:
        """Opens every tenant's indices and models and runs a few requests through the
        funnel now, so page faults and first-run allocations do not land on callers."""
        from server.pipeline.state import request_state

        with self.store.snapshot() as snap:
            cursor = snap.txn.cursor(db=self.store.db["tenants"])
            tenants = [bytes(k).decode() for k, _ in cursor]
            for tenant_id in tenants:
                tenant = self.registry.get(snap, tenant_id)
                if tenant is None:
                    continue
                users = [u for u, _ in zip(self.store.iter_users(snap.txn, tenant_id), range(requests_per_tenant))]
                for user_id in [u for u, _ in users] + ["warm-up-cold-user"]:
                    try:
                        self.funnel.run(request_state(snap, tenant, user_id, "*", 0, 1.0))
                    except Exception:  # a broken tenant must not stop the others from serving
                        log.exception("warm-up of tenant %s failed", tenant_id)
                        break
            self.funnel.cache = type(self.funnel.cache)()  # warm-up rankings are not real traffic
        return tenants


def set_kill_switch(data_dir: str, on: bool) -> None:
    store = LmdbStore.open(data_dir)
    try:
        with store.write() as txn:
            store.put_json(txn, "meta", b"kill_switch", bool(on))
    finally:
        store.close()


async def serve_async(settings: ServeSettings, worker_index: int = 0, ready=None) -> None:
    app = ServingApp(settings)
    tenants = app.warm_up()
    server = grpc.aio.server(maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None, options=[
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ])
    events = EventsServicer(app, forward=worker_index == 0)  # one outbox forwarder per serve
    # served responses go to JetStream over the same NATS connection (dropped and counted without it)
    decisions = (DecisionLog(events.publisher, app.metrics) if settings.decision_log and settings.nats_url
                 else None)
    funnel_pb2_grpc.add_RecommenderServicer_to_server(RecommenderServicer(app, decisions), server)
    # DeleteUser purges the user's events through this process's NATS connection
    funnel_pb2_grpc.add_AdminServicer_to_server(AdminServicer(app, events.publisher), server)
    funnel_pb2_grpc.add_EventsServicer_to_server(events, server)
    health_servicer = health.aio.HealthServicer()
    health_names = ("", "funnel.v1.Recommender", "funnel.v1.Events")
    for name in health_names:  # grpc's servicer says SERVING for "" from the start: not before we are
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((
        funnel_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name,
        funnel_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
        funnel_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    if server.add_insecure_port(address) == 0:
        raise SystemExit(f"cannot listen on {address}")
    await events.start()  # connected to NATS (or given up waiting) before the port opens
    if decisions is not None:
        decisions.start()
    await server.start()
    for name in health_names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if settings.metrics_port:
        app.metrics.serve(settings.metrics_port + worker_index, settings.host)
    log.info("worker %d serving %s on %s (tenants: %s)", worker_index, settings.data_dir, address,
             ", ".join(tenants) or "none")
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("worker %d draining (grace %.1fs)", worker_index, settings.grace_s)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_s)
    if decisions is not None:
        await decisions.close()  # publishes what is buffered (bounded), over the still-open connection
    await events.close()
    app.store.close()


def _run_worker(settings: ServeSettings, worker_index: int, ready=None) -> None:
    _configure_logging(f"w{worker_index}")
    try:
        import uvloop

        uvloop.run(serve_async(settings, worker_index, ready))
    except ImportError:  # uvloop is not available on Windows
        asyncio.run(serve_async(settings, worker_index, ready))


def _configure_logging(prefix: str) -> None:
    logging.basicConfig(level=os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s {prefix} %(levelname)s %(name)s: %(message)s")


def serve(settings: ServeSettings, on_ready=None) -> None:
    """Runs ``settings.workers`` processes on one port; returns when all have exited.
    SIGTERM/SIGINT to this process drains every worker. Around them, once, the
    event services (server.events.services): NATS (embedded unless nats_url) and
    the ingest worker process."""
    from server.events.services import EventServices

    if settings.workers > 1:  # with one worker it configures logging itself, in this process
        _configure_logging("main")
    _remove_stale_uploads(settings.data_dir)
    with EventServices(settings) as events:
        _serve_workers(events.settings, on_ready)


def _remove_stale_uploads(data_dir: str) -> None:
    """Admin.PublishIndex streams into ``<data_dir>/uploads/``; what a crash left there
    is removed before any worker starts (no upload can be in progress yet)."""
    import shutil

    shutil.rmtree(os.path.join(data_dir, UPLOADS_DIR), ignore_errors=True)


def _serve_workers(settings: ServeSettings, on_ready=None) -> None:
    if settings.workers <= 1:
        _run_worker(settings, 0)
        return
    ctx = multiprocessing.get_context("spawn")
    events = [ctx.Event() for _ in range(settings.workers)]
    procs = [ctx.Process(target=_run_worker, args=(settings, i, events[i]), name=f"funnel-w{i}")
             for i in range(settings.workers)]
    for p in procs:
        p.start()

    def forward(signum, _frame):
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for e in events:
        e.wait(timeout=120)
    if on_ready:
        on_ready()
    for p in procs:
        p.join()
