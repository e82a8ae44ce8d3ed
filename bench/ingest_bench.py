"""Event ingestion benchmark: Events.Ingest throughput and event -> feature visibility.

    # throughput and visibility on a copy of an existing trained data dir
    python -m bench.ingest_bench --data-dir /tmp/bench-mt --tenant demo --workers 2 \\
        --clients 8 --batch 500 --duration 30 --feed-qps 200 --probes 300 --out /tmp/bench-results/ingest

    # only throughput, on a fresh synthetic tenant of 100k items (generated, not trained)
    python -m bench.ingest_bench --data-dir /tmp/ingest-100k --items 100000 --no-train --mode throughput

What it starts: an embedded ``nats-server -js`` (server.events.nats_server.EmbeddedNats,
free port, store in a temp dir) and ``funnel serve --workers W --nats URL --metrics-port M``
on the data dir, which also runs the ingest worker (metrics on ``M + W``). By default
the data dir is first copied to ``--work-dir`` (the ingested events change user rows);
``--in-place`` uses it as it is. A missing tenant is created as bench.run_bench does
(``--items N`` synthetic via bench.synth, ``--movietweetings`` the bundled sample).

Throughput (``--mode throughput``): ``--clients`` grpc.aio coroutines, closed loop, over
``--channels`` TCP connections, each sending Events.Ingest batches of ``--batch``
events (distinct event ids, ``--user-pool`` users, real catalog item ids drawn
uniformly, types from ``--types``) for ``--warmup`` + ``--duration`` s. Counted over
calls that completed inside the measured window: events/s accepted (PubAck received),
duplicates, spooled (outbox: must be 0 with NATS up), rejected, calls/s, Ingest
latency p50/p95/p99/p99.9/max; CPU per process (serving workers, ingest worker,
nats-server, this client, everything else). The ingest worker's progress (LMDB
``progress`` / ``b"events"``) and the stream's last sequence are sampled every
``--sample-s``: apply rate inside the window, backlog at its end, time to drain after
the load stops, and the worker's own store -> commit lag histogram (Prometheus).

Visibility (``--mode visibility``): bench.loadgen runs open-loop GetFeed load at
``--feed-qps`` (Poisson, its own process) while this process, every ``--probe-interval``
s, takes a probe user's feed, ingests a CLICK of its first item and polls that user's
GetFeed (one call at a time, ``--poll-interval`` s apart) until the item is gone
(the seen filter: "visible in the next request"). Per probe: publish -> visible = send
time of the first GetFeed that no longer holds the item minus the Ingest send time
(an upper bound; the previous poll's send time is the lower bound, reported as the
resolution), ack -> visible, and the Ingest latency. ``--bg-ingest-rate`` adds
background ingest (events/s, in batches of ``--batch``) during the probes.

Output: a markdown report on stdout (machine, exact command line, settings, results,
targets), and ``--out`` OUT.md / OUT.json. Run from the repository root with the
project venv and ``PYTHONPATH=.``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

from bench.run_bench import (
    ROOT,
    children,
    cmdline,
    free_port,
    log,
    machine_busy_s,
    machine_info,
    machine_steal_s,
    proc_cpu_s,
)

PY = sys.executable
INGEST_METHOD = "/funnel.v1.Events/Ingest"
TARGET_EVENTS_PER_S = 50_000
TARGET_VISIBLE_P99_MS = 200.0
EVENT_TYPE_NAMES = ("view", "click", "like", "share", "purchase", "skip", "dwell", "impression")


# --------------------------------------------------------------------------- percentiles
def percentiles(values, qs=(50, 95, 99, 99.9)) -> dict:
    """p50/p95/p99/p99.9 (and max, mean, n) of ``values`` in the unit given."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {**{f"p{q:g}": None for q in qs}, "max": None, "mean": None, "n": 0}
    out = {f"p{q:g}": round(float(np.percentile(arr, q)), 3) for q in qs}
    out.update(max=round(float(arr.max()), 3), mean=round(float(arr.mean()), 3), n=int(arr.size))
    return out


# --------------------------------------------------------------------------- request bodies
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


class IngestBatches:
    """Serialized ``IngestRequest`` bodies with distinct event ids, cheap to make
    during the run: each event is ``event_id`` (field 1, 24 characters: run tag +
    counter) followed by a pre-serialized tail (user, item, type, timestamp,
    surface) from a pool; protobuf accepts fields in any order, and the server
    re-serializes every event deterministically anyway."""

    def __init__(self, users: list[str], items: list[str], types: list[int], batch: int,
                 pool: int = 20_000, seed: int = 0):
        from protos import funnel_pb2

        rng = random.Random(seed)
        self.batch = batch
        self.tag = rng.getrandbits(32)
        self.counter = 0
        now_ms = int(time.time() * 1000)
        tails = []
        for k in range(pool):
            etype = types[k % len(types)]
            event = funnel_pb2.Event(user_id=rng.choice(users), item_id=rng.choice(items), type=etype,
                                     timestamp_ms=now_ms - rng.randrange(0, 60_000), surface="home")
            if etype == funnel_pb2.DWELL:
                event.watch_time_ms = rng.randrange(1_000, 120_000)
            tails.append(event.SerializeToString())
        self.tails = tails
        self._next_tail = 0

    def next_body(self) -> bytes:
        parts = []
        tails, n_tails = self.tails, len(self.tails)
        t, c, tag = self._next_tail, self.counter, self.tag
        for _ in range(self.batch):
            tail = tails[t]
            t = t + 1 if t + 1 < n_tails else 0
            body = b"\x0a\x18" + f"{tag:08x}{c:016x}".encode() + tail
            c += 1
            parts.append(b"\x0a" + _varint(len(body)) + body)
        self._next_tail, self.counter = t, c
        return b"".join(parts)


