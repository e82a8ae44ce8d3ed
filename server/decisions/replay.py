"""``funnel replay REQUEST_ID``: re-run a logged decision and show what changed.

1. Find the decision in FUNNEL_DECISIONS (:func:`server.decisions.stream.find_decision`:
   a linear scan, of the tenant's subjects only with ``--tenant``).
2. Re-run the logged request in this process against the data directory as it is now,
   through the serving code path itself (``RecommenderServicer.feed_response`` /
   ``related_response``; a later page is reached by following the replay's own cursors),
   with the logged versions where they still exist:

   * config: the logged ``config_version`` from the tenant's config history
     (``TenantRegistry.get_version``) when it is not the current one; when the history
     does not have it the current config serves and the report says so;
   * models: whatever scores the request now (the deployment, canary or experiment
     variant the user maps to); when that is not the logged version,
     :func:`pin_model_version` is asked (the hook for the model registry, which does
     not load arbitrary registered versions yet) and otherwise the report says "model
     version X not available, using Y".

3. Print the diff: items served vs replayed (rank changes, added, removed), scores,
   reasons, versions, degradation level, segment (evaluated on the user's row as it is
   now) and experiment variant.

Exit status: 0 identical, 1 different, 2 no such decision, 3 cannot replay (NATS
unreachable, tenant gone). A decision served from the per-process cache (level 2)
or degraded by time pressure (level 1, or 3/4 after a deadline) depends on state this
process does not have; its replay usually differs, and the report shows how.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from protos import funnel_pb2
from server.servicers.common import RpcAbort

EXIT_IDENTICAL, EXIT_DIFFERENT, EXIT_NOT_FOUND, EXIT_ERROR = 0, 1, 2, 3
# relative; the scores of a replay on the same versions are bit-identical (the ANN cache keeps
# float32 strengths, as a miss computes them), the slack only absorbs float32 printing round trips
SCORE_TOLERANCE = 1e-6
MAX_PAGES = 100


class ReplayError(RuntimeError):
    """The decision cannot be replayed (exit 3)."""


@dataclass
class Replay:
    decision: funnel_pb2.Decision
    response: funnel_pb2.FeedResponse | None
    items: list                           # the replayed FeedItems at the served positions
    config_version: int                   # the config version the replay ran with
    notes: list[str] = field(default_factory=list)
    error: str = ""                       # the replay ended with this status instead of a response


async def fetch_decision(nats_url: str, request_id: str, tenant: str = ""):
    """DecisionScan of ``request_id``; ReplayError when NATS cannot be asked."""
    import nats
    from nats.js.errors import NotFoundError

    from server.decisions.stream import DecisionScan, find_decision

    async def quiet(_exc):  # the failure is reported once, below
        pass

    try:  # nats-py retries forever with max_reconnect_attempts=0: 1 = two tries, then NoServersError
        nc = await asyncio.wait_for(nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1,
                                                 reconnect_time_wait=0.2, error_cb=quiet), 10)
    except Exception as exc:
        raise ReplayError(f"cannot reach NATS at {nats_url} ({type(exc).__name__})") from None
    try:
        try:
            return await find_decision(nc.jetstream(), request_id, tenant)
        except NotFoundError:
            return DecisionScan(None, 0)  # no decision log stream on this NATS
    finally:
        await nc.close()


def pin_model_version(app, snap, runtime, version: str):
    """A runtime like ``runtime`` whose every request is scored by the registered models
    of ``version`` ("<prerank>+<rank>" as FeedResponse.model_version reports it, 12 hex
    digits each; a lone "<prerank>" after a pre-ranker-only response), or None when one
    of them is not in the tenant's registry (server.models.registry) or does not load."""
    import dataclasses
    import os

    from server.models.registry import ModelRegistry
    from server.models.runtime import ModelError, load_scorer
    from server.models.selection import KindModels, SurfaceModels

    parts = version.split("+")
    if not 1 <= len(parts) <= 2:
        return None
    registry = ModelRegistry(app.store, app.settings.data_dir)
    scorers = []
    for part, kind in zip(parts, ("prerank", "rank")):
        record = registry.get(snap.txn, runtime.tenant_id, part)
        if record is None or record.kind != kind:
            return None
        try:
            scorers.append(load_scorer(os.path.join(app.settings.data_dir, record.path), record.version,
                                       record.features))
        except ModelError:
            return None
    rank = scorers[1] if len(scorers) == 2 else runtime.rank
    pinned = SurfaceModels(KindModels(stable=scorers[0]), KindModels(stable=rank))
    return dataclasses.replace(runtime, surface_models={"*": pinned}, override_models={})


