"""End-to-end serving benchmark: data -> server -> floor -> open-loop load levels -> report.

    # synthetic tenant of 100k items: generate, load, train, serve 2 workers, 3 load levels
    python -m bench.run_bench --data-dir /tmp/bench-100k --items 100000 --workers 2 \\
        --qps 200,500,900 --duration 30 --out bench/results/100k

    # the bundled MovieTweetings sample (loaded and trained once into the data dir)
    python -m bench.run_bench --data-dir /tmp/bench-mt --movietweetings --qps 200,500,900

    # an existing data dir and tenant as they are
    python -m bench.run_bench --data-dir D --tenant T --qps 500

Steps: (1) unless the tenant is already there, create it: ``--items N`` generates a
synthetic catalog (bench.synth, straight into the store), ``--movietweetings``
loads the bundled sample; then trains it (``funnel train``) when no models are
deployed and ops.train is available (``--no-train`` skips); (2) adds a fresh API
key (server.cli._create_tenant); (3) starts ``funnel serve --workers W`` on a free
127.0.0.1 port and waits for every worker; (4) measures the component floor
(bench.floor, its own process, server idle); (5) runs bench.loadgen at each
``--qps`` for ``--duration`` s after ``--warmup`` s, recording per-worker CPU,
other processes' CPU on the machine and per-worker memory after each level;
(6) stops the server and writes a markdown report + JSON (stdout, and ``--out``
.md/.json). Memory is read from /proc/PID/smaps_rollup: private = Private_Clean +
Private_Dirty (what the process alone holds), also Pss, Rss and Anonymous.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- machine and /proc
def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    import grpc
    import numpy
    import onnxruntime
    import usearch

    return {"nproc": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)), "cpu_model": model,
            "ram_gib": round(mem_kb / 2**20, 1), "kernel": platform.release(), "python": platform.python_version(),
            "grpcio": grpc.__version__, "onnxruntime": onnxruntime.__version__, "usearch": usearch.__version__,
            "numpy": numpy.__version__}


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, seconds."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    with open("/proc/stat", encoding="utf-8") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    steal = parts[7] if len(parts) > 7 else 0
    return (sum(parts[:8]) - idle - steal) / CLK_TCK


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave to someone else (steal) since boot."""
    with open("/proc/stat", encoding="utf-8") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (parts[7] if len(parts) > 7 else 0) / CLK_TCK


