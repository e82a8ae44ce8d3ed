"""The `funnel` command."""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_DATA_DIR = os.environ.get("FUNNEL_DATA_DIR", "./funnel-data")
BUNDLED_DATASET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "ops", "datasets", "movietweetings-100k")


def _data_dir_arg(p: argparse.ArgumentParser, default=DEFAULT_DATA_DIR) -> None:
    p.add_argument("--data-dir", default=default,
                   help=f"data directory (LMDB store, indices, models); default {DEFAULT_DATA_DIR} "
                        "or $FUNNEL_DATA_DIR")


def cmd_init(args) -> int:
    from server.app import init_data_dir

    key = init_data_dir(args.data_dir)
    if key:
        print(f"admin key (shown once; send as x-admin-key): {key}")
    else:
        print(f"{args.data_dir} is already initialised")
    return 0


def cmd_load(args) -> int:
    from ops.load import load_dataset

    report = load_dataset(args.data_dir, args.tenant, args.path, fmt=args.format, progress=not args.quiet)
    print(report.summary() if hasattr(report, "summary") else report)
    return 0


def cmd_train(args) -> int:
    from ops.train import train_tenant

    report = train_tenant(args.data_dir, args.tenant, seed=args.seed, progress=not args.quiet,
                          run_evaluation=not args.no_eval)
    print(report.summary() if hasattr(report, "summary") else report)
    return 0


def _create_tenant(data_dir: str, tenant_id: str, maturity: str, name: str = "",
                   settings: dict | None = None) -> str:
    """Creates the tenant (or adds a key to it) and returns the new key. ``settings``: config
    fields to set too (--affinity-half-life-days ...). Raises ConfigError for an invalid config."""
    from server.store import LmdbStore
    from server.tenancy import TenantConfig, TenantRegistry, hash_key, new_api_key

    key = new_api_key()
    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            current = registry.get(snap.txn, tenant_id)
        base = current or TenantConfig(tenant_id=tenant_id, name=name or tenant_id, maturity_policy=maturity)
        registry.put(TenantConfig.from_json(dict(base.to_json(), **(settings or {}),
                                                 api_key_hashes=list(base.api_key_hashes) + [hash_key(key)])))
    finally:
        store.close()
    return key


def _tenant_settings(args) -> dict:
    """The config fields the tenant flags set; 0 = the default, as in the Admin API."""
    from ops.features import AFFINITY_HALF_LIFE_DAYS, TRENDING_HALF_LIFE_DAYS

    settings = {}
    for name, default in (("affinity_half_life_days", AFFINITY_HALF_LIFE_DAYS),
                          ("trending_half_life_days", TRENDING_HALF_LIFE_DAYS)):
        value = getattr(args, name)
        if value is not None:
            settings[name] = value or default
    return settings


def _tenant_set(data_dir: str, tenant_id: str, settings: dict):
    """Writes ``settings`` into an existing tenant's config as a new version (no new key);
    None when the tenant does not exist. Raises ConfigError for an invalid config."""
    from server.store import LmdbStore
    from server.tenancy import TenantConfig, TenantRegistry

    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            current = registry.get(snap.txn, tenant_id)
        return None if current is None else registry.put(TenantConfig.from_json(dict(current.to_json(), **settings)))
    finally:
        store.close()


def _tenant_history(data_dir: str, tenant_id: str, limit: int) -> int:
    from server.store import LmdbStore
    from server.tenancy import TenantRegistry

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            current = registry.get(snap.txn, tenant_id)
            if current is None:
                print(f"error: tenant {tenant_id!r} does not exist", file=sys.stderr)
                return 1
            rows, truncated = registry.version_log(snap.txn, current, limit)
    finally:
        store.close()
    for version, updated_at, summary in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(updated_at))
        print(f"v{version:<5d} {stamp} UTC  {summary}{'  (current)' if version == current.version else ''}")
    if truncated:
        print(f"... older versions exist (--limit to see more than {limit})")
    return 0