def runtime_with_config(registry, snap, runtime, config):
    """A runtime built like ``runtime`` (same index and model pointers) but with ``config``:
    blocked/boosted items, category masks and a linear model follow the config."""
    fingerprint = (json.dumps(config.to_json(), separators=(",", ":")).encode(),) + tuple(runtime.fingerprint[1:])
    return registry._build(snap, runtime.tenant_id, fingerprint)  # noqa: SLF001 - same build as serving


def replay_decision(app, decision: funnel_pb2.Decision) -> Replay:
    """Re-runs ``decision`` on ``app`` (a server.app.ServingApp over the data directory)."""
    from server.batch_plans import NO_DEADLINE
    from server.servicers.recommender import RecommenderServicer
    from server.tenancy import ConfigError, TenantRegistry

    servicer = RecommenderServicer(app)
    notes: list[str] = []
    with app.store.snapshot() as snap:
        runtime = app.registry.get(snap, decision.tenant_id)
        if runtime is None:
            raise ReplayError(f"tenant {decision.tenant_id!r} no longer exists")
        current = runtime.config.version
        logged = decision.config_version
        if logged and logged != current:
            old = None
            try:
                old = TenantRegistry(app.store).get_version(snap.txn, decision.tenant_id, logged)
            except ConfigError as exc:  # stored, but no longer loads (a field since removed)
                notes.append(f"config version {logged} no longer loads ({exc})")
            if old is not None:
                runtime = runtime_with_config(app.registry, snap, runtime, old)
                notes.append(f"config version {logged} restored from the tenant's history (current: {current})")
            else:
                notes.append(f"config version {logged} not available, using {current}")
        used_config = runtime.config.version
        try:
            response, items = _rerun(servicer, runtime, snap, decision, NO_DEADLINE)
            # the models that scored it are chosen per request (deployment, canary, experiment variant);
            # compare what actually scored, and only then ask for the logged version
            if (decision.model_version and response.model_version
                    and response.model_version != decision.model_version):
                pinned = pin_model_version(app, snap, runtime, decision.model_version)
                if pinned is not None:
                    notes.append(f"model version {decision.model_version} loaded from the registry")
                    response, items = _rerun(servicer, pinned, snap, decision, NO_DEADLINE)
                else:
                    notes.append(f"model version {decision.model_version} not available, using "
                                 f"{response.model_version}")
        except RpcAbort as exc:
            return Replay(decision, None, [], used_config, notes, f"{exc.code.name}: {exc.message}")
    return Replay(decision, response, items, used_config, notes)


def _rerun(servicer, runtime, snap, decision, context):
    """The replayed response and its items at the positions the decision served."""
    if decision.WhichOneof("request") == "related":
        request, call = funnel_pb2.RelatedRequest(), servicer.related_response
        request.CopyFrom(decision.related)
    else:
        request, call = funnel_pb2.FeedRequest(), servicer.feed_response
        request.CopyFrom(decision.feed)
    first = decision.items[0].position if decision.items else 0
    paged = bool(request.cursor)
    request.cursor = ""  # a later page: replay page 1, then follow the replay's own cursors
    response = call(request, runtime, snap, context, time.perf_counter(), method="Replay")
    pages = 1
    while paged and response.items and response.items[-1].position + 1 <= first and response.next_cursor:
        if pages >= MAX_PAGES:
            break
        request.cursor = response.next_cursor
        response = call(request, runtime, snap, context, time.perf_counter(), method="Replay")
        pages += 1
    return response, list(response.items)


# ------------------------------------------------------------------ diff
@dataclass
class Diff:
    rows: list[str]
    differences: list[str]

    @property
    def identical(self) -> bool:
        return not self.differences


def _score_equal(a: float, b: float) -> bool:
    return abs(a - b) <= SCORE_TOLERANCE * max(1.0, abs(a), abs(b))