def smaps_rollup(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    out[parts[0][:-1]] = int(parts[1])
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["VmHWM"] = int(line.split()[1])
    except OSError:
        return {}
    mb = lambda k: round(out.get(k, 0) / 1024, 1)  # noqa: E731
    return {"private_mb": round((out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)) / 1024, 1),
            "private_dirty_mb": mb("Private_Dirty"), "anonymous_mb": mb("Anonymous"), "pss_mb": mb("Pss"),
            "rss_mb": mb("Rss"), "peak_rss_mb": mb("VmHWM")}


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def connections_per_pid(pids: list[int], port: int) -> list[int]:
    """Established TCP connections on local ``port`` held by each pid (SO_REUSEPORT balance)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name, encoding="utf-8") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            pass
    out = []
    for pid in pids:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            pass
        out.append(n)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(cmd: list[str], what: str, timeout: float | None = None) -> float:
    log(f"{what}: {' '.join(cmd)}")
    t = time.perf_counter()
    # children's output goes to stderr: stdout carries only the report (init prints an admin key: dropped)
    out = subprocess.DEVNULL if what == "init" else sys.stderr
    subprocess.run(cmd, cwd=ROOT, env=_env(), check=True, timeout=timeout, stdout=out)
    return round(time.perf_counter() - t, 1)


# --------------------------------------------------------------------------- data
def tenant_state(data_dir: str, tenant: str) -> dict:
    """n_items and whether the tenant has index/model pointers (empty dict: no tenant data)."""
    from server.store import LmdbStore

    if not os.path.exists(os.path.join(data_dir, "store", "data.mdb")):
        return {}
    store = LmdbStore.open(data_dir)  # not readonly: a store from an older schema gains its new dbs
    try:
        with store.snapshot() as snap:
            n_items = snap.state(tenant, "n_items")
            if n_items is None:
                return {}
            return {"n_items": int(n_items),
                    "indexes": [n for n in ("cf", "content") if snap.state(tenant, f"index:{n}")],
                    "models": [n for n in ("prerank", "rank") if snap.state(tenant, f"model:{n}")]}
    finally:
        store.close()


def train_available() -> bool:
    try:
        from ops.train import train_tenant  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_data(args) -> dict:
    info: dict = {"data_dir": os.path.abspath(args.data_dir), "tenant": args.tenant, "timings_s": {}}
    state = tenant_state(args.data_dir, args.tenant)
    if not state:
        _run([PY, "-m", "server.cli", "init", "--data-dir", args.data_dir], "init")
        if args.items:
            users = args.users or max(5000, args.items // 5)
            events = args.events or max(100_000, args.items * 5)
            info["timings_s"]["generate_and_load"] = _run(
                [PY, "-m", "bench.synth", "--items", str(args.items), "--users", str(users), "--events",
                 str(events), "--seed", str(args.seed), "--data-dir", args.data_dir, "--tenant", args.tenant,
                 "--no-progress"], "synthetic catalog")
            info["dataset"] = f"synthetic (bench.synth) items={args.items} users={users} events={events} seed={args.seed}"
        elif args.movietweetings:
            from server.cli import BUNDLED_DATASET

            info["timings_s"]["load"] = _run([PY, "-m", "server.cli", "load", "--data-dir", args.data_dir,
                                              "--tenant", args.tenant, "--quiet", BUNDLED_DATASET], "load")
            info["dataset"] = "MovieTweetings 100K (bundled)"
        else:
            raise SystemExit(f"tenant {args.tenant!r} is not in {args.data_dir}: pass --items N or --movietweetings")
        state = tenant_state(args.data_dir, args.tenant)
    else:
        info["dataset"] = "existing data dir"
    if not args.no_train and not state.get("models"):
        if train_available():
            info["timings_s"]["train"] = _run([PY, "-m", "server.cli", "train", "--data-dir", args.data_dir,
                                               "--tenant", args.tenant, "--quiet"], "train")
            state = tenant_state(args.data_dir, args.tenant)
        else:
            log("ops.train.train_tenant is not available: serving the untrained catalog (fallback levels)")
    info.update(state)
    info["trained"] = bool(state.get("models")) and bool(state.get("indexes"))
    try:
        from ops.interactions import Interactions
        from server.store import DataDir

        hist = Interactions.load(DataDir(args.data_dir).interactions(args.tenant))
        info["users"], info["interactions"] = hist.n_users, len(hist)
    except (OSError, KeyError):
        pass
    return info


# --------------------------------------------------------------------------- server
class Server:
    def __init__(self, data_dir: str, workers: int, log_path: str):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        env = dict(_env(), FUNNEL_LOG_LEVEL="INFO")
        self.log_file = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [PY, "-m", "server.cli", "serve", "--data-dir", data_dir, "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", str(workers), "--grace", "5"],
            cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        if workers <= 1:
            self.worker_pids = [self.proc.pid]
        else:
            self.worker_pids = [p for p in children(self.proc.pid)
                                if "spawn_main" in cmdline(p) and "resource_tracker" not in cmdline(p)]
        self.parent_pid = self.proc.pid if workers > 1 else None

    def _wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self._log_tail()}")
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                ready = sum(1 for line in f if " serving " in line and "funnel.server" in line)
            if ready >= self.workers and self._healthy():
                return
            time.sleep(0.3)
        raise RuntimeError(f"server not ready in {timeout}s; log: {self._log_tail()}")

    def _healthy(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            with grpc.insecure_channel(self.target) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def cpu(self) -> dict[int, float]:
        return {pid: proc_cpu_s(pid) for pid in self.worker_pids}

    def memory(self) -> dict:
        out = {f"worker{i}": smaps_rollup(pid) for i, pid in enumerate(self.worker_pids)}
        if self.parent_pid:
            out["supervisor"] = smaps_rollup(self.parent_pid)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode


def wait_quiet(server: Server, max_wait: float, threshold: float = 0.25) -> float:
    """Waits (up to max_wait s) until processes other than the server use < threshold cores;
    returns the last measured foreign load in cores."""
    deadline = time.monotonic() + max_wait
    while True:
        b0, c0, t0 = machine_busy_s(), sum(server.cpu().values()), time.perf_counter()
        time.sleep(1.0)
        foreign = ((machine_busy_s() - b0) - (sum(server.cpu().values()) - c0)) / (time.perf_counter() - t0)
        if foreign < threshold or time.monotonic() >= deadline:
            return round(foreign, 2)
        log(f"machine busy with other work ({foreign:.2f} cores); waiting")


# --------------------------------------------------------------------------- report
def _fmt(v, nd=2):
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _conns(level: dict) -> str:
    conns = level.get("connections_per_worker")
    return f" ({':'.join(map(str, conns))})" if conns else ""


def targets(report: dict, workers: int) -> list[dict]:
    floor_p50_ms = report["floor"]["floor_us"]["p50"] / 1000 if report.get("floor") else None
    levels = report["levels"]
    by_qps = {lv["target_qps"]: lv for lv in levels}
    rows = []
    at500 = by_qps.get(500.0) or (min(levels, key=lambda lv: abs(lv["target_qps"] - 500)) if levels else None)
    if at500 and floor_p50_ms:
        ratio = at500["latency_ms"]["p50"] / floor_p50_ms if at500["latency_ms"]["p50"] else None
        rows.append({"target": "p50 <= 1.6 x same-run floor", "at": f"{at500['target_qps']:.0f} QPS",
                     "measured": f"p50 {_fmt(at500['latency_ms']['p50'])} ms = {_fmt(ratio)} x floor "
                                 f"{floor_p50_ms:.2f} ms",
                     "met": ratio is not None and ratio <= 1.6})
    if at500:
        p99 = at500["latency_ms"]["p99"]
        rows.append({"target": "p99 <= 5 ms at 500 QPS", "at": f"{at500['target_qps']:.0f} QPS",
                     "measured": f"p99 {_fmt(p99)} ms", "met": p99 is not None and p99 <= 5.0
                     and at500["target_qps"] >= 500})
    best = None
    for lv in levels:
        p99 = lv["latency_ms"]["p99"]
        # sustained: keeps up with the offered rate, no errors, and the queue is not building (p99 <= 100 ms)
        sustained = (lv["achieved_qps"] >= 0.98 * lv["offered_qps"] and lv["offered_qps"] >= 0.95 * lv["target_qps"]
                     and lv["error_rate"] <= 0.001 and p99 is not None and p99 <= 100.0)
        if sustained and (best is None or lv["target_qps"] > best["target_qps"]):
            best = lv
    top = max(levels, key=lambda lv: lv["target_qps"]) if levels else None
    if top:
        rows.append({"target": f">= 900 QPS sustained with 2 workers (ran {workers})",
                     "at": f"{top['target_qps']:.0f} QPS",
                     "measured": f"highest sustained level: {best['target_qps']:.0f} QPS (p99 "
                                 f"{_fmt(best['latency_ms']['p99'])} ms)" if best else "none sustained",
                     "met": bool(best and best["target_qps"] >= 900 and workers <= 2)})
    mem = report.get("memory_after_load") or {}
    privs = [m["private_mb"] for k, m in mem.items() if k.startswith("worker") and m]
    if privs:
        rows.append({"target": "<= ~300 MB private memory per worker", "at": "after the last level",
                     "measured": ", ".join(f"{p:.0f} MB" for p in privs), "met": max(privs) <= 300})
    return rows


def markdown(report: dict) -> str:
    from bench.floor import format_floor

    m, d = report["machine"], report["data"]
    lines = [f"### {d.get('dataset', '')}: {d.get('n_items', '?')} items, tenant `{d['tenant']}`", ""]
    lines.append(f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
                 f"Python {m['python']}, grpcio {m['grpcio']}, onnxruntime {m['onnxruntime']}, "
                 f"usearch {m['usearch']}.")
    lines.append(f"Data: {d.get('n_items')} items, {d.get('users', '?')} users, {d.get('interactions', '?')} "
                 f"interactions; trained: {d.get('trained')} (indexes {d.get('indexes')}, models {d.get('models')}); "
                 f"setup times {d.get('timings_s')}.")
    s = report["settings"]
    lines.append(f"Server: `funnel serve --workers {s['workers']}`; load: {s['client_procs']} client process(es) x "
                 f"{s['channels']} grpc.aio channels, {s['arrivals']} arrivals, limit {s['limit']}, "
                 f"Zipf {s['zipf']} over known users + {s['cold_share']:.0%} unknown, {s['warmup']} s warm-up + "
                 f"{s['duration']} s measured per level.")
    lines.append("")
    if report.get("floor"):
        lines.append("#### Floor (same run, server idle)")
        lines.append("")
        lines.append(format_floor(report["floor"]))
        lines.append("")
    lines.append("#### Load (open loop, latency from the scheduled send time)")
    lines.append("")
    floor_ms = report["floor"]["floor_us"]["p50"] / 1000 if report.get("floor") else None
    lines.append("| target QPS | offered | achieved | p50 ms | p50/floor | p95 ms | p99 ms | p99.9 ms | max ms | errors "
                 "| levels | sources failed | server p50/p99 ms | client lag p99 ms | worker CPU cores (connections) "
                 "| client CPU | other CPU | steal |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---|---:|---:|---:|")
    for lv in report["levels"]:
        lat = lv["latency_ms"]
        ratio = lat["p50"] / floor_ms if floor_ms and lat["p50"] else None
        lines.append(
            f"| {lv['target_qps']:.0f} | {lv['offered_qps']:.0f} | {lv['achieved_qps']:.0f} | {_fmt(lat['p50'])} | "
            f"{_fmt(ratio, 1)} | {_fmt(lat['p95'])} | "
            f"{_fmt(lat['p99'])} | {_fmt(lat['p99.9'])} | {_fmt(lat['max'])} | "
            f"{json.dumps(lv['errors']) if lv['errors'] else 0} | {json.dumps(lv['degradation_levels'])} | "
            f"{json.dumps(lv.get('sources_failed')) if lv.get('sources_failed') else 0} | "
            f"{_fmt(lv['server_time_ms']['p50'])}/{_fmt(lv['server_time_ms']['p99'])} | "
            f"{_fmt(lv['client_lag_ms']['p99'])} | {' + '.join(f'{c:.2f}' for c in lv['worker_cpu_cores'])}{_conns(lv)} | "
            f"{_fmt(lv['client_cpu_cores'])} | {_fmt(lv['other_cpu_cores'])} | {_fmt(lv.get('steal_cores'))} |")
    lines.append("")
    lines.append("#### Memory per process (MB; private = Private_Clean + Private_Dirty from smaps_rollup)")
    lines.append("")
    lines.append("| when | process | private | private dirty | anonymous | Pss | Rss | peak Rss |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for when, key in (("idle after start", "memory_idle"), ("after load", "memory_after_load")):
        for proc, mm in (report.get(key) or {}).items():
            if mm:
                lines.append(f"| {when} | {proc} | {mm['private_mb']} | {mm['private_dirty_mb']} | "
                             f"{mm['anonymous_mb']} | {mm['pss_mb']} | {mm['rss_mb']} | {mm['peak_rss_mb']} |")
    lines.append("")
    lines.append("#### Targets")
    lines.append("")
    lines.append("| target | at | measured | met |")
    lines.append("|---|---|---|---|")
    for row in report["targets"]:
        lines.append(f"| {row['target']} | {row['at']} | {row['measured']} | {'yes' if row['met'] else 'NO'} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir")
    p.add_argument("--tenant", default="bench")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--items", type=int, default=0, help="generate a synthetic tenant of N items if missing")
    src.add_argument("--movietweetings", action="store_true", help="load the bundled MovieTweetings 100K if missing")
    p.add_argument("--users", type=int, default=0, help="synthetic users (default max(5000, items/5))")
    p.add_argument("--events", type=int, default=0, help="synthetic events (default max(100k, 5 x items))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--qps", default="200,500,900", help="comma-separated load levels")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    p.add_argument("--zipf", type=float, default=0.9)
    p.add_argument("--cold-share", type=float, default=0.1)
    p.add_argument("--floor-repeat", type=int, default=300)
    p.add_argument("--no-floor", action="store_true")
    p.add_argument("--wait-quiet", type=float, default=30.0,
                   help="before each level wait up to this many s for other processes to go below 0.25 cores")
    p.add_argument("--out", help="write OUT.md and OUT.json")
    p.add_argument("--render", metavar="JSON", help="only re-render the markdown of an earlier OUT.json")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render, encoding="utf-8") as f:
            report = json.load(f)
        report["targets"] = targets(report, report["settings"]["workers"])
        print(markdown(report))
        return 0
    if not args.data_dir:
        p.error("--data-dir is required")
    if args.movietweetings and args.tenant == "bench":
        args.tenant = "demo"

    from bench.loadgen import load_users, run_load

    report: dict = {"machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "settings": {k: getattr(args, k) for k in ("workers", "duration", "warmup", "limit",
                                                               "client_procs", "channels", "arrivals", "zipf",
                                                               "cold_share")}}
    report["data"] = prepare_data(args)
    from server.cli import _create_tenant

    key = _create_tenant(args.data_dir, args.tenant, "PG13")
    users = load_users(args.data_dir, args.tenant)
    log_path = (args.out + ".server.log") if args.out else os.path.join(args.data_dir, "bench-server.log")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    server = Server(args.data_dir, args.workers, log_path)
    log(f"server up on {server.target}: workers {server.worker_pids}")
    try:
        report["memory_idle"] = server.memory()
        if not args.no_floor:
            floor_json = os.path.join(args.data_dir, "bench-floor.json")
            wait_quiet(server, args.wait_quiet)
            _run([PY, "-m", "bench.floor", "--data-dir", args.data_dir, "--tenant", args.tenant, "--target",
                  server.target, "--key", key, "--repeat", str(args.floor_repeat), "--limit", str(args.limit),
                  "--out", floor_json], "floor", timeout=600)
            with open(floor_json, encoding="utf-8") as f:
                report["floor"] = json.load(f)
        report["levels"] = []
        for qps in [float(q) for q in args.qps.split(",") if q.strip()]:
            other_before = wait_quiet(server, args.wait_quiet)
            log(f"load {qps:.0f} QPS for {args.warmup}+{args.duration} s (other processes {other_before} cores)")
            cpu0, busy0, me0, t0 = server.cpu(), machine_busy_s(), proc_cpu_s(os.getpid()), time.perf_counter()
            steal0 = machine_steal_s()
            conns: list[int] = []

            def sample_connections():
                time.sleep(min(args.warmup, 3.0) + 1.0)
                conns.extend(connections_per_pid(server.worker_pids, server.port))

            sampler = threading.Thread(target=sample_connections, daemon=True)
            sampler.start()
            result = run_load(server.target, args.tenant, key, qps, args.duration, args.warmup, users, args.limit,
                              args.client_procs, args.channels, args.arrivals, args.zipf, args.cold_share)
            sampler.join(timeout=5)
            result["connections_per_worker"] = conns
            wall = time.perf_counter() - t0
            cpu1, busy1, me1 = server.cpu(), machine_busy_s(), proc_cpu_s(os.getpid())
            workers_cpu = [(cpu1[pid] - cpu0[pid]) / wall for pid in server.worker_pids]
            client_cpu = (result.get("client_cpu_cores") or 0.0) * (args.warmup + args.duration) / wall
            result["worker_cpu_cores"] = [round(c, 2) for c in workers_cpu]
            result["other_cpu_cores"] = round(max((busy1 - busy0) / wall - sum(workers_cpu) - client_cpu
                                                  - (me1 - me0) / wall, 0.0), 2)
            result["steal_cores"] = round((machine_steal_s() - steal0) / wall, 3)
            result["memory"] = server.memory()
            log(f"  achieved {result['achieved_qps']} QPS, p50 {result['latency_ms']['p50']} ms, "
                f"p99 {result['latency_ms']['p99']} ms, errors {result['errors']}, levels "
                f"{result['degradation_levels']}, workers {result['worker_cpu_cores']} cores, "
                f"other {result['other_cpu_cores']} cores")
            report["levels"].append(result)
        report["memory_after_load"] = server.memory()
    finally:
        rc = server.stop()
        log(f"server stopped (exit {rc})")
    report["targets"] = targets(report, args.workers)
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
