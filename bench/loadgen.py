"""Open-loop load generator for Recommender.GetFeed.

    python -m bench.loadgen --target 127.0.0.1:50051 --tenant demo --key KEY \\
        --data-dir ./funnel-data --qps 500 --duration 30 --warmup 5

Open loop, no coordinated omission: every request has a scheduled send time
drawn up front (Poisson arrivals by default, or evenly spaced with
``--arrivals uniform``), independent of how fast the server answers. A request's
latency is measured from its *scheduled* time to its answer, so time spent
queued anywhere (client, kernel, server) counts. A timer thread (``time.sleep``,
~0.1 ms precision; asyncio's timers round to 1 ms) hands due requests to the
grpc.aio event loop; how late a request actually left is reported as
``client_lag_ms`` so a saturated client shows up instead of hiding in the numbers.

Each of ``--client-procs`` processes (default 1: on a 2-core box the server
needs the cores) sends ``qps / client-procs`` over ``--channels`` grpc.aio
channels, each its own TCP connection (local subchannel pool). A request goes
to the channel with the fewest calls in flight (round-robin among ties), which
keeps SO_REUSEPORT workers evenly loaded even when the kernel hashes more
connections to one of them.

Users: known user ids ordered by activity (from ``--users-file``, one id per
line, most active first, or from the tenant's interactions.npz under
``--data-dir``), drawn Zipf(``--zipf``) by rank; a ``--cold-share`` of requests
use ids the tenant has never seen.

Reported (JSON on stdout, also returned by :func:`run_load`): offered and
achieved QPS, latency p50/p95/p99/p99.9/max in ms over every measured request
that got an answer (errors included at their time-to-error; requests the client
dropped because ``--max-inflight`` was reached are counted separately), status
codes, degradation-level counts, server_time_us p50/p99, client lag and the
client processes' own CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import sys
import threading
import time

import numpy as np

CODE_DROPPED = -2     # client-side: max in-flight reached, never sent
CODE_UNFINISHED = -1  # no answer by the end of the run


# --------------------------------------------------------------------------- users
def load_users(data_dir: str | None = None, tenant: str | None = None, users_file: str | None = None) -> list[str]:
    """Known user ids, most active first."""
    if users_file:
        with open(users_file, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    if not (data_dir and tenant):
        return []
    from ops.interactions import Interactions
    from server.store import DataDir

    path = DataDir(data_dir).interactions(tenant)
    if not os.path.exists(path):
        return []
    hist = Interactions.load(path)
    counts = np.bincount(hist.user, minlength=hist.n_users)
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] > 0]
    return [str(u) for u in hist.user_ids[order]]


def draw_users(users: list[str], n: int, zipf_s: float, cold_share: float, rng: np.random.Generator) -> list[str]:
    """``n`` user ids: Zipf(zipf_s) over ``users`` by rank, ``cold_share`` unknown ids."""
    out: list[str] = []
    if users:
        ranks = np.arange(1, len(users) + 1, dtype=np.float64)
        p = ranks ** -zipf_s
        p /= p.sum()
        picks = rng.choice(len(users), size=n, p=p)
        out = [users[i] for i in picks.tolist()]
    cold = rng.random(n) < (cold_share if users else 1.0)
    cold_ids = rng.integers(0, 1 << 40, size=n)
    return [f"bench-cold-{cold_ids[i]:x}" if cold[i] else out[i] for i in range(n)]


def arrival_offsets(rate: float, total_s: float, arrivals: str, rng: np.random.Generator,
                    phase: float = 0.0) -> np.ndarray:
    """Scheduled send times in seconds from the start, for ``rate`` requests/s over ``total_s``."""
    if rate <= 0:
        return np.empty(0)
    if arrivals == "uniform":
        return np.arange(phase / rate, total_s, 1.0 / rate)
    n = int(rate * total_s * 1.2 + 10 * math.sqrt(rate * total_s) + 10)
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while t[-1] < total_s:  # very unlikely: extend
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return t[t < total_s]


# --------------------------------------------------------------------------- client process
def _client_main(cfg: dict, conn) -> None:
    """One client process: wait for the start time, run the schedule, send back arrays."""
    try:
        result = _client_run(cfg, conn)
    except BaseException as exc:  # report instead of hanging the parent
        result = {"error": f"{type(exc).__name__}: {exc}"}
    conn.send(result)
    conn.close()


def _client_run(cfg: dict, conn) -> dict:
    import grpc

    # the timer thread must get the GIL quickly when a send is due (default switch interval: 5 ms)
    sys.setswitchinterval(cfg.get("switch_interval", 0.0002))

    from protos import funnel_pb2, funnel_pb2_grpc

    rng = np.random.default_rng(cfg["seed"])
    total = cfg["warmup"] + cfg["duration"]
    offsets = arrival_offsets(cfg["rate"], total, cfg["arrivals"], rng, cfg["phase"])
    n = offsets.shape[0]
    users = draw_users(cfg["users"], n, cfg["zipf"], cfg["cold_share"], rng)
    requests = [funnel_pb2.FeedRequest(user_id=u, surface=cfg["surface"], limit=cfg["limit"]) for u in users]
    metadata = (("x-tenant-id", cfg["tenant"]), ("x-api-key", cfg["key"]))

    lag = np.full(n, np.nan)       # actual send - scheduled (s)
    latency = np.full(n, np.nan)   # answer - scheduled (s)
    done_at = np.full(n, np.nan)   # answer time, s from start
    code = np.full(n, CODE_UNFINISHED, dtype=np.int16)
    level = np.full(n, -1, dtype=np.int8)
    server_us = np.zeros(n, dtype=np.int64)
    failed: dict[str, int] = {}  # sources_failed names in measured responses

    async def main() -> None:
        loop = asyncio.get_running_loop()
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
        channels = [grpc.aio.insecure_channel(cfg["target"], options=options + [("bench.channel", i)])
                    for i in range(cfg["channels"])]
        stubs = [funnel_pb2_grpc.RecommenderStub(ch) for ch in channels]
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=10)
        inflight = [0] * len(stubs)
        state = {"rr": 0, "outstanding": 0}
        finished = asyncio.Event()
        n_stubs = len(stubs)

        async def call(i: int, t0: float, sched: float) -> None:
            # least in-flight channel, round-robin among ties
            start = state["rr"]
            best, best_n = start, inflight[start]
            for j in range(1, n_stubs):
                c = (start + j) % n_stubs
                if inflight[c] < best_n:
                    best, best_n = c, inflight[c]
            state["rr"] = (start + 1) % n_stubs
            inflight[best] += 1
            sent = time.perf_counter()
            lag[i] = sent - sched
            try:
                resp = await stubs[best].GetFeed(requests[i], metadata=metadata, timeout=cfg["timeout"])
                code[i] = 0
                level[i] = resp.degradation_level
                server_us[i] = resp.server_time_us
                for name in resp.sources_failed:
                    failed[name] = failed.get(name, 0) + (offsets[i] >= cfg["warmup"])
            except grpc.aio.AioRpcError as exc:
                code[i] = exc.code().value[0]
            except Exception:  # noqa: BLE001 - count, never crash the run
                code[i] = grpc.StatusCode.UNKNOWN.value[0]
            end = time.perf_counter()
            latency[i] = end - sched
            done_at[i] = end - t0
            inflight[best] -= 1
            state["outstanding"] -= 1
            if state["outstanding"] == 0 and state.get("all_fired"):
                finished.set()

        tasks = set()

        def fire(batch, t0):
            for i in batch:
                sched = t0 + offsets[i]
                if state["outstanding"] >= cfg["max_inflight"]:
                    code[i] = CODE_DROPPED
                    lag[i] = time.perf_counter() - sched
                    continue
                state["outstanding"] += 1
                task = loop.create_task(call(i, t0, sched))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

        def all_fired():
            state["all_fired"] = True
            if state["outstanding"] == 0:
                finished.set()

        # ready: tell the parent, wait for the common start time (wall clock)
        conn.send("ready")
        start_wall = conn.recv()
        t0 = time.perf_counter() + (start_wall - time.time())

        def timer() -> None:
            i = 0
            while i < n:
                now = time.perf_counter()
                due = t0 + offsets[i]
                if due > now:
                    time.sleep(due - now)
                    now = time.perf_counter()
                j = i
                while j < n and t0 + offsets[j] <= now:
                    j += 1
                loop.call_soon_threadsafe(fire, range(i, j), t0)
                i = j
            loop.call_soon_threadsafe(all_fired)

        cpu0 = time.process_time()
        thread = threading.Thread(target=timer, name="loadgen-timer", daemon=True)
        thread.start()
        end_by = t0 + total + cfg["timeout"] + 2.0
        while not finished.is_set() and time.perf_counter() < end_by:
            try:
                await asyncio.wait_for(finished.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                pass
        state["cpu_s"] = time.process_time() - cpu0
        for task in list(tasks):
            task.cancel()
        for ch in channels:
            await ch.close(None)
        state["elapsed"] = time.perf_counter() - t0

        result_state.update(state)

    result_state: dict = {}
    asyncio.run(main())
    return {"offsets": offsets, "lag": lag, "latency": latency, "done_at": done_at, "code": code,
            "level": level, "server_us": server_us, "sources_failed": failed, "cpu_s": result_state.get("cpu_s", float("nan")),
            "elapsed": result_state.get("elapsed", float("nan"))}


# --------------------------------------------------------------------------- aggregation
def _pct(values: np.ndarray, qs=(50, 95, 99, 99.9)) -> dict:
    if values.size == 0:
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": float(np.percentile(values, q)) for q in qs}


def summarize(parts: list[dict], qps: float, duration: float, warmup: float) -> dict:
    import grpc

    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("offsets", "lag", "latency", "done_at", "code",
                                                               "level", "server_us")}
    measured = cat["offsets"] >= warmup
    code = cat["code"][measured]
    latency = cat["latency"][measured]
    answered = code >= 0
    ok = code == 0
    done_at = cat["done_at"][measured]
    ok_in_window = ok & (done_at >= warmup) & (done_at < warmup + duration)
    names = {c.value[0]: c.name for c in grpc.StatusCode}
    names.update({CODE_DROPPED: "CLIENT_DROPPED", CODE_UNFINISHED: "NO_ANSWER"})
    errors: dict[str, int] = {}
    for c, k in zip(*np.unique(code[code != 0], return_counts=True)):
        errors[names.get(int(c), str(int(c)))] = int(k)
    levels = {str(int(lv)): int(k) for lv, k in zip(*np.unique(cat["level"][measured][ok], return_counts=True))}
    lat_ms = latency[answered] * 1e3
    server_ms = cat["server_us"][measured][ok] / 1e3
    lag_ms = cat["lag"][measured] * 1e3
    lag_ms = lag_ms[np.isfinite(lag_ms)]
    service_ms = (latency - cat["lag"][measured])[answered] * 1e3
    cpu = sum(p["cpu_s"] for p in parts)
    failed: dict[str, int] = {}
    for p in parts:
        for name, k in p.get("sources_failed", {}).items():
            failed[name] = failed.get(name, 0) + int(k)
    elapsed = max(p["elapsed"] for p in parts)
    out = {
        "target_qps": qps,
        "duration_s": duration,
        "warmup_s": warmup,
        "sent": int(measured.sum()),
        "offered_qps": round(float(measured.sum()) / duration, 1),
        "achieved_qps": round(float(ok_in_window.sum()) / duration, 1),
        "ok": int(ok.sum()),
        "errors": errors,
        "error_rate": round(float((code != 0).sum()) / max(int(measured.sum()), 1), 5),
        "latency_ms": {k: (round(v, 3) if v is not None else None) for k, v in _pct(lat_ms).items()},
        "degradation_levels": levels,
        "sources_failed": {k: v for k, v in sorted(failed.items()) if v},  # responses naming the source
        "server_time_ms": {k: (round(v, 3) if v is not None else None)
                           for k, v in _pct(server_ms, (50, 99)).items()},
        "client_lag_ms": {k: (round(v, 3) if v is not None else None) for k, v in _pct(lag_ms, (50, 99)).items()},
        # from the actual send (excludes client lag; NOT coordinated-omission free, for diagnosis only)
        "from_send_ms": {k: (round(v, 3) if v is not None else None) for k, v in _pct(service_ms, (50, 99)).items()},
        "client_cpu_cores": round(cpu / elapsed, 3) if elapsed > 0 else None,
    }
    out["latency_ms"]["max"] = round(float(lat_ms.max()), 3) if lat_ms.size else None
    out["latency_ms"]["mean"] = round(float(lat_ms.mean()), 3) if lat_ms.size else None
    return out


# --------------------------------------------------------------------------- entry
def run_load(target: str, tenant: str, key: str, qps: float, duration: float, warmup: float = 5.0,
             users: list[str] | None = None, limit: int = 20, client_procs: int = 1, channels: int = 16,
             arrivals: str = "poisson", zipf: float = 0.9, cold_share: float = 0.1, surface: str = "home",
             timeout: float = 1.0, max_inflight: int = 4096, seed: int = 0) -> dict:
    """Runs one open-loop load level and returns the summary dict."""
    users = list(users or [])
    ctx = multiprocessing.get_context("spawn")
    procs, pipes = [], []
    for p in range(client_procs):
        cfg = dict(target=target, tenant=tenant, key=key, rate=qps / client_procs, duration=duration,
                   warmup=warmup, users=users, limit=limit, channels=channels, arrivals=arrivals, zipf=zipf,
                   cold_share=cold_share, surface=surface, timeout=timeout, max_inflight=max_inflight,
                   seed=seed * 1000 + p, phase=p / client_procs)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_main, args=(cfg, child), name=f"loadgen-{p}", daemon=True)
        proc.start()
        procs.append(proc)
        pipes.append(parent)
    try:
        for pipe in pipes:  # wait until every client is connected
            if not pipe.poll(60):
                raise RuntimeError("a load generator process did not start within 60 s")
            msg = pipe.recv()
            if msg != "ready":
                raise RuntimeError(f"load generator process failed: {msg.get('error', msg)}")
        start = time.time() + 0.2
        for pipe in pipes:
            pipe.send(start)
        parts = []
        for pipe in pipes:
            if not pipe.poll(warmup + duration + timeout + 60):
                raise RuntimeError("a load generator process did not report back")
            part = pipe.recv()
            if "error" in part:
                raise RuntimeError(f"load generator process failed: {part['error']}")
            parts.append(part)
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
    result = summarize(parts, qps, duration, warmup)
    result.update(client_procs=client_procs, channels=channels, arrivals=arrivals, limit=limit,
                  users_known=len(users), zipf=zipf, cold_share=cold_share)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--tenant", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--qps", type=float, required=True)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds (after warm-up)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds at the same rate, not measured")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--users-file", help="known user ids, one a line, most active first")
    src.add_argument("--data-dir", help="read known users from the tenant's interactions.npz")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--surface", default="home")
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--channels", type=int, default=16, help="grpc.aio channels (TCP connections) per process")
    p.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    p.add_argument("--zipf", type=float, default=0.9, help="Zipf exponent over users ranked by activity")
    p.add_argument("--cold-share", type=float, default=0.1, help="share of requests for unknown users")
    p.add_argument("--timeout", type=float, default=1.0, help="per-call deadline in seconds")
    p.add_argument("--max-inflight", type=int, default=4096, help="per process; beyond it requests are dropped")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    users = load_users(args.data_dir, args.tenant, args.users_file)
    result = run_load(args.target, args.tenant, args.key, args.qps, args.duration, args.warmup, users,
                      args.limit, args.client_procs, args.channels, args.arrivals, args.zipf, args.cold_share,
                      args.surface, args.timeout, args.max_inflight, args.seed)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