# --------------------------------------------------------------------------- data
def catalog_item_ids(data_dir: str, tenant: str, limit: int = 200_000) -> list[str]:
    return tenant_keys(data_dir, tenant, "catalog", limit)


def tenant_keys(data_dir: str, tenant: str, db: str, limit: int) -> list[str]:
    """The first ``limit`` keys of ``tenant`` in store db ``db`` (item ids of "catalog", user ids of "users")."""
    from server.store import LmdbStore

    store = LmdbStore.open(data_dir, readonly=True)
    prefix = tenant.encode() + b"\x00"
    out = []
    try:
        with store.env.begin() as txn:
            cur = txn.cursor(db=store.db[db])
            if cur.set_range(prefix):
                for key in cur.iternext(values=False):
                    key = bytes(key)
                    if not key.startswith(prefix) or len(out) >= limit:
                        break
                    out.append(key[len(prefix):].decode())
    finally:
        store.close()
    return out


def prepare(args) -> dict:
    """Creates the tenant when missing (bench.run_bench.prepare_data), copies the data dir
    unless --in-place, adds an API key; returns the data description."""
    from bench.run_bench import prepare_data

    if args.items or args.movietweetings or not os.path.exists(os.path.join(args.data_dir, "store", "data.mdb")):
        data = prepare_data(args)
    else:
        data = {"data_dir": os.path.abspath(args.data_dir), "tenant": args.tenant, "dataset": "existing data dir"}
    if args.in_place:
        data["work_dir"] = data["data_dir"]
    else:
        work = os.path.join(args.work_dir or tempfile.mkdtemp(prefix="funnel-ingest-bench-"), "data")
        if os.path.exists(work):
            shutil.rmtree(work)
        t = time.perf_counter()
        # the embedded NATS store and the worker lock of an earlier serve are not data
        shutil.copytree(args.data_dir, work, ignore=shutil.ignore_patterns("nats", "ingest.lock", "bench-*"))
        data["copy_s"] = round(time.perf_counter() - t, 1)
        data["work_dir"] = work
    from server.cli import _create_tenant
    from server.store import LmdbStore

    LmdbStore.open(data["work_dir"]).close()  # a store from an older schema gains the outbox/progress dbs
    data["api_key"] = _create_tenant(data["work_dir"], args.tenant, "PG13")
    return data


# --------------------------------------------------------------------------- processes
class Stack:
    """Embedded nats-server + ``funnel serve --nats`` (serving workers + ingest worker).
    With ``ingest=False`` serve runs ``--no-ingest`` and :meth:`start_worker` starts
    ``funnel ingest`` (the same worker, metrics on the same port) later."""

    def __init__(self, data_dir: str, workers: int, nats_dir: str, log_path: str, grace: float = 5.0,
                 ingest: bool = True):
        from server.events.nats_server import EmbeddedNats

        self.data_dir, self.workers, self.log_path, self.ingest = data_dir, workers, log_path, ingest
        self.worker_proc: subprocess.Popen | None = None
        self.nats = EmbeddedNats(nats_dir, port=0).start()
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.env = env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                              FUNNEL_LOG_LEVEL="INFO")
        self.log_file = open(log_path, "w", encoding="utf-8")
        self.command = [PY, "-m", "server.cli", "serve", "--data-dir", data_dir, "--host", "127.0.0.1",
                        "--port", str(self.port), "--workers", str(workers), "--grace", str(grace),
                        "--nats", self.nats.url, "--metrics-port", str(self.metrics_port)]
        if not ingest:
            self.command.append("--no-ingest")
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        kids = children(self.proc.pid)
        self.ingest_pid = next((p for p in kids if " ingest " in cmdline(p)), None)
        if workers <= 1:
            self.worker_pids = [self.proc.pid]
        else:
            self.worker_pids = [p for p in kids if "spawn_main" in cmdline(p) and "resource_tracker" not in cmdline(p)]
        self.parent_pid = self.proc.pid if workers > 1 else None

    def _wait_ready(self, timeout: float = 180.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_tail()}")
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            ready = sum(1 for line in text.splitlines() if " serving " in line and "funnel.server" in line)
            if ready >= self.workers and (not self.ingest or "consuming FUNNEL_EVENTS" in text):
                try:
                    with grpc.insecure_channel(self.target) as ch:
                        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready in {timeout}s; log: {self.log_tail()}")

    def start_worker(self, timeout: float = 60.0) -> None:
        """``funnel ingest`` on the data dir (after a --no-ingest serve); returns once it consumes."""
        if self.ingest_pid:
            return
        self.worker_proc = subprocess.Popen(
            [PY, "-m", "server.cli", "ingest", "--data-dir", self.data_dir, "--nats", self.nats.url,
             "--metrics-port", str(self.metrics_port + self.workers), "--metrics-host", "127.0.0.1"],
            cwd=ROOT, env=self.env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while "consuming FUNNEL_EVENTS" not in self.log_tail(1 << 20):
            if self.worker_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingest worker did not start; log: {self.log_tail()}")
            time.sleep(0.05)
        self.ingest_pid = self.worker_proc.pid

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def pids(self) -> dict[str, int]:
        out = {f"serve worker {i}": pid for i, pid in enumerate(self.worker_pids)}
        if self.parent_pid:
            out["serve supervisor"] = self.parent_pid
        if self.ingest_pid:
            out["ingest worker"] = self.ingest_pid
        out["nats-server"] = self.nats.proc.pid
        return out

    def worker_metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port + self.workers}/metrics"

    def stop(self) -> None:
        if self.worker_proc is not None and self.worker_proc.poll() is None:
            self.worker_proc.terminate()
            try:
                self.worker_proc.wait(30)
            except subprocess.TimeoutExpired:
                self.worker_proc.kill()
                self.worker_proc.wait()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()
        self.nats.stop()


