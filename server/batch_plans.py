"""Batch plans: GetFeed's answer for every user of a segment, computed ahead of time.

:class:`BatchPlanner` runs the serving code path itself (``RecommenderServicer.feed_response``:
request state, the funnel, response building; one read snapshot per user, as a call)
for each user of a segment, so a plan row is exactly the first page GetFeed would
answer at that moment, with the same model and config versions. The offline command
(``funnel batch-plan``, :mod:`ops.batch_plan`) writes the rows as JSONL; the Admin RPC
``BatchPlan`` streams them.

Segments:

* ``all``: every stored user of the tenant;
* ``top-category:<name>``: users whose largest category affinity in their stored feature
  row is ``<name>`` (lowest category id on ties, users without any affinity in none), the
  definition of ``ops.features.user_segments`` applied to the row serving uses for its
  segment lists;
* ``<segment>`` or ``segment:<segment>``: a named segment of the tenant's config
  (server.segments): users whose segment GetFeed would compute now is ``<segment>``
  (the same rule, row, consent and tenant clock; ``segment:all`` names a segment called
  "all").

Users are the stored users (anonymous requests have no row to plan for), in store order.
Each user gets the tenant's latency budget, as a call without a deadline does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import grpc
import numpy as np

from kernels.layout import MAX_CATEGORIES, USER_AFFINITY, USER_CONSENT
from protos import funnel_pb2
from server.segments import user_facts
from server.store import user_row_view

SEGMENT_ALL = "all"
TOP_CATEGORY = "top-category:"
NAMED_SEGMENT = "segment:"
DEFAULT_MAX_USERS = 1000
MAX_USERS = 100_000
DEFAULT_VALID_HOURS = 24
MAX_VALID_HOURS = 24 * 366


class PlanError(ValueError):
    """A plan that cannot run; the message names the field, ``code`` is the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PlanSpec:
    tenant_id: str
    surface: str = "*"
    segment: str = SEGMENT_ALL
    limit: int = 0                      # 0 = the tenant's default_limit
    max_users: int = 0                  # 0 = every user of the segment (offline), DEFAULT_MAX_USERS over RPC
    valid_hours: int = DEFAULT_VALID_HOURS

    @classmethod
    def from_proto(cls, msg: funnel_pb2.BatchPlanRequest) -> "PlanSpec":
        if msg.max_users > MAX_USERS:
            raise PlanError(f"max_users: {msg.max_users} is above {MAX_USERS}")
        return cls(msg.tenant_id, msg.surface or "*", msg.segment or SEGMENT_ALL, msg.limit,
                   msg.max_users or DEFAULT_MAX_USERS, msg.valid_hours or DEFAULT_VALID_HOURS)


class _NoDeadline:
    """The servicer's view of a call without a client deadline (tenant budget applies)."""

    @staticmethod
    def time_remaining():
        return None


NO_DEADLINE = _NoDeadline()