def diff(replay: Replay) -> Diff:
    d, differences, rows = replay.decision, [], []
    if replay.response is None:
        return Diff([], [f"the replay ended with {replay.error}"])
    served = list(d.items)
    replayed = replay.items
    replayed_pos = {item.item_id: k for k, item in enumerate(replayed)}
    served_pos = {item.item_id: k for k, item in enumerate(served)}
    moved = score_changes = reason_changes = 0
    for k, item in enumerate(served):
        j = replayed_pos.get(item.item_id)
        if j is None:
            change = "removed"
        elif j == k:
            change = "="
        else:
            change = f"{'up' if j < k else 'down'} {abs(k - j)}"
            moved += 1
        other = replayed[j] if j is not None else None
        score = f"{item.score:.6g}"
        if other is not None:
            score += f" -> {other.score:.6g}"
            if not _score_equal(item.score, other.score):
                score_changes += 1
                score += " *"
            if other.reason != item.reason:
                reason_changes += 1
                score += f"  reason {item.reason!r} -> {other.reason!r}"
        rows.append(f"{item.position:4d}  {item.item_id:24.24s} {change:10s} {score}")
    added = [item for item in replayed if item.item_id not in served_pos]
    for item in added:
        rows.append(f"{item.position:4d}  {item.item_id:24.24s} {'added':10s} {item.score:.6g}")
    removed = sum(1 for item in served if item.item_id not in replayed_pos)
    for count, what in ((moved, "moved"), (len(added), "added"), (removed, "removed"),
                        (score_changes, "with a different score"), (reason_changes, "with a different reason")):
        if count:
            differences.append(f"{count} item(s) {what}")
    r = replay.response
    if r.degradation_level != d.degradation_level:
        differences.append(f"level {d.degradation_level} -> {r.degradation_level}")
    if r.model_version != d.model_version:
        differences.append(f"model version {d.model_version or '(none)'} -> {r.model_version or '(none)'}")
    if d.config_version and replay.config_version != d.config_version:
        differences.append(f"config version {d.config_version} -> {replay.config_version}")
    # the segment is evaluated on the user's row now, the variant on the replayed config:
    # a user whose features moved them to another segment may see other eligible items
    if r.segment != d.segment:
        differences.append(f"segment {d.segment or '(none)'} -> {r.segment or '(none)'}")
    if (r.experiment, r.variant) != (d.experiment, d.variant):
        differences.append(f"experiment {d.experiment or '(none)'}/{d.variant or '-'} -> "
                           f"{r.experiment or '(none)'}/{r.variant or '-'}")
    return Diff(rows, differences)


def report(replay: Replay, result: Diff) -> str:
    d = replay.decision
    served_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d.served_at_ms / 1000))
    method = "GetRelated" if d.WhichOneof("request") == "related" else "GetFeed"
    lines = [f"decision {d.request_id}: {method} tenant {d.tenant_id} user {d.user_id or '(anonymous)'} "
             f"surface {d.surface}, served {served_at} in {d.latency_us / 1000:.1f} ms",
             f"  served  : level {d.degradation_level}, model {d.model_version or '(none)'}, "
             f"config v{d.config_version}, {len(d.items)} items"
             + (f", experiment {d.experiment}/{d.variant}" if d.experiment else "")
             + (f", segment {d.segment}" if d.segment else "")
             + (", canary" if d.canary else "")]
    if replay.response is not None:
        r = replay.response
        lines.append(f"  replayed: level {r.degradation_level}, model {r.model_version or '(none)'}, "
                     f"config v{replay.config_version}, {len(replay.items)} items")
    lines += [f"  note: {note}" for note in replay.notes]
    if result.rows:
        lines.append(" pos  item                     change     score served -> replayed")
        lines += result.rows
    lines.append("identical" if result.identical else "differs: " + "; ".join(result.differences))
    return "\n".join(lines)


def run(data_dir: str, request_id: str, nats_url: str, tenant: str = "", out=print) -> int:
    """The command: finds, replays, prints; returns the exit status."""
    from server.app import ServeSettings, ServingApp
    from server.tenancy import TENANT_ID_RE

    if tenant and not TENANT_ID_RE.match(tenant):  # it becomes a subject filter: no wildcards or dots
        out(f"--tenant: {tenant!r} is not a tenant id ([a-z0-9][a-z0-9_-]{{0,62}})")
        return EXIT_ERROR
    try:
        scan = asyncio.run(fetch_decision(nats_url, request_id, tenant))
    except ReplayError as exc:
        out(f"cannot search the decision log: {exc}")
        return EXIT_ERROR
    if scan.decision is None:
        where = f"tenant {tenant}'s decisions" if tenant else "FUNNEL_DECISIONS"
        out(f"decision {request_id} not found ({scan.scanned} decisions of {where} scanned)")
        return EXIT_NOT_FOUND
    app = ServingApp(ServeSettings(data_dir=data_dir))
    try:
        replay = replay_decision(app, scan.decision)
    except ReplayError as exc:
        out(f"cannot replay {request_id}: {exc}")
        return EXIT_ERROR
    finally:
        app.store.close()
    result = diff(replay)
    out(report(replay, result))
    return EXIT_IDENTICAL if result.identical else EXIT_DIFFERENT