def wait_quiet(stack: "Stack", max_wait: float, threshold: float = 0.25) -> float:
    """Waits (up to ``max_wait`` s) until processes other than the stack and this one use
    < ``threshold`` cores (the box may be shared); returns the last measured foreign load."""
    deadline = time.monotonic() + max_wait
    pids = list(stack.pids().values())
    while True:
        b0, c0, me0, t0 = machine_busy_s(), sum(proc_cpu_s(p) for p in pids), time.process_time(), time.perf_counter()
        time.sleep(1.0)
        wall = time.perf_counter() - t0
        foreign = ((machine_busy_s() - b0) - (sum(proc_cpu_s(p) for p in pids) - c0)
                   - (time.process_time() - me0)) / wall
        if foreign < threshold or time.monotonic() >= deadline:
            return round(max(foreign, 0.0), 2)
        log(f"machine busy with other work ({foreign:.2f} cores); waiting")


class CpuMeter:
    """CPU cores used per process of the stack, by this process and its children
    (bench.loadgen), and by everything else on the machine."""

    def __init__(self, stack: Stack):
        self.stack = stack

    def start(self) -> None:
        self.pids = self.stack.pids()
        for k, pid in enumerate(p for p in children(os.getpid()) if "spawn_main" in cmdline(p)):
            self.pids[f"loadgen {k}"] = pid
        self.t0, self.busy0, self.steal0 = time.perf_counter(), machine_busy_s(), machine_steal_s()
        self.cpu0 = {name: proc_cpu_s(pid) for name, pid in self.pids.items()}
        self.me0 = time.process_time()

    def stop(self) -> dict:
        wall = time.perf_counter() - self.t0
        # a process that exited meanwhile reads 0: count it as 0, not negative
        out = {name: round(max(proc_cpu_s(pid) - self.cpu0[name], 0.0) / wall, 3) for name, pid in self.pids.items()}
        out["bench client (this process)"] = round((time.process_time() - self.me0) / wall, 3)
        known = sum(out.values())
        out["other"] = round(max((machine_busy_s() - self.busy0) / wall - known, 0.0), 3)
        out["steal"] = round((machine_steal_s() - self.steal0) / wall, 3)
        return out


# --------------------------------------------------------------------------- worker progress
class Progress:
    """The ingest worker's applied sequence (LMDB) and the stream's last sequence (NATS)."""

    def __init__(self, data_dir: str, nats_url: str):
        from server.store import LmdbStore

        self.store = LmdbStore.open(data_dir, readonly=True)  # the writers' map size: no MAP_RESIZED
        self.env, self.db = self.store.env, self.store.db["progress"]
        self.nats_url = nats_url
        self.nc = self.js = None

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.nats_url, connect_timeout=2)
        self.js = self.nc.jetstream()

    def applied(self) -> int:
        with self.env.begin() as txn:
            raw = txn.get(b"events", db=self.db)
        return int(json.loads(bytes(raw)).get("seq", 0)) if raw is not None else 0

    async def stream_last(self) -> int:
        from server.events.nats_server import STREAM

        return (await self.js.stream_info(STREAM)).state.last_seq

    async def wait_applied(self, timeout: float) -> tuple[bool, float]:
        """Waits until everything in the stream now is applied; (done, seconds waited)."""
        last, t = await self.stream_last(), time.perf_counter()
        while self.applied() < last:
            if time.perf_counter() - t > timeout:
                return False, time.perf_counter() - t
            await asyncio.sleep(0.01)
        return True, time.perf_counter() - t

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()
        self.env.close()