class BatchPlanner:
    def __init__(self, app, servicer=None):
        from server.servicers.recommender import RecommenderServicer

        self.app = app  # server.app.ServingApp
        self.servicer = servicer or RecommenderServicer(app)  # no decision log: plans are not served responses

    def check(self, spec: PlanSpec):
        """Validates ``spec`` against the stored tenant; returns the segment's membership
        test ``member(user_value) -> bool`` (None = every user). Raises PlanError."""
        if not spec.tenant_id:
            raise PlanError("tenant_id: required")
        with self.app.store.snapshot() as snap:
            tenant = self.app.registry.get(snap, spec.tenant_id) if len(spec.tenant_id) <= 64 else None
        if tenant is None:
            raise PlanError(f"tenant_id: {spec.tenant_id!r} does not exist", grpc.StatusCode.NOT_FOUND)
        config = tenant.config
        if spec.limit < 0 or spec.max_users < 0:
            raise PlanError("limit, max_users: must not be negative")
        if spec.surface not in config.surfaces:
            raise PlanError(f"surface: {spec.surface!r} is not configured for tenant {spec.tenant_id!r} "
                            f"(configured: {', '.join(sorted(config.surfaces))}; '*' = the default rules)")
        if spec.limit > config.max_limit:
            raise PlanError(f"limit: {spec.limit} is above this tenant's max_limit {config.max_limit}")
        if not 1 <= spec.valid_hours <= MAX_VALID_HOURS:
            raise PlanError(f"valid_hours: must be within 1..{MAX_VALID_HOURS}")
        if spec.segment == SEGMENT_ALL:
            return None
        if spec.segment.startswith(TOP_CATEGORY):
            name = spec.segment[len(TOP_CATEGORY):]
            if name not in tenant.categories:
                raise PlanError(f"segment: unknown category {name!r} for tenant {spec.tenant_id!r} "
                                f"(known: {', '.join(tenant.categories) or 'none'})")
            category = tenant.categories.index(name)
            return lambda value: top_category(value) == category
        name = spec.segment[len(NAMED_SEGMENT):] if spec.segment.startswith(NAMED_SEGMENT) else spec.segment
        named = [s.name for s in config.segments]
        if name not in named:
            raise PlanError(f"segment: {spec.segment!r} is not 'all', 'top-category:<name>' or a segment of tenant "
                            f"{spec.tenant_id!r} (named segments: {', '.join(named) or 'none'})")
        plan, now_days = tenant.segments, tenant.now_days()

        def member(value) -> bool:
            row = user_row_view(value)
            return plan.classify(user_facts(row, bool(row[USER_CONSENT] == 1.0), now_days)) == name
        return member

    def users(self, spec: PlanSpec) -> list[str]:
        """The segment's user ids in store order, at most ``spec.max_users`` (0 = all)."""
        member = self.check(spec)
        chosen: list[str] = []
        with self.app.store.snapshot() as snap:
            for user_id, value in self.app.store.iter_users(snap.txn, spec.tenant_id):
                if member is not None and not member(value):
                    continue
                chosen.append(user_id)
                if spec.max_users and len(chosen) >= spec.max_users:
                    break
        return chosen

    def row(self, spec: PlanSpec, user_id: str, now: float | None = None) -> funnel_pb2.BatchPlanRow:
        """One user's plan row: GetFeed's first page for ``user_id`` on ``spec.surface``."""
        request = funnel_pb2.FeedRequest(user_id=user_id, surface=spec.surface, limit=spec.limit)
        started = time.perf_counter()
        with self.app.store.snapshot() as snap:
            tenant = self.app.registry.get(snap, spec.tenant_id)
            if tenant is None:
                raise PlanError(f"tenant_id: {spec.tenant_id!r} was deleted", grpc.StatusCode.NOT_FOUND)
            response = self.servicer.feed_response(request, tenant, snap, NO_DEADLINE, started, method="BatchPlan")
            config_version = int(getattr(response, "config_version", 0) or tenant.config.version)
        generated_ms = int((time.time() if now is None else now) * 1000)
        return funnel_pb2.BatchPlanRow(
            user_id=user_id, surface=spec.surface, items=response.items, model_version=response.model_version,
            config_version=config_version, degradation_level=response.degradation_level,
            generated_at_ms=generated_ms, valid_until_ms=generated_ms + spec.valid_hours * 3_600_000)

    def rows(self, spec: PlanSpec, users: Iterable[str]) -> Iterator[funnel_pb2.BatchPlanRow]:
        for user_id in users:
            yield self.row(spec, user_id)


def top_category(user_value) -> int:
    """The user's largest-affinity category id (lowest on ties), -1 without any affinity."""
    affinity = user_row_view(user_value)[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
    best = int(np.argmax(affinity))
    return best if affinity[best] > 0 else -1


def row_json(row: funnel_pb2.BatchPlanRow) -> dict:
    """The JSONL form: {user_id, surface, items[{item_id, score, reason}], model_version,
    config_version, level, generated_at, valid_until} (times in ISO 8601 UTC)."""
    return {"user_id": row.user_id, "surface": row.surface,
            "items": [{"item_id": i.item_id, "score": round(float(i.score), 6), "reason": i.reason} for i in row.items],
            "model_version": row.model_version, "config_version": row.config_version,
            "level": row.degradation_level, "generated_at": _iso(row.generated_at_ms),
            "valid_until": _iso(row.valid_until_ms)}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
