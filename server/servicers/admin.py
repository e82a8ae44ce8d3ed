"""Admin servicer: tenants, catalog changes, user signals, erasure and consent.
Authenticated by ``x-admin-key``. Writes go to the store in one transaction each;
serving processes see them on their next request (items, users) or within the
registry's refresh interval (tenant config).

User RPCs check ``tenant_id`` and ``user_id`` (INVALID_ARGUMENT naming the field:
empty or longer than 256 characters), then that the tenant exists (NOT_FOUND).
DeleteUser and SetConsent work in ``server.events.erasure``; DeleteUser answers
UNAVAILABLE while NATS is unreachable (nothing erased: retry) and
FAILED_PRECONDITION on a server without NATS."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from kernels.layout import (
    MAX_CATEGORIES,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_CONSENT,
    USER_HAS_CF,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
)
from protos import funnel_pb2, funnel_pb2_grpc
from server.catalog import CatalogWriter, ItemError
from server.events.erasure import EventsUnavailable, UserEraser, set_consent
from server.servicers.common import RpcAbort, authenticate_admin, invalid, not_found, rpc
from server.servicers.models import ModelAdmin
from server.store import user_recent_items, user_row_view
from server.store.sessions import active_session_items
from server.servicers.config_mapping import (
    config_versions,
    experiments_from_proto,
    experiments_to_proto,
    segment_rules_from_proto,
    segment_rules_to_proto,
    segments_from_proto,
    segments_to_proto,
)
from server.tenancy import ConfigError, SurfaceRules, TenantConfig, TenantRegistry, VersionNotFound, hash_key

MAX_KEY_LEN = 256
MAX_USER_ID_LEN = 256  # as in GetFeed and Events.Ingest


def tenant_to_proto(config: TenantConfig) -> funnel_pb2.Tenant:
    msg = funnel_pb2.Tenant(
        tenant_id=config.tenant_id, name=config.name, maturity_policy=config.maturity_policy,
        personalization_enabled=config.personalization_enabled, default_limit=config.default_limit,
        max_limit=config.max_limit, latency_budget_ms=config.latency_budget_ms,
        blocked_item_ids=config.blocked_item_ids, blocked_categories=config.blocked_categories,
        boosted_item_ids=config.boosted_item_ids, linear_model_json=config.linear_model_json,
        affinity_half_life_days=config.affinity_half_life_days,
        trending_half_life_days=config.trending_half_life_days,
        version=config.version, api_key_count=len(config.api_key_hashes))
    for name, rules in config.surfaces.items():
        msg.surfaces[name].CopyFrom(funnel_pb2.SurfaceRules(
            max_per_category=rules.max_per_category, max_streak=rules.max_streak,
            freshness_weight=rules.freshness_weight, sponsored_positions=rules.sponsored_positions,
            editorial_weight=rules.editorial_weight, frequency_cap=rules.frequency_cap,
            campaign_frequency_cap=rules.campaign_frequency_cap, frequency_window_s=rules.frequency_window_s))
        segment_rules_to_proto(rules.segment_rules, msg.surfaces[name].segment_rules)
    msg.experiments.extend(experiments_to_proto(config.experiments))
    msg.segments.extend(segments_to_proto(config.segments))
    return msg


def tenant_from_proto(msg: funnel_pb2.Tenant, current: TenantConfig | None) -> TenantConfig:
    for key in msg.api_keys:
        if not (16 <= len(key) <= MAX_KEY_LEN):
            raise ConfigError("api_keys: each key must be 16..256 characters")
    hashes = tuple(hash_key(k) for k in msg.api_keys)
    if current is not None and not msg.rotate_keys:
        hashes = tuple(dict.fromkeys(current.api_key_hashes + hashes))
    surfaces = {name: SurfaceRules(r.max_per_category, r.max_streak, r.freshness_weight,
                                   tuple(r.sponsored_positions), r.editorial_weight, r.frequency_cap,
                                   r.campaign_frequency_cap, r.frequency_window_s or SurfaceRules.frequency_window_s,
                                   segment_rules=segment_rules_from_proto(r.segment_rules))
                for name, r in msg.surfaces.items()}
    defaults = TenantConfig(tenant_id=msg.tenant_id)
    return TenantConfig(
        tenant_id=msg.tenant_id, name=msg.name,
        maturity_policy=msg.maturity_policy or defaults.maturity_policy,
        personalization_enabled=msg.personalization_enabled,
        default_limit=msg.default_limit or defaults.default_limit,
        max_limit=msg.max_limit or defaults.max_limit,
        latency_budget_ms=msg.latency_budget_ms or defaults.latency_budget_ms,
        blocked_item_ids=tuple(msg.blocked_item_ids), blocked_categories=tuple(msg.blocked_categories),
        boosted_item_ids=tuple(msg.boosted_item_ids), surfaces=surfaces or defaults.surfaces,
        linear_model_json=msg.linear_model_json, experiments=experiments_from_proto(msg.experiments),
        segments=segments_from_proto(msg.segments),
        # proto3 0 = the default; NaN, inf and negatives stay, for validate() to reject
        affinity_half_life_days=msg.affinity_half_life_days or defaults.affinity_half_life_days,
        trending_half_life_days=msg.trending_half_life_days or defaults.trending_half_life_days,
        api_key_hashes=hashes)


class AdminServicer(ModelAdmin, funnel_pb2_grpc.AdminServicer):  # model RPCs: server.servicers.models
    def __init__(self, app, publisher=None):
        """``publisher``: the process's EventPublisher (its NATS connection purges
        erased users' events); None = no NATS, DeleteUser is refused."""
        self.app = app
        self.tenants = TenantRegistry(app.store)
        self.catalog = CatalogWriter(app.store)
        self.eraser = UserEraser(app.store, publisher)

    def _existing_tenant(self, context, tenant_id: str) -> TenantConfig:
        with self.app.store.snapshot() as snap:
            config = self.tenants.get(snap.txn, tenant_id)
        if config is None:
            not_found(context, f"tenant_id: {tenant_id!r} does not exist")
        return config

    @rpc
    async def UpsertTenant(self, request, context):
        authenticate_admin(self.app, context)
        with self.app.store.snapshot() as snap:
            current = self.tenants.get(snap.txn, request.tenant.tenant_id) if request.tenant.tenant_id else None
        try:
            stored = self.tenants.put(tenant_from_proto(request.tenant, current))
        except ConfigError as exc:
            invalid(context, f"tenant.{exc}")
        self.app.registry.invalidate(stored.tenant_id)
        return tenant_to_proto(stored)

    @rpc
    async def GetTenant(self, request, context):
        authenticate_admin(self.app, context)
        return tenant_to_proto(self._existing_tenant(context, request.tenant_id))

    @rpc
    async def ListConfigVersions(self, request, context):
        authenticate_admin(self.app, context)
        if not request.tenant_id:
            invalid(context, "tenant_id: required")
        current = self._existing_tenant(context, request.tenant_id)
        with self.app.store.snapshot() as snap:
            return config_versions(self.tenants, snap.txn, current)

    @rpc
    async def RestoreConfig(self, request, context):
        authenticate_admin(self.app, context)
        if not request.tenant_id:
            invalid(context, "tenant_id: required")
        if request.version == 0:
            invalid(context, "version: required (versions start at 1)")
        try:
            stored = self.tenants.restore(request.tenant_id, request.version)
        except VersionNotFound as exc:
            not_found(context, str(exc))
        except ConfigError as exc:
            raise RpcAbort(grpc.StatusCode.FAILED_PRECONDITION,
                           f"version: {request.version} no longer passes validation: {exc}") from None
        self.app.registry.invalidate(stored.tenant_id)
        return tenant_to_proto(stored)

    @rpc
    async def UpsertItems(self, request_iterator, context):
        authenticate_admin(self.app, context)
        batch, errors, position = [], [], 0
        async for item in request_iterator:
            try:
                batch.append(self.catalog.validate(item))
            except ItemError as exc:
                errors.append(f"item {position} ({item.item_id or '?'}): {exc}")
            position += 1
        for tenant_id in {i.tenant_id for i in batch}:
            self._existing_tenant(context, tenant_id)
        inserted, updated = self.catalog.upsert(batch) if batch else (0, 0)
        return funnel_pb2.UpsertItemsResponse(inserted=inserted, updated=updated, errors=errors)

    @rpc
    async def DeactivateItem(self, request, context):
        authenticate_admin(self.app, context)
        return self._item_change(request, context, delete=False)

    @rpc
    async def DeleteItem(self, request, context):
        authenticate_admin(self.app, context)
        return self._item_change(request, context, delete=True)

    def _item_change(self, request, context, delete: bool):
        self._existing_tenant(context, request.tenant_id)
        changed = self.catalog.deactivate(request.tenant_id, request.item_id, delete=delete)
        if changed is None:
            not_found(context, f"item_id: {request.item_id!r} is not in tenant {request.tenant_id!r}")
        return funnel_pb2.ItemChange(item_id=request.item_id, changed=changed)

    def _user_ref(self, context, tenant_id: str, user_id: str) -> None:
        for name, value in (("tenant_id", tenant_id), ("user_id", user_id)):
            if not value:
                invalid(context, f"{name}: required")
            if len(value) > MAX_USER_ID_LEN:
                invalid(context, f"{name}: longer than {MAX_USER_ID_LEN} characters")
        self._existing_tenant(context, tenant_id)

    @rpc
    async def GetUserSignals(self, request, context):
        authenticate_admin(self.app, context)
        self._user_ref(context, request.tenant_id, request.user_id)
        return self._signals(request.tenant_id, request.user_id)

    @rpc
    async def GetUserSegment(self, request, context):
        """The user's named segment as GetFeed computes it now (server.segments)."""
        from server.segments import user_facts

        authenticate_admin(self.app, context)
        self._user_ref(context, request.tenant_id, request.user_id)
        with self.app.store.snapshot() as snap:
            runtime = self.app.registry.get(snap, request.tenant_id)
            if runtime is None:
                not_found(context, f"tenant_id: {request.tenant_id!r} does not exist")
            value = snap.user(request.tenant_id, request.user_id)
            row = user_row_view(value) if value is not None else None
            consent = row is None or bool(row[USER_CONSENT] == 1.0)
            facts = user_facts(row, consent, runtime.now_days())
            return funnel_pb2.UserSegment(
                user_id=request.user_id, segment=runtime.segments.classify(facts), known=row is not None,
                personalization_consent=consent, top_category=runtime.segments.category_name(facts.top_category),
                interactions=facts.interactions, skip_rate=facts.skip_rate,
                days_since_active=facts.days_since_active if facts.days_since_active != float("inf") else -1.0)

    @rpc
    async def DeleteUser(self, request, context):
        authenticate_admin(self.app, context)
        self._user_ref(context, request.tenant_id, request.user_id)
        try:
            erasure = await self.eraser.erase(request.tenant_id, request.user_id)
        except EventsUnavailable as exc:
            raise RpcAbort(grpc.StatusCode.UNAVAILABLE if exc.configured else grpc.StatusCode.FAILED_PRECONDITION,
                           str(exc)) from None
        # frees this process's copy now; every process's cache also checks the tombstone
        self.app.funnel.cache.forget(request.tenant_id, request.user_id)
        return funnel_pb2.UserErasure(
            user_id=request.user_id, had_features=erasure.had_features, events_purged=erasure.events_purged,
            outbox_removed=erasure.outbox_removed, erased_through_seq=erasure.tombstone.seq,
            erased_at_ms=erasure.tombstone.at_ms, decisions_purged=erasure.decisions_purged)

    @rpc
    async def SetConsent(self, request, context):
        authenticate_admin(self.app, context)
        self._user_ref(context, request.tenant_id, request.user_id)
        await asyncio.to_thread(set_consent, self.app.store, request.tenant_id, request.user_id,
                                request.personalized)
        if not request.personalized:
            self.app.funnel.cache.forget(request.tenant_id, request.user_id)
        return self._signals(request.tenant_id, request.user_id)

    @rpc
    async def BatchPlan(self, request, context):
        """Streams one row per user (server.batch_plans); each row is computed between
        writes, so the worker keeps serving other calls while a plan streams."""
        from server.batch_plans import BatchPlanner, PlanError, PlanSpec

        authenticate_admin(self.app, context)
        planner = BatchPlanner(self.app)
        try:
            spec = PlanSpec.from_proto(request)
            users = planner.users(spec)
            for user_id in users:
                await context.write(planner.row(spec, user_id))
        except PlanError as exc:
            raise RpcAbort(exc.code, str(exc)) from None

    def _signals(self, tenant_id: str, user_id: str) -> funnel_pb2.UserSignals:
        with self.app.store.snapshot() as snap:
            value = snap.user(tenant_id, user_id)
            if value is None:
                return funnel_pb2.UserSignals(user_id=user_id, known=False)
            row = user_row_view(value)
            categories = snap.state(tenant_id, "categories", []) or []
            affinity = row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
            top = [int(c) for c in np.argsort(-affinity, kind="stable")[:5] if affinity[c] > 0]
            recent = self._item_ids(snap, tenant_id, user_recent_items(value, 20)[::-1])
            session = self._item_ids(snap, tenant_id, active_session_items(snap.session(tenant_id, user_id),
                                                                            time.time()))
            return funnel_pb2.UserSignals(
                user_id=user_id, known=True, activity=float(row[USER_ACTIVITY]),
                skip_rate=float(row[USER_SKIP_RATE]), last_active_day=int(row[USER_LAST_ACTIVE_DAYS]),
                personalization_consent=bool(row[USER_CONSENT] == 1.0), has_embedding=bool(row[USER_HAS_CF] == 1.0),
                top_categories=[funnel_pb2.CategoryAffinity(category=categories[c] if c < len(categories) else str(c),
                                                            weight=float(affinity[c])) for c in top],
                recent_item_ids=recent, session_item_ids=session)

    @staticmethod
    def _item_ids(snap, tenant_id: str, indices) -> list[str]:
        ids = []
        for index in indices:
            meta = snap.item_meta(tenant_id, int(index))
            if meta:
                ids.append(meta["id"])
        return ids