def _tenant_restore(data_dir: str, tenant_id: str, version: int) -> int:
    from server.store import LmdbStore
    from server.tenancy import ConfigError, TenantRegistry, VersionNotFound

    store = LmdbStore.open(data_dir)
    try:
        stored = TenantRegistry(store).restore(tenant_id, version)
    except (VersionNotFound, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"tenant {tenant_id}: version {version} restored as version {stored.version} (API keys kept as they are; "
          "serving processes follow within a second)")
    return 0


def cmd_tenant(args) -> int:
    from server.tenancy import ConfigError

    settings = _tenant_settings(args)
    if settings and (args.history or args.restore):
        print("error: --affinity-half-life-days and --trending-half-life-days do not go with --history or --restore",
              file=sys.stderr)
        return 2
    if args.history:
        return _tenant_history(args.data_dir, args.tenant, args.limit)
    if args.restore:
        return _tenant_restore(args.data_dir, args.tenant, args.restore)
    try:
        stored = _tenant_set(args.data_dir, args.tenant, settings) if settings else None
        if stored is not None:
            print(f"tenant {args.tenant}: config version {stored.version}: affinity_half_life_days="
                  f"{stored.affinity_half_life_days:g}, trending_half_life_days={stored.trending_half_life_days:g} "
                  "(no new API key; events applied from now on decay with them, `funnel load` rebuilds the "
                  "stored features with them)")
            return 0
        key = _create_tenant(args.data_dir, args.tenant, args.maturity, args.name, settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"tenant {args.tenant}: new API key (shown once; send as x-api-key): {key}")
    return 0


def cmd_experiments_report(args) -> int:
    import json

    from ops.experiments.report import ReportError, experiment_report, format_report

    try:
        report = experiment_report(args.data_dir, args.tenant, args.experiment, args.nats)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2) if args.json else format_report(report, args.tenant))
    return 0


def cmd_killswitch(args) -> int:
    from server.app import set_kill_switch

    set_kill_switch(args.data_dir, args.state == "on")
    print(f"global personalization kill switch: {args.state} (serving processes follow within a second)")
    return 0


def _settings(args):
    from server.app import ServeSettings, load_settings

    flags = dict(data_dir=args.data_dir, host=args.host, port=args.port, workers=args.workers,
                 metrics_port=args.metrics_port, grace_s=args.grace, nats_url=args.nats, nats_port=args.nats_port,
                 embedded_nats=False if args.no_embedded_nats else None, ingest=False if args.no_ingest else None,
                 decision_log=False if args.no_decision_log else None,
                 events_max_age_days=args.events_max_age_days, events_max_bytes=args.events_max_bytes)
    if args.config:
        try:
            return load_settings(args.config, **flags)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"funnel: bad config: {exc}") from None
    defaults = ServeSettings(data_dir=DEFAULT_DATA_DIR)
    return ServeSettings(**{k: (v if v is not None else getattr(defaults, k)) for k, v in flags.items()})


def cmd_serve(args) -> int:
    from server.app import serve

    serve(_settings(args))
    return 0


def cmd_ingest(args) -> int:
    from server.events.worker import run_ingest

    if not args.rollup_interval > 0:
        raise SystemExit("--rollup-interval must be positive")
    if not (args.events_max_age_days >= 0 and args.events_max_bytes >= 0):
        raise SystemExit("--events-max-age-days and --events-max-bytes must be >= 0")
    run_ingest(args.data_dir, args.nats, args.metrics_port, args.metrics_host, batch=args.batch,
               rollup_s=args.rollup_interval, max_age_days=args.events_max_age_days,
               max_bytes=args.events_max_bytes)
    return 0


def _call(stub, args, md, funnel_pb2):
    if args.related:
        return stub.GetRelated(funnel_pb2.RelatedRequest(item_id=args.related, user_id=args.user or "",
                                                         limit=args.limit), metadata=md, timeout=5)
    return stub.GetFeed(funnel_pb2.FeedRequest(user_id=args.user, surface=args.surface, limit=args.limit,
                                               explain=args.explain), metadata=md, timeout=5)