def scrape(url: str) -> dict:
    """The ingest worker's counters and apply-lag histogram (cumulative buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict = {"outcomes": {}, "lag_buckets": {}, "lag_count": 0.0, "lag_sum": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "funnel_ingest_applied_total":
                out["outcomes"][s.labels["outcome"]] = s.value
            elif s.name == "funnel_ingest_apply_lag_seconds_bucket":
                out["lag_buckets"][float(s.labels["le"])] = s.value
            elif s.name == "funnel_ingest_apply_lag_seconds_count":
                out["lag_count"] = s.value
            elif s.name == "funnel_ingest_apply_lag_seconds_sum":
                out["lag_sum"] = s.value
    return out


def lag_between(before: dict, after: dict) -> dict:
    """The worker's store -> commit lag over the events applied between two scrapes:
    count, mean and the bucket bound each quantile falls under (a histogram: upper bounds)."""
    if not after or not after.get("lag_buckets"):
        return {}
    bounds = sorted(after["lag_buckets"])
    counts = [after["lag_buckets"][b] - (before or {}).get("lag_buckets", {}).get(b, 0.0) for b in bounds]
    total = after["lag_count"] - (before or {}).get("lag_count", 0.0)
    out: dict = {"n": int(total)}
    if total <= 0:
        return out
    out["mean_ms"] = round((after["lag_sum"] - (before or {}).get("lag_sum", 0.0)) / total * 1e3, 2)
    for q in (0.5, 0.99):
        bound = next((b for b, c in zip(bounds, counts) if c >= q * total), float("inf"))
        out[f"p{q * 100:g}_le_ms"] = bound * 1e3 if bound != float("inf") else None
    outcomes = {k: int(v - (before or {}).get("outcomes", {}).get(k, 0.0)) for k, v in after["outcomes"].items()}
    out["outcomes"] = {k: v for k, v in outcomes.items() if v}
    return out


# --------------------------------------------------------------------------- throughput
async def run_throughput(stack: Stack, progress: Progress, args, tenant: str, key: str, users: list[str],
                         items: list[str], types: list[int]) -> dict:
    import grpc

    from protos import funnel_pb2

    batches = IngestBatches(users, items, types, args.batch, seed=args.seed)
    md = (("x-tenant-id", tenant), ("x-api-key", key))
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0),
               ("grpc.max_send_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(stack.target, options=options + [("bench.channel", i)])
                for i in range(args.channels)]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), timeout=10)
    calls = [ch.unary_unary(INGEST_METHOD, request_serializer=None,
                            response_deserializer=funnel_pb2.IngestResponse.FromString) for ch in channels]

    # warm-up call: the worker is consuming before the timed part
    resp = await calls[0](batches.next_body(), metadata=md, timeout=10)
    if resp.accepted != args.batch:
        raise RuntimeError(f"warm-up Ingest: {resp}")
    if stack.ingest_pid:
        await progress.wait_applied(30)

    total = args.warmup + args.duration
    records: list[tuple] = []  # (start s, end s, accepted, duplicates, spooled, rejected, code)
    samples: list[tuple[float, int, int]] = []  # (t s, applied seq, stream last seq)
    meter = CpuMeter(stack)
    lag0 = scrape(stack.worker_metrics_url())
    t0 = time.perf_counter()
    window_marks: dict = {}

    async def client(k: int) -> None:
        call = calls[k % len(calls)]
        while True:
            start = time.perf_counter() - t0
            if start >= total:
                return
            body = batches.next_body()
            try:
                r = await call(body, metadata=md, timeout=args.timeout)
                records.append((start, time.perf_counter() - t0, r.accepted, r.duplicates, r.spooled,
                                len(r.rejected), "OK"))
            except grpc.aio.AioRpcError as exc:
                records.append((start, time.perf_counter() - t0, 0, 0, 0, 0, exc.code().name))

    async def sampler() -> None:
        while True:
            now = time.perf_counter() - t0
            samples.append((now, progress.applied(), await progress.stream_last()))
            if now >= args.warmup and "cpu" not in window_marks:
                window_marks["cpu"] = True
                meter.start()
                window_marks["lag"] = scrape(stack.worker_metrics_url())
            await asyncio.sleep(args.sample_s)

    sampling = asyncio.create_task(sampler())
    await asyncio.gather(*(client(k) for k in range(args.clients)))
    cpu = meter.stop() if "cpu" in window_marks else {}
    lag_window_end = scrape(stack.worker_metrics_url())
    stopped_at = time.perf_counter() - t0
    if not stack.ingest_pid:  # --defer-worker: the worker starts now, on an idle box
        await asyncio.to_thread(stack.start_worker)
        lag0 = window_marks["lag"] = scrape(stack.worker_metrics_url())
        stopped_at = time.perf_counter() - t0
    # drain: until the worker applied everything the stream holds
    drained, drain_s = await progress.wait_applied(args.drain_timeout)
    samples.append((time.perf_counter() - t0, progress.applied(), await progress.stream_last()))
    sampling.cancel()
    await asyncio.gather(sampling, return_exceptions=True)
    lag_end = scrape(stack.worker_metrics_url())
    for ch in channels:
        await ch.close(None)

    w0, w1 = args.warmup, args.warmup + args.duration
    done = [r for r in records if w0 <= r[1] < w1]
    lat_ms = [(r[1] - r[0]) * 1e3 for r in done]
    errors: dict[str, int] = {}
    for r in done:
        if r[6] != "OK":
            errors[r[6]] = errors.get(r[6], 0) + 1
    accepted = sum(r[2] for r in done)
    duplicates = sum(r[3] for r in done)

    def applied_at(t: float) -> tuple[float, int, int]:
        return min(samples, key=lambda s: abs(s[0] - t))

    s0, s1 = applied_at(w0), applied_at(min(w1, stopped_at))
    apply_rate = (s1[1] - s0[1]) / (s1[0] - s0[0]) if s1[0] > s0[0] else None
    stream_rate = (s1[2] - s0[2]) / (s1[0] - s0[0]) if s1[0] > s0[0] else None
    backlog = [s[2] - s[1] for s in samples if w0 <= s[0] <= w1]
    drain_rate = None
    if drained and drain_s > 0.5:
        # after the load stopped the worker runs flat out: its own ceiling
        end_seq = samples[-1][1]
        start = applied_at(stopped_at)
        drain_rate = (end_seq - start[1]) / max(samples[-1][0] - start[0], 1e-9)
    per_event: dict = {}  # CPU microseconds per event: the cost that survives a shared, noisy box
    if cpu and accepted:
        serve = sum(v for k, v in cpu.items() if k.startswith("serve "))
        per_event["serve workers per acked event"] = round(serve * 1e6 * args.duration / accepted, 1)
        nats_cores = cpu.get("nats-server", 0.0)
        per_event["nats-server per acked event"] = round(nats_cores * 1e6 * args.duration / accepted, 1)
        if apply_rate:
            per_event["ingest worker per applied event"] = round(cpu.get("ingest worker", 0.0) * 1e6 / apply_rate, 1)
    return {
        "deferred_worker": bool(args.defer_worker),
        "clients": args.clients, "channels": args.channels, "batch": args.batch, "duration_s": args.duration,
        "warmup_s": args.warmup, "types": args.types, "user_pool": len(users), "items": len(items),
        "calls": len(done), "calls_per_s": round(len(done) / args.duration, 1),
        "events_accepted": accepted, "events_per_s": round(accepted / args.duration, 1),
        "new_events_per_s": round((accepted - duplicates) / args.duration, 1),
        "duplicates": duplicates, "spooled": sum(r[4] for r in done), "rejected": sum(r[5] for r in done),
        "errors": errors, "ingest_latency_ms": percentiles(lat_ms),
        "stream_append_per_s": round(stream_rate, 1) if stream_rate is not None else None,
        "worker_apply_per_s": round(apply_rate, 1) if apply_rate is not None else None,
        "backlog_events": {"end_of_window": s1[2] - s1[1], "max": max(backlog) if backlog else None},
        "drain": {"done": drained, "seconds_after_load": round(drain_s, 2),
                  "apply_per_s_while_draining": round(drain_rate, 1) if drain_rate else None},
        "worker_lag_window": lag_between(window_marks.get("lag") or lag0, lag_window_end),
        "worker_lag_incl_drain": lag_between(window_marks.get("lag") or lag0, lag_end),
        "cpu_cores": cpu,
        "cpu_us_per_event": per_event,
        "progress_samples": samples,
    }


# --------------------------------------------------------------------------- visibility
async def run_visibility(stack: Stack, progress: Progress, args, tenant: str, key: str, known: list[str],
                         users: list[str], items: list[str]) -> dict:
    import grpc

    from bench.loadgen import run_load
    from protos import funnel_pb2, funnel_pb2_grpc

    md = (("x-tenant-id", tenant), ("x-api-key", key))
    channel = grpc.aio.insecure_channel(stack.target, options=[("grpc.use_local_subchannel_pool", 1),
                                                               ("bench.probe", 1)])
    await asyncio.wait_for(channel.channel_ready(), timeout=10)
    feed_stub = funnel_pb2_grpc.RecommenderStub(channel)
    ingest_stub = funnel_pb2_grpc.EventsStub(channel)

    # probe users: known users past the very top (a personalised feed, not the Zipf head the load hammers)
    pool = known[args.probe_rank:] or known or users
    probe_users = pool[:args.probe_users]

    async def feed_ids(user: str) -> list[str]:
        resp = await feed_stub.GetFeed(funnel_pb2.FeedRequest(user_id=user, surface="home", limit=args.limit),
                                       metadata=md, timeout=2)
        return [i.item_id for i in resp.items]

    for user in probe_users:  # warm the probe users' caches like any returning user
        await feed_ids(user)
    await progress.wait_applied(30)

    load_s = args.probes * args.probe_interval + 15.0
    load_result: dict = {}

    def background_load() -> None:
        try:
            load_result.update(run_load(stack.target, tenant, key, args.feed_qps, load_s, args.feed_warmup, known,
                                        args.limit, 1, args.feed_channels))
        except Exception as exc:  # noqa: BLE001 - reported, the probes go on
            load_result["error"] = f"{type(exc).__name__}: {exc}"

    loader = None
    if args.feed_qps > 0:
        loader = threading.Thread(target=background_load, name="feed-load", daemon=True)
        loader.start()
        await asyncio.sleep(args.feed_warmup + 3.0)  # loadgen start-up + its warm-up

    bg_stop = asyncio.Event()
    bg_counts = {"calls": 0, "accepted": 0, "spooled": 0}
    bg_task = None
    if args.bg_ingest_rate > 0:
        batches = IngestBatches(users, items, [funnel_pb2.VIEW, funnel_pb2.CLICK], args.batch, seed=args.seed + 1)
        bg_call = channel.unary_unary(INGEST_METHOD, request_serializer=None,
                                      response_deserializer=funnel_pb2.IngestResponse.FromString)

        async def one(body: bytes) -> None:
            r = await bg_call(body, metadata=md, timeout=args.timeout)
            bg_counts["calls"] += 1
            bg_counts["accepted"] += r.accepted
            bg_counts["spooled"] += r.spooled

        async def background_ingest() -> None:
            period, pending = args.batch / args.bg_ingest_rate, set()
            t = time.perf_counter()
            while not bg_stop.is_set():
                task = asyncio.create_task(one(batches.next_body()))
                pending.add(task)
                task.add_done_callback(pending.discard)
                t += period
                await asyncio.sleep(max(t - time.perf_counter(), 0))
            await asyncio.gather(*pending, return_exceptions=True)

        bg_task = asyncio.create_task(background_ingest())

    meter = CpuMeter(stack)
    meter.start()
    lag0 = scrape(stack.worker_metrics_url())
    tag = random.Random(args.seed).getrandbits(32)
    probed: dict[str, set] = {u: set() for u in probe_users}
    rows, failures = [], {}
    t_start = time.perf_counter()
    for i in range(args.probes):
        slot = t_start + i * args.probe_interval
        await asyncio.sleep(max(slot - time.perf_counter(), 0))
        user = probe_users[i % len(probe_users)]
        try:
            shown = await feed_ids(user)
        except grpc.aio.AioRpcError as exc:
            failures[f"feed {exc.code().name}"] = failures.get(f"feed {exc.code().name}", 0) + 1
            continue
        item = next((x for x in shown if x not in probed[user]), None)
        if item is None:
            failures["empty feed"] = failures.get("empty feed", 0) + 1
            continue
        probed[user].add(item)
        event = funnel_pb2.Event(event_id=f"vis-{tag:08x}-{i}", user_id=user, item_id=item, type=funnel_pb2.CLICK,
                                 timestamp_ms=int(time.time() * 1000), surface="home")
        t_pub = time.perf_counter()
        try:
            resp = await ingest_stub.Ingest(funnel_pb2.IngestRequest(events=[event]), metadata=md, timeout=5)
        except grpc.aio.AioRpcError as exc:
            failures[f"ingest {exc.code().name}"] = failures.get(f"ingest {exc.code().name}", 0) + 1
            continue
        t_ack = time.perf_counter()
        if resp.accepted != 1:
            failures["not accepted"] = failures.get("not accepted", 0) + 1
            continue
        polls, prev_send, seen_at = 0, t_pub, None
        while True:
            sent = time.perf_counter()
            try:
                still = item in await feed_ids(user)
            except grpc.aio.AioRpcError:
                still = True
            answered = time.perf_counter()
            polls += 1
            if not still:
                seen_at = (sent, answered)
                break
            if answered - t_pub > args.poll_timeout:
                break
            prev_send = sent
            await asyncio.sleep(args.poll_interval)
        if seen_at is None:
            failures["not visible in time"] = failures.get("not visible in time", 0) + 1
            continue
        rows.append({"ingest_ms": (t_ack - t_pub) * 1e3, "visible_ms": (seen_at[0] - t_pub) * 1e3,
                     "visible_answer_ms": (seen_at[1] - t_pub) * 1e3, "ack_to_visible_ms": (seen_at[0] - t_ack) * 1e3,
                     "resolution_ms": (seen_at[0] - prev_send) * 1e3, "polls": polls})
    probe_wall = time.perf_counter() - t_start
    bg_stop.set()
    if bg_task is not None:
        await bg_task
    cpu = meter.stop()
    lag1 = scrape(stack.worker_metrics_url())
    await channel.close(None)
    if loader is not None:
        await asyncio.to_thread(loader.join)
    col = lambda name: [r[name] for r in rows]  # noqa: E731
    load = {k: load_result.get(k) for k in ("target_qps", "offered_qps", "achieved_qps", "latency_ms", "errors",
                                            "degradation_levels", "client_cpu_cores", "error")}
    return {
        "probes": args.probes, "measured": len(rows), "failures": failures, "probe_users": len(probe_users),
        "probe_interval_s": args.probe_interval, "poll_interval_s": args.poll_interval,
        "feed_qps": args.feed_qps, "bg_ingest_rate": args.bg_ingest_rate, "bg_ingest": bg_counts,
        "publish_to_visible_ms": percentiles(col("visible_ms")),
        "publish_to_visible_answer_ms": percentiles(col("visible_answer_ms")),
        "ack_to_visible_ms": percentiles(col("ack_to_visible_ms")),
        "probe_ingest_ms": percentiles(col("ingest_ms")),
        "resolution_ms": percentiles(col("resolution_ms")),
        "polls": percentiles(col("polls")),
        "probe_wall_s": round(probe_wall, 1),
        "worker_lag": lag_between(lag0, lag1),
        "feed_load": load,
        "cpu_cores": cpu,
    }


# --------------------------------------------------------------------------- report
def _fmt(v, nd=2) -> str:
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _pcts(p: dict, keys=("p50", "p95", "p99", "p99.9", "max")) -> str:
    return " / ".join(_fmt(p.get(k)) for k in keys)


def _cpu(cpu: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()) if cpu else "n/a"


def markdown(report: dict) -> str:
    m, d, s = report["machine"], report["data"], report["settings"]
    lines = ["### Event ingestion", ""]
    lines.append(f"Command: `{report['command']}`")
    lines.append("")
    lines.append(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
                 f"Python {m['python']}, grpcio {m['grpcio']}, nats-py {m.get('nats_py')}, uvloop {m.get('uvloop')}, "
                 f"protobuf {m.get('protobuf')}, {m.get('nats_server')}. Started {report['started']}; other "
                 f"processes before each mode: {report.get('other_cores_before_throughput', 'n/a')} / "
                 f"{report.get('other_cores_before_visibility', 'n/a')} cores.")
    lines.append(f"Data: {d.get('dataset')} `{d.get('data_dir')}` (tenant `{d['tenant']}`), run on "
                 f"`{d.get('work_dir')}`; serve: `funnel serve --workers {s['workers']} --nats <embedded>` + its "
                 f"ingest worker.")
    lines.append("")
    t = report.get("throughput")
    if t:
        lat = t["ingest_latency_ms"]
        lines += ["#### Throughput (closed loop)", "",
                  f"{t['clients']} clients over {t['channels']} connections, batches of {t['batch']} events "
                  f"(types {t['types']}, {t['user_pool']} users, {t['items']} items), {t['warmup_s']} s warm-up + "
                  f"{t['duration_s']} s measured.", "",
                  "| events/s acked | calls/s | spooled | duplicates | rejected | errors | Ingest p50 / p95 / p99 "
                  "/ p99.9 / max ms | stream append/s | worker apply/s (window) | backlog at end / max | drain s "
                  "| worker apply/s draining |",
                  "|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---:|",
                  f"| {t['events_per_s']:.0f} | {t['calls_per_s']:.1f} | {t['spooled']} | {t['duplicates']} | "
                  f"{t['rejected']} | {json.dumps(t['errors']) if t['errors'] else 0} | {_pcts(lat)} | "
                  f"{_fmt(t['stream_append_per_s'], 0)} | {_fmt(t['worker_apply_per_s'], 0)} | "
                  f"{t['backlog_events']['end_of_window']} / {t['backlog_events']['max']} | "
                  f"{t['drain']['seconds_after_load']}{'' if t['drain']['done'] else ' (not drained)'} | "
                  f"{_fmt(t['drain']['apply_per_s_while_draining'], 0)} |", "",
                  f"CPU cores during the window: {_cpu(t['cpu_cores'])}; CPU us per event: "
                  f"{', '.join(f'{k} {v}' for k, v in t.get('cpu_us_per_event', {}).items()) or 'n/a'}.",
                  f"Worker store -> commit lag (histogram bounds, window): {json.dumps(t['worker_lag_window'])}.", ""]
    v = report.get("visibility")
    if v:
        fl = v["feed_load"]
        lines += ["#### Visibility (publish -> the next GetFeed no longer shows the clicked item)", "",
                  f"{v['measured']} of {v['probes']} probes measured over {v['probe_users']} users, one every "
                  f"{v['probe_interval_s']} s, polls {v['poll_interval_s'] * 1e3:.0f} ms apart; background GetFeed "
                  f"{v['feed_qps']} QPS open loop (achieved {_fmt(fl.get('achieved_qps'))}, p50 / p99 "
                  f"{_fmt((fl.get('latency_ms') or {}).get('p50'))} / {_fmt((fl.get('latency_ms') or {}).get('p99'))}"
                  f" ms, errors {fl.get('errors') or 0}); background ingest {v['bg_ingest_rate']} events/s "
                  f"({v['bg_ingest']['accepted']} accepted, {v['bg_ingest']['spooled']} spooled). Failures: "
                  f"{v['failures'] or 'none'}.", "",
                  "| ms | p50 | p95 | p99 | p99.9 | max |", "|---|---:|---:|---:|---:|---:|"]
        for name, key in (("publish -> visible (send of first reflecting GetFeed)", "publish_to_visible_ms"),
                          ("publish -> visible (its answer)", "publish_to_visible_answer_ms"),
                          ("Ingest ack -> visible", "ack_to_visible_ms"), ("probe Ingest latency", "probe_ingest_ms"),
                          ("resolution (poll spacing)", "resolution_ms")):
            p = v[key]
            lines.append(f"| {name} | {_fmt(p['p50'])} | {_fmt(p['p95'])} | {_fmt(p['p99'])} | "
                         f"{_fmt(p['p99.9'])} | {_fmt(p['max'])} |")
        lines += ["", f"CPU cores during the probes: {_cpu(v['cpu_cores'])}.",
                  f"Worker store -> commit lag (histogram bounds): {json.dumps(v['worker_lag'])}.", ""]
    lines += ["#### Targets", "", "| target | measured | met |", "|---|---|---|"]
    for row in report["targets"]:
        lines.append(f"| {row['target']} | {row['measured']} | {'yes' if row['met'] else 'NO'} |")
    return "\n".join(lines)


def targets(report: dict) -> list[dict]:
    rows = []
    t = report.get("throughput")
    if t:
        rows.append({"target": f">= {TARGET_EVENTS_PER_S} events/s durable (acked after PubAck), 0 spooled",
                     "measured": f"{t['events_per_s']:.0f} events/s, {t['spooled']} spooled",
                     "met": t["events_per_s"] >= TARGET_EVENTS_PER_S and t["spooled"] == 0})
        drain_rate = t["drain"]["apply_per_s_while_draining"]
        if t.get("deferred_worker"):
            rows.append({"target": "the ingest worker keeps up with that rate",
                         "measured": f"worker deferred: alone it drains {_fmt(drain_rate, 0)}/s",
                         "met": bool(drain_rate) and drain_rate >= 0.98 * t["events_per_s"]})
        else:
            rows.append({"target": "the ingest worker keeps up with that rate",
                         "measured": f"applies {_fmt(t['worker_apply_per_s'], 0)}/s in the window (alone, draining: "
                                     f"{_fmt(drain_rate, 0)}/s), backlog {t['backlog_events']['end_of_window']} "
                                     f"at the window's end",
                         "met": bool(t["worker_apply_per_s"]) and t["worker_apply_per_s"] >= 0.98 * t["events_per_s"]})
    v = report.get("visibility")
    if v:
        p99 = v["publish_to_visible_ms"]["p99"]
        rows.append({"target": f"event -> feature visibility p99 <= {TARGET_VISIBLE_P99_MS:.0f} ms under GetFeed load",
                     "measured": f"p99 {_fmt(p99)} ms over {v['measured']} probes at {v['feed_qps']} QPS"
                                 f"{', failures ' + json.dumps(v['failures']) if v['failures'] else ''}",
                     "met": p99 is not None and p99 <= TARGET_VISIBLE_P99_MS and v["measured"] >= 300
                     and not v["failures"]})
    return rows


def bench_machine() -> dict:
    m = machine_info()
    from importlib.metadata import PackageNotFoundError, version

    for name, dist in (("nats_py", "nats-py"), ("uvloop", "uvloop"), ("protobuf", "protobuf")):
        try:
            m[name] = version(dist)
        except PackageNotFoundError:
            m[name] = None
    try:
        from server.events.nats_server import nats_server_binary

        out = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10)
        m["nats_server"] = out.stdout.strip() or out.stderr.strip()
    except Exception:  # noqa: BLE001 - descriptive only
        m["nats_server"] = None
    return m


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.ingest_bench", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="data dir holding the tenant (created when --items / "
                                                    "--movietweetings and missing)")
    g.add_argument("--tenant", default="bench")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--items", type=int, default=0, help="generate a synthetic tenant of N items if missing")
    src.add_argument("--movietweetings", action="store_true", help="load the bundled MovieTweetings 100K if missing")
    g.add_argument("--users", type=int, default=0, help="synthetic users (default max(5000, items/5))")
    g.add_argument("--events", type=int, default=0, help="synthetic history events (default max(100k, 5 x items))")
    g.add_argument("--no-train", action="store_true", help="do not train a new tenant (untrained: fallback feeds)")
    g.add_argument("--in-place", action="store_true", help="ingest into --data-dir itself instead of a copy")
    g.add_argument("--work-dir", help="where the copy (and NATS store) go (default: a new temp dir, removed after)")
    g = p.add_argument_group("server")
    g.add_argument("--workers", type=int, default=2, help="funnel serve --workers")
    g.add_argument("--defer-worker", action="store_true",
                   help="serve --no-ingest and start the ingest worker only after the throughput window: the "
                        "publish path alone during the window, the worker alone while draining")
    g = p.add_argument_group("run")
    g.add_argument("--mode", choices=["throughput", "visibility", "both"], default="both")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--timeout", type=float, default=10.0, help="Ingest deadline, s")
    g.add_argument("--limit", type=int, default=20, help="GetFeed limit (probes and background load)")
    g.add_argument("--wait-quiet", type=float, default=60.0,
                   help="before each mode wait up to this many s for other processes to go below 0.25 cores")
    g = p.add_argument_group("throughput")
    g.add_argument("--clients", type=int, default=8, help="concurrent closed-loop Ingest callers")
    g.add_argument("--channels", type=int, default=8, help="gRPC connections the callers share")
    g.add_argument("--batch", type=int, default=500, help="events per Ingest call (server maximum 1000)")
    g.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    g.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before the window")
    g.add_argument("--user-pool", type=int, default=100_000,
                   help="distinct users events are spread over (synthetic ids plus the tenant's known users)")
    g.add_argument("--types", default="view,click,like,skip",
                   help=f"comma-separated event types, cycled ({', '.join(EVENT_TYPE_NAMES)})")
    g.add_argument("--sample-s", type=float, default=0.25, help="worker progress sampling period")
    g.add_argument("--drain-timeout", type=float, default=300.0,
                   help="after the load, wait this long for the worker to apply the stream")
    g = p.add_argument_group("visibility")
    g.add_argument("--probes", type=int, default=300)
    g.add_argument("--probe-interval", type=float, default=0.25, help="seconds between probe starts")
    g.add_argument("--probe-users", type=int, default=20)
    g.add_argument("--probe-rank", type=int, default=50, help="probe users start at this activity rank")
    g.add_argument("--poll-interval", type=float, default=0.002, help="sleep between polls of one probe")
    g.add_argument("--poll-timeout", type=float, default=5.0, help="a probe not visible by then fails")
    g.add_argument("--feed-qps", type=float, default=200.0, help="background open-loop GetFeed load (0: none)")
    g.add_argument("--feed-warmup", type=float, default=3.0)
    g.add_argument("--feed-channels", type=int, default=16)
    g.add_argument("--bg-ingest-rate", type=float, default=0.0,
                   help="background ingest during the probes, events/s in --batch batches (0: none)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="write OUT.md and OUT.json (and OUT.server.log)")
    g.add_argument("--keep", action="store_true", help="keep the temp work dir")
    g.add_argument("--render", metavar="JSON", help="only re-render the markdown of an earlier OUT.json")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            report = json.load(f)
        report["targets"] = targets(report)
        print(markdown(report))
        return 0
    if not args.data_dir:
        raise SystemExit("--data-dir is required")
    if args.movietweetings and args.tenant == "bench":
        args.tenant = "demo"
    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch must be 1..1000 (the server's MAX_BATCH)")
    from protos import funnel_pb2

    types = [getattr(funnel_pb2, t.strip().upper()) for t in args.types.split(",") if t.strip()]
    command = [PY, "-m", "bench.ingest_bench", *(argv or sys.argv[1:])]
    report: dict = {"command": " ".join(shlex.quote(a) for a in command),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": bench_machine(),
                    "settings": {k: v for k, v in vars(args).items()}}
    created_work = not args.in_place and not args.work_dir
    if not args.in_place and not args.work_dir:
        args.work_dir = tempfile.mkdtemp(prefix="funnel-ingest-bench-")
    data = prepare(args)
    key = data.pop("api_key")
    report["data"] = data
    work = data["work_dir"]
    from bench.loadgen import load_users

    known = load_users(work, args.tenant)
    items = catalog_item_ids(work, args.tenant)
    if not items:
        raise SystemExit(f"tenant {args.tenant!r} has no items in {work}")
    n_synthetic = max(args.user_pool - len(known), 0)
    users = known[:args.user_pool] + [f"ingest-u{k:07d}" for k in range(n_synthetic)]
    log_path = (args.out + ".server.log") if args.out else os.path.join(args.work_dir or work, "serve.log")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    nats_dir = os.path.join(args.work_dir or os.path.dirname(work), "nats") if not args.in_place else \
        tempfile.mkdtemp(prefix="funnel-ingest-nats-")
    log(f"starting nats-server + funnel serve on {work}")
    stack = Stack(work, args.workers, nats_dir, log_path, ingest=not args.defer_worker)
    log(f"up: {stack.target}, nats {stack.nats.url}, processes {stack.pids()}")

    async def run() -> None:
        progress = Progress(work, stack.nats.url)
        await progress.connect()
        try:
            if args.mode in ("throughput", "both"):
                report["other_cores_before_throughput"] = await asyncio.to_thread(wait_quiet, stack, args.wait_quiet)
                log(f"throughput: {args.clients} clients x batch {args.batch} for {args.warmup}+{args.duration} s")
                report["throughput"] = await run_throughput(stack, progress, args, args.tenant, key, users, items,
                                                            types)
                t = report["throughput"]
                log(f"  {t['events_per_s']:.0f} events/s, {t['calls_per_s']} calls/s, spooled {t['spooled']}, "
                    f"p50/p99 {t['ingest_latency_ms']['p50']}/{t['ingest_latency_ms']['p99']} ms, worker "
                    f"{t['worker_apply_per_s']}/s, drain {t['drain']}")
            if args.mode in ("visibility", "both"):
                await asyncio.to_thread(stack.start_worker)
                report["other_cores_before_visibility"] = await asyncio.to_thread(wait_quiet, stack, args.wait_quiet)
                log(f"visibility: {args.probes} probes under {args.feed_qps} QPS GetFeed")
                report["visibility"] = await run_visibility(stack, progress, args, args.tenant, key, known, users,
                                                            items)
                v = report["visibility"]
                log(f"  publish->visible {v['publish_to_visible_ms']}, failures {v['failures']}")
        finally:
            await progress.close()

    try:
        asyncio.run(run())
    finally:
        stack.stop()
        log("stopped")
        if created_work and not args.keep:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    report["targets"] = targets(report)
    md = markdown(report)
    print(md)
    if args.out:
        with open(args.out + ".md", "w", encoding="utf-8") as f:
            f.write(md + "\n")
        with open(args.out + ".json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        log(f"wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
