"""`funnel model ...` and `funnel index publish`: the registry, deployments and index
swaps, working on a data directory directly (like `funnel tenant`). Serving
processes pick every change up within a second, without a restart."""

from __future__ import annotations

import json
import os
import sys
import time


def _open(data_dir: str):
    from server.store import LmdbStore

    if not os.path.exists(os.path.join(data_dir, "store", "data.mdb")):
        raise SystemExit(f"funnel: {data_dir} is not a data directory (run `funnel init` first)")
    return LmdbStore.open(data_dir)


def _deployer(store, data_dir: str):
    from server.models.deploy import Deployer
    from server.models.registry import ModelRegistry

    return Deployer(store, ModelRegistry(store, data_dir))


def _print_deployment(dep) -> None:
    canary = f"  canary {dep.canary[:12]} at {dep.canary_percent:g}%" if dep.canary else ""
    print(f"{dep.kind:7s} surface {dep.surface!r}: stable {(dep.stable or '(the * stable)')[:12]}{canary}")


def _deploy_action(args, action) -> int:
    from server.models.deploy import DeployError

    store = _open(args.data_dir)
    try:
        dep = action(_deployer(store, args.data_dir))
    except DeployError as exc:
        print(f"funnel: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    _print_deployment(dep)
    return 0


def cmd_model_upload(args) -> int:
    from server.models.registry import ModelRegistry, ModelRejected
    from server.tenancy import TenantRegistry

    with open(args.file, "rb") as f:
        data = f.read()
    metrics = json.loads(args.metrics) if args.metrics else {}
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    store = _open(args.data_dir)
    try:
        with store.snapshot() as snap:
            if TenantRegistry(store).get(snap.txn, args.tenant) is None:
                print(f"funnel: tenant {args.tenant!r} does not exist", file=sys.stderr)
                return 2
        from kernels.layout import FEATURES

        try:
            record, created = ModelRegistry(store, args.data_dir).register(
                args.tenant, args.kind, data, tuple(features or FEATURES), args.uploaded_by or os.environ.get(
                    "USER", "cli"), metrics)
        except ModelRejected as exc:
            print(f"funnel: model refused: {exc}", file=sys.stderr)
            return 2
    finally:
        store.close()
    print(f"{'registered' if created else 'already registered'}: {record.kind} {record.version} "
          f"({record.size} bytes, {len(record.features)} features)")
    return 0


def cmd_model_list(args) -> int:
    from server.models.registry import ModelRegistry

    store = _open(args.data_dir)
    try:
        with store.snapshot() as snap:
            records = ModelRegistry(store, args.data_dir).list(snap.txn, args.tenant, args.kind or "")
    finally:
        store.close()
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.uploaded_at))
        print(f"{r.version[:12]}  {r.kind:7s}  {when}Z  {r.uploaded_by:16s}  {r.size:9d} B  "
              f"{json.dumps(r.metrics, sort_keys=True)}")
    if not records:
        print(f"no models registered for tenant {args.tenant!r}")
    return 0


def cmd_model_deploy(args) -> int:
    from server.models.deploy import Guardrails

    guardrails = Guardrails(args.max_error_rate, args.max_nan_rate, args.max_p99_ms, args.min_requests)
    return _deploy_action(args, lambda d: d.deploy(args.tenant, args.surface, args.kind, args.version, args.canary,
                                                   guardrails, args.actor, args.reason))


def cmd_model_ramp(args) -> int:
    return _deploy_action(args, lambda d: d.ramp(args.tenant, args.surface, args.kind, args.percent, args.actor,
                                                 args.reason))


def cmd_model_rollback(args) -> int:
    return _deploy_action(args, lambda d: d.rollback(args.tenant, args.surface, args.kind, args.actor,
                                                     args.reason))


def cmd_model_status(args) -> int:
    from server.models.deploy import read_all

    store = _open(args.data_dir)
    try:
        with store.snapshot() as snap:
            deployments = read_all(store, snap.txn, args.tenant)
    finally:
        store.close()
    for dep in deployments:
        _print_deployment(dep)
        for h in (dep.history or [])[-args.history:]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(h["at"]))
            extra = f" measured={json.dumps(h['measured'], sort_keys=True)}" if "measured" in h else ""
            print(f"    {when}Z {h['action']:13s} by {h.get('actor', '')}: {h.get('reason', '')}{extra}")
    if not deployments:
        print(f"tenant {args.tenant!r} has no models deployed")
    return 0