def cmd_feed(args) -> int:
    import grpc

    from protos import funnel_pb2, funnel_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        stub = funnel_pb2_grpc.RecommenderStub(channel)
        md = (("x-tenant-id", args.tenant), ("x-api-key", args.key))
        t0 = time.perf_counter()
        try:
            resp = _call(stub, args, md, funnel_pb2)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        took = (time.perf_counter() - t0) * 1000
    print(f"request={resp.request_id} mode={funnel_pb2.Mode.Name(resp.mode)} level={resp.degradation_level} "
          f"model={resp.model_version or '-'} retrieved={resp.candidates_retrieved} scored={resp.candidates_scored} "
          f"server={resp.server_time_us}us round-trip={took:.1f}ms")
    for item in resp.items:
        print(f"{item.position:3d}. {item.item_id:>10s}  {item.title[:44]:44s} {item.category:12s} "
              f"{item.maturity_rating:5s} {item.score:8.4f}  {item.reason}  [{','.join(item.sources)}]"
              f"{' SPONSORED' if item.is_sponsored else ''}")
    return 0


EVENT_TYPES = ("impression", "view", "click", "like", "skip", "share", "purchase", "dwell")


def cmd_event(args) -> int:
    """Sends one event through Events.Ingest and prints the per-batch answer."""
    import grpc

    from protos import funnel_pb2, funnel_pb2_grpc

    event = funnel_pb2.Event(
        event_id=args.event_id, user_id=args.user, item_id=args.item, type=funnel_pb2.EventType.Value(args.type.upper()),
        timestamp_ms=args.timestamp_ms or int(time.time() * 1000), watch_time_ms=args.watch_time_ms,
        request_id=args.request_id, position=args.position, surface=args.surface, session_id=args.session)
    with grpc.insecure_channel(args.target) as channel:
        md = (("x-tenant-id", args.tenant), ("x-api-key", args.key))
        try:
            resp = funnel_pb2_grpc.EventsStub(channel).Ingest(funnel_pb2.IngestRequest(events=[event]), metadata=md,
                                                              timeout=10)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(f"accepted={resp.accepted} spooled={resp.spooled} duplicates={resp.duplicates} rejected={len(resp.rejected)}")
    for rejected in resp.rejected:
        print(f"  rejected: {rejected.reason}")
    return 0 if not resp.rejected else 1


def cmd_replay(args) -> int:
    from server.decisions.replay import run

    return run(args.data_dir, args.request_id, args.nats, args.tenant)


