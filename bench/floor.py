"""The component floor of one GetFeed, measured on the serving data itself.

    python -m bench.floor --data-dir D --tenant T [--target 127.0.0.1:50051 --key K] [--repeat 300]

Each component is timed alone, single-threaded, on the tenant's real data
(store snapshot, CF index, deployed ONNX models, real users):

  rpc_health          gRPC health Check round trip against the running server, grpc.aio
                      client, one call at a time (the transport + framework floor)
  ann_cf_k500         USearch search of the tenant's CF index, k=500, real user vectors
  hard_filter         kernels.filters.hard_filter over ~1000 real candidates (the funnel's
                      own retrieval for a real user, padded with random catalog items), with
                      the user's real seen list as the deny list
  assemble_features   kernels.features.assemble_features over the candidates kept
  onnx_prerank        deployed pre-ranker (store state "model:prerank") on 1000 x 12
  onnx_rank           deployed ranker ("model:rank") on 300 x 12
  diversify           kernels.diversity.diversify, 300 -> one page of ``limit``

``floor`` = the sum of those p50s (and, separately, of the p99s): what one
request costs if every stage ran alone with nothing else around it.

Also reported, not part of the floor:

  funnel_inprocess    server.app.ServingApp + app.funnel.run on RequestStates built exactly
                      as the servicer builds them, for the load generator's user mix; with
                      the per-stage split from RequestState.stage_seconds
  handler_inprocess   the whole RecommenderServicer.GetFeed coroutine in-process (auth,
                      snapshot, user lookup, funnel, response with item metadata), no gRPC
  feed_rpc_sequential GetFeed over gRPC, one call at a time (unloaded end-to-end)
  sources / rerank_chain / filter_plan   the individual candidate sources, the server's
                      whole re-ranker chain on 300, and FilterPlan.apply (kernel + wrapper)

Times are in microseconds. Needs a data directory with the tenant loaded;
without training (no index, no models) those components are reported as null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import numpy as np

# onnxruntime before usearch (see indexes.ann)
import onnxruntime  # noqa: F401


def _stats(samples_ns) -> dict | None:
    if samples_ns is None or len(samples_ns) == 0:
        return None
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    return {"p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1),
            "mean": round(float(a.mean()), 1), "n": int(a.size)}


def _timed(fn, *args):
    t = time.perf_counter_ns()
    out = fn(*args)
    return time.perf_counter_ns() - t, out


class _Timed:
    """Wraps a funnel stage (source, scorer, re-ranker) and records the time of each call."""

    def __init__(self, inner, method: str, sink: list):
        self._inner, self._method, self._sink = inner, method, sink

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _call(self, *args):
        t = time.perf_counter_ns()
        try:
            return getattr(self._inner, self._method)(*args)
        finally:
            self._sink.append(time.perf_counter_ns() - t)

    def retrieve(self, state):
        return self._call(state)

    def rerank(self, state, ranking):
        return self._call(state, ranking)

    def score(self, state, features):
        return self._call(state, features)


class _Context:
    """Just enough of a grpc.aio ServicerContext for RecommenderServicer.GetFeed."""

    def __init__(self, metadata):
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata

    def time_remaining(self):
        return None

    async def abort(self, code, details=""):
        raise RuntimeError(f"aborted: {code}: {details}")


# --------------------------------------------------------------------------- rpc
def measure_rpc(target: str, tenant: str | None, key: str | None, users: list[str], repeat: int,
                limit: int) -> dict:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from protos import funnel_pb2, funnel_pb2_grpc

    async def run() -> dict:
        channel = grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        health = health_pb2_grpc.HealthStub(channel)
        samples = []
        for i in range(repeat + 50):
            t = time.perf_counter_ns()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            if i >= 50:
                samples.append(time.perf_counter_ns() - t)
        out = {"rpc_health": _stats(samples)}
        if key and users:
            stub = funnel_pb2_grpc.RecommenderStub(channel)
            md = (("x-tenant-id", tenant), ("x-api-key", key))
            samples, server = [], []
            for i in range(repeat + 20):
                req = funnel_pb2.FeedRequest(user_id=users[i % len(users)], surface="home", limit=limit)
                t = time.perf_counter_ns()
                resp = await stub.GetFeed(req, metadata=md, timeout=5)
                if i >= 20:
                    samples.append(time.perf_counter_ns() - t)
                    server.append(resp.server_time_us * 1000)
            out["feed_rpc_sequential"] = _stats(samples)
            out["feed_rpc_sequential_server_time"] = _stats(server)
        await channel.close()
        return out

    return asyncio.run(run())


# --------------------------------------------------------------------------- in-process
def measure_floor(data_dir: str, tenant: str, target: str | None = None, key: str | None = None,
                  repeat: int = 300, n_candidates: int = 1000, limit: int = 20, zipf: float = 0.9,
                  cold_share: float = 0.1, seed: int = 0) -> dict:
    from bench.loadgen import draw_users, load_users
    from kernels.diversity import diversify
    from kernels.features import assemble_features
    from kernels.filters import hard_filter
    from kernels.layout import CF_DIM, ITEM_WIDTH, MATURITY_CODES, N_FEATURES, N_SOURCE_SIGNALS, USER_CF, USER_HAS_CF
    from protos import funnel_pb2
    from server.app import ServeSettings, ServingApp
    from server.pipeline.filters import FilterPlan
    from server.pipeline.rerankers import Ranking
    from server.pipeline.scorers import RankingUnavailable
    from server.servicers.recommender import RecommenderServicer

    rng = np.random.default_rng(seed)
    app = ServingApp(ServeSettings(data_dir=data_dir))
    app.warm_up()
    servicer = RecommenderServicer(app)
    known = load_users(data_dir, tenant)
    notes: list[str] = []
    ctx = _Context((("x-tenant-id", tenant), ("x-api-key", key or "")))

    def new_state(user_id: str):
        snap = app.store.snapshot()
        rt = app.registry.get(snap, tenant)
        if rt is None:
            snap.close()
            raise SystemExit(f"tenant {tenant!r} is not in {data_dir}")
        return servicer._state(user_id, "home", limit, rt, snap, ctx)

    with app.store.snapshot() as snap:
        runtime = app.registry.get(snap, tenant)
        if runtime is None:
            raise SystemExit(f"tenant {tenant!r} is not in {data_dir}")
        n_items = int(snap.state(tenant, "n_items", 0))
    cf_index = runtime.index("cf")

    # users with a CF embedding (for ANN and retrieval), most active first
    cf_users: list[str] = []
    for user_id in known[: 5000]:
        state = new_state(user_id)
        if state.known_user and state.user_row[USER_HAS_CF] == 1.0:
            cf_users.append(user_id)
        state.snap.close()
        if len(cf_users) >= 200:
            break
    probe_users = cf_users or known[:200] or ["bench-cold-0"]
    if not cf_users:
        notes.append("no user has a CF embedding (tenant not trained): ANN and retrieval use no real vectors")

    comp: dict[str, list] = {k: [] for k in ("ann_cf_k500", "hard_filter", "assemble_features", "onnx_prerank",
                                              "onnx_rank", "diversify", "filter_plan", "rerank_chain")}
    sources: dict[str, list] = {s.name: [] for s in app.funnel.sources}
    kept_counts, cand_counts = [], []
    per_stage: dict[str, list] = {}
    source_errors: dict[str, str] = {}

    # warm the models / index pages outside the timed loops
    for i in range(min(20, len(probe_users))):
        state = new_state(probe_users[i])
        try:
            app.funnel.run(state)
        finally:
            state.snap.close()

    for r in range(repeat):
        user_id = probe_users[r % len(probe_users)]
        state = new_state(user_id)
        try:
            # (b) ANN
            if cf_index is not None and state.user_row[USER_HAS_CF] == 1.0:
                # a copy: the zero-copy LMDB view of a user row is not 4-byte aligned, and USearch
                # rejects unaligned query buffers ("Incompatible scalars in the query matrix: =f")
                q = np.array(state.user_row[USER_CF:USER_CF + CF_DIM], dtype=np.float32)
                comp["ann_cf_k500"].append(_timed(cf_index.search, q, 500)[0])
            # per-source timing (what _retrieve does, one by one)
            plan = FilterPlan()
            for stage in app.funnel.filters:
                stage.contribute(state, plan)
            state.chunk_addrs, state.n_items = state.snap.chunks(tenant)
            for source in app.funnel.sources:
                try:
                    ns, _ = _timed(source.retrieve, state)
                except Exception as exc:  # the funnel fails a source open; record it, time nothing
                    source_errors.setdefault(source.name, f"{type(exc).__name__}: {exc}")
                    continue
                sources[source.name].append(ns)
            # (c) real candidates, padded to n_candidates
            try:
                cands, signals, _bits = app.funnel._retrieve(state)
            except RankingUnavailable:
                cands = np.empty(0, dtype=np.int64)
                signals = np.zeros((0, N_SOURCE_SIGNALS), dtype=np.float32)
            cands = cands[:n_candidates]
            signals = signals[:n_candidates]
            if cands.shape[0] < n_candidates and n_items:
                extra = rng.integers(0, n_items, n_candidates - cands.shape[0])
                cands = np.concatenate([cands, extra])
                signals = np.concatenate([signals, np.zeros((extra.shape[0], N_SOURCE_SIGNALS), np.float32)])
            cands = np.ascontiguousarray(cands, dtype=np.int64)
            cand_counts.append(cands.shape[0])
            deny_idx, deny_reason = plan._deny_arrays()
            max_mat = MATURITY_CODES["G"] if plan.max_maturity is None else plan.max_maturity
            reasons = np.empty(cands.shape[0], dtype=np.uint8)
            comp["hard_filter"].append(_timed(hard_filter, cands, state.chunk_addrs, state.n_items, ITEM_WIDTH,
                                              max_mat, plan.blocked_categories, deny_idx, deny_reason,
                                              reasons)[0])
            comp["filter_plan"].append(_timed(plan.apply, cands, state)[0])
            mask = reasons == 0
            kept = np.ascontiguousarray(cands[mask])
            sig = np.ascontiguousarray(signals[mask])
            kept_counts.append(kept.shape[0])
            feats = np.empty((kept.shape[0], N_FEATURES), dtype=np.float32)
            cats = np.empty(kept.shape[0], dtype=np.int32)
            aff = state.affinity()
            now_days = float(state.tenant.now_days())
            hl = state.tenant.recency_half_life_days
            comp["assemble_features"].append(_timed(
                assemble_features, kept, state.chunk_addrs, ITEM_WIDTH, state.user_row, aff, sig, now_days, hl,
                feats, cats)[0])
            if feats.shape[0] == 0:
                continue
            # (d) ONNX on exactly 1000 x 12 and 300 x 12 (real rows, tiled if fewer)
            reps = -(-n_candidates // feats.shape[0])
            f1000 = np.ascontiguousarray(np.tile(feats, (reps, 1))[:n_candidates])
            c1000 = np.tile(cats, reps)[:n_candidates]
            i1000 = np.tile(kept, reps)[:n_candidates]
            if runtime.prerank is not None:
                ns, scores = _timed(runtime.prerank.score, f1000)
                comp["onnx_prerank"].append(ns)
            else:
                scores = f1000[:, 0].copy()
            top = np.argsort(-scores, kind="stable")[:300]
            f300 = np.ascontiguousarray(f1000[top])
            if runtime.rank is not None:
                ns, s300 = _timed(runtime.rank.score, f300)
                comp["onnx_rank"].append(ns)
            else:
                s300 = scores[top]
            # (e) re-rank: the kernel (one page) and the server's whole chain
            order = np.argsort(-s300, kind="stable").astype(np.int64)
            rules = state.tenant.config.rules_for(state.surface)
            c300 = np.ascontiguousarray(c1000[top])
            comp["diversify"].append(_timed(diversify, order, c300, limit, rules.max_per_category,
                                            rules.max_streak)[0])
            n = top.shape[0]
            ranking = Ranking(i1000[top].astype(np.int64), s300.astype(np.float32), f300, c300,
                              np.ones(n, dtype=np.uint8), np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint8))
            t = time.perf_counter_ns()
            for stage in app.funnel.rerankers:
                t_stage = time.perf_counter_ns()
                ranking = stage.rerank(state, ranking)
                per_stage.setdefault(f"rerank_{stage.name}", []).append(time.perf_counter_ns() - t_stage)
            comp["rerank_chain"].append(time.perf_counter_ns() - t)
            # the response's per-item metadata reads (JSON per item, as the servicer does)
            page = ranking.items[:limit].tolist()
            t = time.perf_counter_ns()
            for index in page:
                state.snap.item_meta(tenant, int(index))
            per_stage.setdefault(f"item_meta_json_x{limit}", []).append(time.perf_counter_ns() - t)
        finally:
            state.snap.close()

    for name, err in source_errors.items():
        notes.append(f"source {name} raised (the funnel skips it, fail-open): {err}")
    if cf_index is None:
        notes.append("no CF index deployed: ann_cf_k500 not measured")
    if runtime.prerank is None or runtime.rank is None:
        notes.append("no ranking models deployed: onnx_* not measured (" + "; ".join(
            f"{k}: {v}" for k, v in runtime.model_errors.items()) + ")")

    # in-process funnel and handler for the load generator's user mix
    mix = draw_users(known, repeat, zipf, cold_share, np.random.default_rng(seed + 1))
    # one untimed pass over a different draw of the same mix: first touches of user and item pages,
    # and the sources' result caches reach a hit rate like a running server's (not 100%: other users)
    for user_id in draw_users(known, max(repeat, 1000), zipf, cold_share, np.random.default_rng(seed + 2)):
        state = new_state(user_id)
        try:
            app.funnel.run(state)
        finally:
            state.snap.close()
    totals, levels, stage_ns, failed = [], {}, {}, {}
    funnel = app.funnel
    saved = (funnel.sources, funnel.rerankers, funnel.prerank, funnel.ranker)
    inner: dict[str, list] = {}
    funnel.sources = [_Timed(x, "retrieve", inner.setdefault(f"source {x.name}", [])) for x in saved[0]]
    funnel.rerankers = [_Timed(x, "rerank", inner.setdefault(f"rerank {x.name}", [])) for x in saved[1]]
    funnel.prerank = _Timed(saved[2], "score", inner.setdefault("prerank (onnx + wrapper)", []))
    funnel.ranker = _Timed(saved[3], "score", inner.setdefault("rank (onnx + wrapper)", []))
    for user_id in mix:
        state = new_state(user_id)
        try:
            t = time.perf_counter_ns()
            result = app.funnel.run(state)
            total = time.perf_counter_ns() - t
        finally:
            state.snap.close()
        totals.append(total)
        levels[str(result.level)] = levels.get(str(result.level), 0) + 1
        for name in state.sources_failed:
            failed[name] = failed.get(name, 0) + 1
        accounted = 0
        for name, sec in state.stage_seconds.items():
            stage_ns.setdefault(name, []).append(sec * 1e9)
            accounted += sec * 1e9
        if state.stage_seconds:
            stage_ns.setdefault("other (dedupe, top-k, cache, top-up)", []).append(total - accounted)

    funnel.sources, funnel.rerankers, funnel.prerank, funnel.ranker = saved

    handler = []
    if key:
        # a fresh draw: the timed funnel pass just put `mix`'s users in the sources' result caches
        handler_mix = draw_users(known, repeat, zipf, cold_share, np.random.default_rng(seed + 3))

        async def run_handler():
            for user_id in handler_mix:
                req = funnel_pb2.FeedRequest(user_id=user_id, surface="home", limit=limit)
                t = time.perf_counter_ns()
                await servicer.GetFeed(req, ctx)
                handler.append(time.perf_counter_ns() - t)
        asyncio.run(run_handler())

    components = {
        "ann_cf_k500": _stats(comp["ann_cf_k500"]),
        "hard_filter": _stats(comp["hard_filter"]),
        "assemble_features": _stats(comp["assemble_features"]),
        "onnx_prerank": _stats(comp["onnx_prerank"]),
        "onnx_rank": _stats(comp["onnx_rank"]),
        "diversify": _stats(comp["diversify"]),
    }
    out = {
        "data_dir": data_dir,
        "tenant": tenant,
        "n_items": n_items,
        "candidates": int(np.median(cand_counts)) if cand_counts else 0,
        "candidates_kept_median": int(np.median(kept_counts)) if kept_counts else 0,
        "components_us": components,
        "extra_us": {
            "filter_plan": _stats(comp["filter_plan"]),
            "rerank_chain": _stats(comp["rerank_chain"]),
            **{k: _stats(v) for k, v in per_stage.items()},
            **{f"source_{k}": _stats(v) for k, v in sources.items()},
        },
        "funnel_inprocess_us": {
            "total": _stats(totals),
            "levels": levels,
            "sources_failed": failed,
            "stages": {k: _stats(v) for k, v in stage_ns.items()},
            # per call inside funnel.run (only requests that reached the stage; a source that
            # returned nothing quickly, e.g. CF for an unknown user, still counts)
            "inner": {k: _stats(v) for k, v in inner.items()},
        },
        "handler_inprocess_us": _stats(handler),
        "notes": notes,
    }
    if target:
        rpc = measure_rpc(target, tenant, key, mix, repeat, limit)
        out["components_us"] = {"rpc_health": rpc["rpc_health"], **components}
        out["feed_rpc_sequential_us"] = rpc.get("feed_rpc_sequential")
        out["feed_rpc_sequential_server_time_us"] = rpc.get("feed_rpc_sequential_server_time")
    present = {k: v for k, v in out["components_us"].items() if v is not None}
    out["floor_us"] = {"p50": round(sum(v["p50"] for v in present.values()), 1),
                       "p99": round(sum(v["p99"] for v in present.values()), 1),
                       "components": sorted(present), "missing": sorted(set(out["components_us"]) - set(present))}
    app.store.close()
    return out


def format_floor(f: dict) -> str:
    lines = ["| component | p50 us | p99 us |", "|---|---:|---:|"]
    for name, s in f["components_us"].items():
        lines.append(f"| {name} | {s['p50']:.0f} | {s['p99']:.0f} |" if s else f"| {name} | n/a | n/a |")
    lines.append(f"| **floor (sum)** | **{f['floor_us']['p50']:.0f}** | **{f['floor_us']['p99']:.0f}** |")
    lines.append("")
    lines.append("| not in the floor | p50 us | p99 us |")
    lines.append("|---|---:|---:|")
    rows = list(f["extra_us"].items())
    rows += [(f"funnel stage: {k}", v) for k, v in f["funnel_inprocess_us"]["stages"].items()]
    rows += [(f"  in funnel.run: {k}", v) for k, v in f["funnel_inprocess_us"].get("inner", {}).items()]
    rows += [("funnel.run in-process (load mix)", f["funnel_inprocess_us"]["total"]),
             ("GetFeed handler in-process", f.get("handler_inprocess_us")),
             ("GetFeed over gRPC, sequential", f.get("feed_rpc_sequential_us")),
             ("  of which server_time_us", f.get("feed_rpc_sequential_server_time_us"))]
    for name, s in rows:
        lines.append(f"| {name} | {s['p50']:.0f} | {s['p99']:.0f} |" if s else f"| {name} | n/a | n/a |")
    lines.append("")
    lines.append(f"candidates per request (padded): {f['candidates']}, kept by the filter (median): "
                 f"{f['candidates_kept_median']}; in-process levels: {f['funnel_inprocess_us']['levels']}; "
                 f"sources failed in-process: {f['funnel_inprocess_us'].get('sources_failed') or 'none'}")
    for note in f.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--target", help="running server for the RPC floor (host:port)")
    p.add_argument("--key", help="tenant API key (in-process handler and sequential GetFeed)")
    p.add_argument("--repeat", type=int, default=300)
    p.add_argument("--candidates", type=int, default=1000)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    result = measure_floor(args.data_dir, args.tenant, args.target, args.key, args.repeat, args.candidates,
                           args.limit)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2) if args.json else format_floor(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