def publish_index_file(data_dir: str, tenant: str, kind: str, source: str) -> dict:
    """``funnel index publish``: :func:`indexes.ann.publish_index_file` on the data dir's store."""
    from indexes.ann import publish_index_file as publish

    store = _open(data_dir)
    try:
        return publish(store, data_dir, tenant, kind, source)
    finally:
        store.close()


def cmd_index_publish(args) -> int:
    try:
        pointer = publish_index_file(args.data_dir, args.tenant, args.kind, args.file)
    except (ValueError, OSError) as exc:
        print(f"funnel: index refused: {exc}", file=sys.stderr)
        return 2
    print(f"index {args.kind} of tenant {args.tenant}: {pointer['count']} vectors ({pointer['metric']}) "
          f"-> {pointer['path']} (serving switches within a second)")
    return 0


def add_commands(sub, data_dir_arg) -> None:
    """``funnel model ...`` and ``funnel index publish`` (``data_dir_arg`` adds --data-dir)."""
    model = sub.add_parser("model", help="model registry and deployments: upload, list, deploy, ramp, rollback, "
                                         "status")
    msub = model.add_subparsers(dest="model_command", required=True)

    def common(p, kind_required=True):
        data_dir_arg(p)
        p.add_argument("--tenant", required=True)
        if kind_required:
            p.add_argument("--kind", required=True, choices=["prerank", "rank"])

    def deploy_common(p):
        common(p)
        p.add_argument("--surface", default="*", help='surface the deployment is for (default "*": every surface '
                                                      "without its own deployment)")
        p.add_argument("--actor", default=os.environ.get("USER", "cli"), help="who, for the deploy history")
        p.add_argument("--reason", default="", help="why, for the deploy history")

    p = msub.add_parser("upload", help="validate and register an ONNX model (the version is its sha256)")
    common(p)
    p.add_argument("--features", default="", help="comma-separated input columns in the model's order "
                                                  "(default: every server feature, kernels.layout.FEATURES)")
    p.add_argument("--uploaded-by", default="")
    p.add_argument("--metrics", default="", help="JSON object of offline metrics to keep with the model")
    p.add_argument("file", help="ONNX file: one float32 input [N, len(features)], output [N] or [N, 1]; "
                                "at most 64 MiB")
    p.set_defaults(fn=cmd_model_upload)

    p = msub.add_parser("list", help="registered models, newest first")
    common(p, kind_required=False)
    p.add_argument("--kind", default="", choices=["", "prerank", "rank"])
    p.set_defaults(fn=cmd_model_list)

    p = msub.add_parser("deploy", help="deploy a registered version as canary (--canary < 100) or stable")
    deploy_common(p)
    p.add_argument("--version", required=True, help="registered version (sha256 or a unique 12+ digit prefix)")
    p.add_argument("--canary", type=float, default=100.0, metavar="PERCENT",
                   help="share of users on the new version; 100 (default) promotes it at once")
    p.add_argument("--max-error-rate", type=float, default=None, help="guardrail: share of canary requests "
                                                                      "whose model failed")
    p.add_argument("--max-nan-rate", type=float, default=None, help="guardrail: share of canary scores NaN/inf")
    p.add_argument("--max-p99-ms", type=float, default=None, help="guardrail: p99 server time of canary requests")
    p.add_argument("--min-requests", type=int, default=100, help="judge guardrails only after this many canary "
                                                                 "requests per process (default %(default)s)")
    p.set_defaults(fn=cmd_model_deploy)

    p = msub.add_parser("ramp", help="change the canary's share; 100 promotes it")
    deploy_common(p)
    p.add_argument("percent", type=float)
    p.set_defaults(fn=cmd_model_ramp)

    p = msub.add_parser("rollback", help="drop the canary, or return to the previous stable when there is none")
    deploy_common(p)
    p.set_defaults(fn=cmd_model_rollback)

    p = msub.add_parser("status", help="deployments and their history")
    common(p, kind_required=False)
    p.add_argument("--history", type=int, default=10, help="history entries shown per deployment")
    p.set_defaults(fn=cmd_model_status)

    index = sub.add_parser("index", help="ANN index maintenance")
    isub = index.add_subparsers(dest="index_command", required=True)
    p = isub.add_parser("publish", help="swap in a rebuilt USearch index (checked: dimensions, metric, keys)")
    data_dir_arg(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--kind", required=True, choices=["cf", "content"],
                   help="cf: inner product over ALS item embeddings; content: cosine over content vectors")
    p.add_argument("file", help="a .usearch file (indexes.ann.build_index) keyed by the tenant's item indices")
    p.set_defaults(fn=cmd_index_publish)

