"""The ingest worker alone, in one process: CPU per applied event, by part.

    # the whole worker (IngestWorker: pull loop, Applier, roll-up, metrics) draining a
    # stream pre-filled with 200k events
    python -m bench.worker_bench --data-dir /tmp/bench-mt --mode stream --events 200000 --batch 500
    # only the NATS side (Applier.apply replaced by a loop that takes the sequence)
    python -m bench.worker_bench --data-dir /tmp/bench-mt --mode stream --no-apply
    # only Applier.apply on prepared batches (no NATS), with the time of the commits
    python -m bench.worker_bench --data-dir /tmp/bench-mt --mode apply --batch 500 [--profile]

Events as bench.ingest_bench makes them: a pool of 20k (user, item, type, time) drawn from
100k users (the tenant's known users first, then synthetic ids), the catalog's items
uniformly, types view/click/like/skip in turn, times within the last minute; every event
its own id. Runs on a copy of ``--data-dir`` (``--work-dir``). ``stream`` starts an
embedded nats-server, publishes the events (not timed), then runs IngestWorker in this
process until it applied the last one; CPU (user + sys, this process only: nats-server
is a child and not counted) and wall time are taken from the first committed batch on.
``--profile`` prints cProfile's top functions. For an A/B, copy this file into a copy of
the tree with the other worker and run it from there.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import random
import resource
import shutil
import socket
import sys
import time


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _users_and_items(data_dir: str, tenant: str, n_users: int) -> tuple[list[str], list[str]]:
    from bench.ingest_bench import catalog_item_ids, tenant_keys

    items = catalog_item_ids(data_dir, tenant)
    known = tenant_keys(data_dir, tenant, "users", n_users)
    return known + [f"synthetic-user-{k:06d}" for k in range(n_users - len(known))], items


def _events(args, users: list[str], items: list[str]):
    """(subject, payload) per event, as serve publishes them."""
    from protos import funnel_pb2
    from server.events.nats_server import subject_for

    rng = random.Random(args.seed)
    types = [funnel_pb2.VIEW, funnel_pb2.CLICK, funnel_pb2.LIKE, funnel_pb2.SKIP]
    now_ms = int(time.time() * 1000)
    pool = [(rng.choice(users), rng.choice(items), types[k % len(types)], now_ms - rng.randrange(0, 60_000))
            for k in range(args.pool)]
    for k in range(args.events):
        user, item, etype, ts = pool[k % len(pool)]
        event = funnel_pb2.Event(event_id=f"{k:024x}", user_id=user, item_id=item, type=etype, timestamp_ms=ts,
                                 surface="home")
        yield subject_for(args.tenant, user).encode(), event.SerializeToString()


def _report(label: str, n: int, wall: float, cpu: float, extra: str = "") -> None:
    print(f"{label}: {n} events in {wall:.2f} s = {n / wall:,.0f}/s; CPU {cpu:.2f} s = {cpu / n * 1e6:.1f} us "
          f"per event{extra}", flush=True)


def run_apply(args, users, items) -> None:
    from server.events import worker as w
    from server.store import LmdbStore

    store = LmdbStore.open(args.work_dir)
    applier, metrics = w.Applier(store), w.WorkerMetrics()
    commits = {"cpu": 0.0, "wall": 0.0}
    write = store.write

    class TimedCommit:  # the commit is the write transaction's __exit__
        def __init__(self):
            self.txn = write()

        def __enter__(self):
            return self.txn.__enter__()

        def __exit__(self, *exc):
            c, t = _cpu(), time.perf_counter()
            try:
                return self.txn.__exit__(*exc)
            finally:
                commits["cpu"] += _cpu() - c
                commits["wall"] += time.perf_counter() - t

    store.write = TimedCommit
    stored_at = time.time()
    entries = [(seq, subject, payload, stored_at) for seq, (subject, payload) in enumerate(_events(args, users, items), 1)]
    batches = [entries[k:k + args.batch] for k in range(0, len(entries), args.batch)]
    profile = cProfile.Profile() if args.profile else None
    c, t = _cpu(), time.perf_counter()
    if profile:
        profile.enable()
    for batch in batches:
        applier.apply(batch, "bench", metrics.lag)
    if profile:
        profile.disable()
    wall, cpu = time.perf_counter() - t, _cpu() - c
    n = len(entries)
    _report(f"Applier.apply, batch {args.batch}", n, wall, cpu,
            f"; commits ({len(batches)}): CPU {commits['cpu'] / n * 1e6:.1f} us per event, "
            f"{commits['wall'] / len(batches) * 1e3:.1f} ms wall each")
    store.close()
    if profile:
        pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def run_stream(args, users, items) -> None:
    import nats

    from server.events import worker as w
    from server.events.nats_server import EmbeddedNats, ensure_event_stream

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nats_dir = os.path.join(os.path.dirname(args.work_dir), "nats")
    shutil.rmtree(nats_dir, ignore_errors=True)
    server = EmbeddedNats(nats_dir, port).start()
    try:
        async def fill() -> None:
            nc = await nats.connect(server.url)
            js = nc.jetstream()
            await ensure_event_stream(js)
            for k, (subject, payload) in enumerate(_events(args, users, items)):
                await nc.publish(subject.decode(), payload)
                if k % 5000 == 4999:
                    await nc.flush()
            await nc.flush()
            while (await js.stream_info("FUNNEL_EVENTS")).state.messages < args.events:
                await asyncio.sleep(0.2)
            await nc.close()

        asyncio.run(fill())
        if args.no_apply:
            def apply(self, batch, stream_id, lag=None):
                return w.ApplyStats(applied=len(batch), last_seq=batch[-1][0] if batch else 0)

            w.Applier.apply = apply

        async def main():
            stop, metrics = asyncio.Event(), w.WorkerMetrics()
            worker = w.IngestWorker(args.work_dir, server.url, batch=args.batch, metrics=metrics,
                                    rollup_s=args.rollup_interval)

            async def watch():
                first = None
                while True:
                    await asyncio.sleep(0.02)
                    seq = metrics.sequence._value.get()
                    if seq > 0 and first is None:
                        first = (seq, time.perf_counter(), _cpu())
                    if seq >= args.events:
                        stop.set()
                        return first, seq, time.perf_counter(), _cpu()

            watching = asyncio.ensure_future(watch())
            await worker.run(stop)
            return await watching

        profile = cProfile.Profile() if args.profile else None
        if profile:
            profile.enable()
        import uvloop

        (seq0, t0, c0), seq, t1, c1 = uvloop.run(main())
        if profile:
            profile.disable()
        _report(f"IngestWorker{' (no apply)' if args.no_apply else ''}, batch {args.batch}", int(seq - seq0),
                t1 - t0, c1 - c0)
        if profile:
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
    finally:
        server.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="a trained data dir (copied, not changed)")
    p.add_argument("--work-dir", default="/tmp/funnel-worker-bench/data")
    p.add_argument("--tenant", default="demo")
    p.add_argument("--mode", choices=("stream", "apply"), default="stream")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=500, help="IngestWorker batch / events per Applier.apply")
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--pool", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rollup-interval", type=float, default=1.0)
    p.add_argument("--no-apply", action="store_true", help="stream mode: the NATS side alone")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--sort", default="tottime")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    shutil.copytree(args.data_dir, args.work_dir, ignore=shutil.ignore_patterns("nats", "ingest.lock", "bench-*"))
    users, items = _users_and_items(args.work_dir, args.tenant, args.users)
    (run_apply if args.mode == "apply" else run_stream)(args, users, items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