def cmd_batch_plan(args) -> int:
    from ops.batch_plan import write_batch_plan
    from server.batch_plans import PlanError, PlanSpec

    spec = PlanSpec(args.tenant, args.surface, args.segment, args.limit, args.max_users, args.valid_hours)
    try:
        report = write_batch_plan(args.data_dir, spec, args.out, progress=not args.quiet)
    except PlanError as exc:
        print(f"funnel batch-plan: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


def cmd_quickstart(args) -> int:
    from server.app import init_data_dir, serve

    dataset = args.data or BUNDLED_DATASET
    fresh = not os.path.exists(os.path.join(args.data_dir, "store", "data.mdb")) or args.reload
    admin_key = init_data_dir(args.data_dir)
    if fresh:
        from ops.load import load_dataset
        from ops.train import train_tenant

        print(f"[1/3] loading {dataset} into {args.data_dir} (tenant {args.tenant})")
        report = load_dataset(args.data_dir, args.tenant, dataset, progress=True)
        print(report.summary() if hasattr(report, "summary") else report)
        print("[2/3] training CF, content vectors, rankers and ANN indices")
        report = train_tenant(args.data_dir, args.tenant, progress=True)
        print(report.summary() if hasattr(report, "summary") else report)
    else:
        print(f"[1-2/3] {args.data_dir} already holds data; skipping load and train (--reload to redo)")
    key = _create_tenant(args.data_dir, args.tenant, args.maturity)
    settings = _settings(args)
    target = f"{settings.host}:{settings.port}"
    print("[3/3] serving")
    if admin_key:
        print(f"  admin key  : {admin_key}")
    print(f"  tenant     : {args.tenant}   API key: {key}")
    print(f"  try        : funnel feed --target {target} --tenant {args.tenant} --key {key} --user 1")
    print(f"  or grpcurl : grpcurl -plaintext -H 'x-tenant-id: {args.tenant}' -H 'x-api-key: {key}' "
          f"-d '{{\"user_id\": \"1\", \"limit\": 10}}' {target} funnel.v1.Recommender/GetFeed")
    if args.no_serve:
        return 0
    print(f"  listening on {target} with {settings.workers} worker(s); Ctrl-C drains and stops", flush=True)
    serve(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funnel", description="Funnel recommendation serving engine")
    sub = parser.add_subparsers(dest="command", required=True)

    def retention_args(p, settings: bool):
        """``settings``: unset flags stay None, for the [serve] config or ServeSettings to fill."""
        from server.events.nats_server import EVENTS_MAX_AGE_DAYS

        p.add_argument("--events-max-age-days", type=float, default=None if settings else EVENTS_MAX_AGE_DAYS,
                       metavar="DAYS",
                       help="retention of the FUNNEL_EVENTS stream, set by the ingest worker: older events are "
                            "removed (applied or not; the worker counts what it missed). Also the window "
                            f"`funnel experiments report` can join. 0 = keep forever (default {EVENTS_MAX_AGE_DAYS:g})")
        p.add_argument("--events-max-bytes", type=int, default=None if settings else 0, metavar="BYTES",
                       help="size cap of FUNNEL_EVENTS: a full stream refuses new events, which Ingest then "
                            "spools to the local outbox (never dropped). 0 = no cap (default 0)")

    def serve_args(p):
        p.add_argument("--config", default="", help="TOML config with a [serve] table (ops/funnel.example.toml); "
                                                    "flags given on the command line win")
        p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="gRPC port (default 50051)")
        p.add_argument("--workers", type=int, default=None,
                       help="serving processes sharing the port via SO_REUSEPORT (default 1)")
        p.add_argument("--metrics-port", type=int, default=None,
                       help="Prometheus /metrics base port; worker i uses base+i (default off)")
        p.add_argument("--grace", type=float, default=None, help="seconds to drain in-flight calls (default 10)")
        p.add_argument("--nats", default=None, metavar="URL",
                       help="NATS server with JetStream for Events.Ingest (default: an embedded nats-server)")
        p.add_argument("--nats-port", type=int, default=None,
                       help="port of the embedded nats-server (default 4222; 0 = any free port)")
        p.add_argument("--no-embedded-nats", action="store_true",
                       help="without --nats, run no NATS: Ingest keeps events in the local outbox")
        p.add_argument("--no-ingest", action="store_true",
                       help="do not start the ingest worker (run `funnel ingest` separately)")
        retention_args(p, settings=True)
        p.add_argument("--no-decision-log", action="store_true",
                       help="do not log served responses to the JetStream stream FUNNEL_DECISIONS (on by default "
                            "with NATS; decisions are dropped and counted, never spooled, while NATS is down)")

    p = sub.add_parser("init", help="create a data directory and print its admin key")
    _data_dir_arg(p)
    p.set_defaults(fn=cmd_init)

    p = sub.add_parser("load", help="import a catalog and interaction history")
    _data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--format", default="auto", choices=["auto", "canonical", "movielens", "movietweetings"],
                   help="input layout (see ops/FORMATS.md); auto detects from file names")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("path", help="directory with the dataset files")
    p.set_defaults(fn=cmd_load)

    p = sub.add_parser("train", help="train CF, content vectors, rankers, ANN indices; print offline metrics")
    _data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-eval", action="store_true",
                   help="skip the offline evaluation (about half the time on large tenants)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("tenant", help="create a tenant (or add a key to one) and print a new API key; "
                                      "with a half-life flag, set it on an existing tenant (no new key)",
                       description="Without flags: create the tenant (or add an API key to it) and print the new "
                                   "key. --affinity-half-life-days / --trending-half-life-days on an existing "
                                   "tenant write them as a new config version and print no key; on a new tenant "
                                   "they are part of its first config. A change applies to events applied after "
                                   "it (stored decayed sums are not recomputed); `funnel load` rebuilds the stored "
                                   "features with the tenant's half-lives.")
    _data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--maturity", default="PG13", choices=["G", "PG", "PG13", "R", "NC17"],
                   help="highest rating served to this tenant's users (default %(default)s); used when the "
                        "tenant is created")
    p.add_argument("--affinity-half-life-days", type=float, default=None, metavar="DAYS",
                   help="half-life of the users' category affinity, within (0, 3650] days; 0 = the default (30)")
    p.add_argument("--trending-half-life-days", type=float, default=None, metavar="DAYS",
                   help="half-life of the items' trending weight and per-event-type counts, within (0, 3650] "
                        "days; 0 = the default (7)")
    history = p.add_mutually_exclusive_group()
    history.add_argument("--history", action="store_true", help="list the config versions, newest first (no new key)")
    history.add_argument("--restore", type=int, default=0, metavar="N",
                         help="write config version N as a new version; API keys stay the current ones")
    p.add_argument("--limit", type=int, default=100, help="with --history: most versions listed (default %(default)s)")
    p.set_defaults(fn=cmd_tenant)

    p = sub.add_parser("experiments", help="experiment analysis")
    experiments = p.add_subparsers(dest="experiments_command", required=True)
    p = experiments.add_parser("report", help="per-variant impressions, clicks, CTR (95%% Wilson interval), "
                                              "watch time and p-value against the control, from the event stream")
    _data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--nats", default="nats://127.0.0.1:4222", metavar="URL",
                   help="NATS server holding the FUNNEL_EVENTS stream (default %(default)s, the embedded one)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(fn=cmd_experiments_report)

    p = sub.add_parser("killswitch", help="turn global personalization off (fallback mode) or back on")
    _data_dir_arg(p)
    p.add_argument("state", choices=["on", "off"])
    p.set_defaults(fn=cmd_killswitch)

    p = sub.add_parser("serve", help="serve gRPC")
    _data_dir_arg(p, default=None)
    serve_args(p)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("ingest", help="run the ingest worker: apply JetStream events to the user features")
    _data_dir_arg(p)
    p.add_argument("--nats", default="nats://127.0.0.1:4222", metavar="URL",
                   help="NATS server holding the FUNNEL_EVENTS stream (default %(default)s, the embedded one)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port (default off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics endpoint")
    p.add_argument("--batch", type=int, default=4000,
                   help="most events applied per LMDB transaction (default %(default)s; one synced commit each)")
    retention_args(p, settings=False)
    p.add_argument("--rollup-interval", type=float, default=1.0, metavar="SECONDS",
                   help="how often item counters that changed are rolled up into item popularity, quality, "
                        "skip rate and the trending/popular lists (default %(default)s)")
    p.set_defaults(fn=cmd_ingest)

    p = sub.add_parser("feed", help="call GetFeed (or GetRelated) and print the answer")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--tenant", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", default="")
    p.add_argument("--surface", default="home")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--related", default="", help="item id: call GetRelated instead")
    p.add_argument("--explain", action="store_true")
    p.set_defaults(fn=cmd_feed)

    p = sub.add_parser("event", help="send one event through Events.Ingest and print the answer",
                       description="Sends one event (Events.Ingest). The ingest worker applies it within about a "
                                   "second: a click or view drops the item from the user's next feed (seen "
                                   "filter) and moves their category affinity. Exit status 1 if it was rejected.")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--tenant", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--item", required=True, help="a catalog item id (`funnel feed` prints them)")
    p.add_argument("--type", default="click", choices=EVENT_TYPES)
    p.add_argument("--timestamp-ms", type=int, default=0, help="when it happened, unix ms (default now)")
    p.add_argument("--watch-time-ms", type=int, default=0)
    p.add_argument("--session", default="", help="session id: engaged events build the user's current session")
    p.add_argument("--request-id", default="", help="FeedResponse.request_id the item came from")
    p.add_argument("--position", type=int, default=0, help="its position in that response")
    p.add_argument("--surface", default="")
    p.add_argument("--event-id", default="", help="dedupe key (default: derived from the fields)")
    p.set_defaults(fn=cmd_event)

    p = sub.add_parser("replay", help="re-run a logged GetFeed/GetRelated decision and diff it against what was served",
                       description="Finds REQUEST_ID in the JetStream decision log (FUNNEL_DECISIONS; a linear scan, "
                                   "of one tenant's decisions with --tenant), re-runs the request in this process "
                                   "against the data directory with the logged config version (from the tenant's "
                                   "history) and model version where still available, and prints the difference. "
                                   "Exit status: 0 identical, 1 different, 2 not found, 3 cannot replay.")
    _data_dir_arg(p)
    p.add_argument("request_id", metavar="REQUEST_ID", help="FeedResponse.request_id of the served response")
    p.add_argument("--nats", default="nats://127.0.0.1:4222", metavar="URL",
                   help="NATS server holding FUNNEL_DECISIONS (default %(default)s, the embedded one)")
    p.add_argument("--tenant", default="", help="search only this tenant's decisions (faster)")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("batch-plan", help="precompute a segment's feeds (the GetFeed code path) into a JSONL file",
                       description="Runs GetFeed's code path in this process for every user of a segment and writes "
                                   "one JSON line per user: {user_id, surface, items[{item_id, score, reason}], "
                                   "model_version, config_version, level, generated_at, valid_until}.")
    _data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--surface", default="*",
                   help="a surface configured for the tenant; '*' (default) = the default rules")
    p.add_argument("--segment", default="all", metavar="all|top-category:<name>|<segment>",
                   help="every stored user (default); the users whose largest category affinity is <name>; or the "
                        "users in one of the tenant's named segments now, as GetFeed computes it (segment:<segment> "
                        "for a segment named 'all')")
    p.add_argument("--limit", type=int, default=0, help="items per user (default: the tenant's default_limit)")
    p.add_argument("--max-users", type=int, default=0, help="stop after this many users (default: all)")
    p.add_argument("--valid-hours", type=int, default=24, help="valid_until = generated_at + this (default 24)")
    p.add_argument("--out", required=True, metavar="FILE", help="JSONL output (written to FILE.tmp, then renamed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_batch_plan)

    p = sub.add_parser("quickstart", help="load the bundled MovieTweetings sample, train, create a demo tenant, serve")
    _data_dir_arg(p)
    serve_args(p)
    p.add_argument("--data", default="", help="dataset directory instead of the bundled MovieTweetings 100K")
    p.add_argument("--tenant", default="demo")
    p.add_argument("--maturity", default="PG13", choices=["G", "PG", "PG13", "R", "NC17"])
    p.add_argument("--reload", action="store_true", help="load and train again even if the data dir has data")
    p.add_argument("--no-serve", action="store_true", help="prepare everything, print the calls, do not serve")
    p.set_defaults(fn=cmd_quickstart)

    from server.cli_models import add_commands as add_model_commands  # funnel model ..., funnel index publish

    add_model_commands(sub, _data_dir_arg)
    from server.cli_segments import add_commands as add_segment_commands  # funnel segments build

    add_segment_commands(sub, _data_dir_arg)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
