"""Recommender servicer: authenticate, validate, run the funnel, map to the proto.
No ranking logic here."""

from __future__ import annotations

import dataclasses
import time
import uuid

import grpc
import numpy as np

from kernels.layout import FEATURES
from protos import funnel_pb2, funnel_pb2_grpc
from server.cursor import CursorError, RankingTail
from server.events.erasure import tombstone
from server.models.canary import record_outcomes
from server.decisions.log import FEED as DECISION_FEED
from server.decisions.log import RELATED as DECISION_RELATED
from server.pipeline.filters import count_removals
from server.pipeline.funnel import LEVEL_CACHED
from server.pipeline.rerankers.reasons import render
from server.pipeline.state import RequestState, request_state, source_names
from server.servicers.common import RpcAbort, authenticate_tenant, invalid, not_found, rpc
from server.store.sessions import active_session_items, session_hash

MAX_ID_LEN = 256
MAX_LIST_IDS = 1000
MIN_USEFUL_REMAINING_S = 0.001  # below this the caller cannot use an answer: shed, do not compute


def _shed_if_expired(context) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining < MIN_USEFUL_REMAINING_S:
        raise RpcAbort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the request was served")


def _check_id(context, field: str, value: str, required: bool = True) -> None:
    if required and not value:
        invalid(context, f"{field}: required")
    if len(value) > MAX_ID_LEN:
        invalid(context, f"{field}: longer than {MAX_ID_LEN} characters")


class RecommenderServicer(funnel_pb2_grpc.RecommenderServicer):
    def __init__(self, app, decisions=None):
        self.app = app  # server.app.ServingApp: store, registry, funnel, cursor codec, metrics, kill switch
        self.decisions = decisions  # server.decisions.log.DecisionLog (None: no decision log)

    @rpc
    async def GetFeed(self, request, context):
        started = time.perf_counter()
        _shed_if_expired(context)
        _check_id(context, "user_id", request.user_id)
        _check_id(context, "surface", request.surface, required=False)
        if len(request.exclude_item_ids) > MAX_LIST_IDS:
            invalid(context, f"exclude_item_ids: more than {MAX_LIST_IDS} ids")
        if len(request.context.session_item_ids) > MAX_LIST_IDS:
            invalid(context, f"context.session_item_ids: more than {MAX_LIST_IDS} ids")
        _check_id(context, "context.session_id", request.context.session_id, required=False)
        with self.app.store.snapshot() as snap:
            tenant = authenticate_tenant(self.app, snap, context)
            response = self.feed_response(request, tenant, snap, context, started)
        if self.decisions is not None:
            self.decisions.record(DECISION_FEED, tenant, request, response)
        return response

    @rpc
    async def GetRelated(self, request, context):
        started = time.perf_counter()
        _shed_if_expired(context)
        _check_id(context, "item_id", request.item_id)
        _check_id(context, "user_id", request.user_id, required=False)
        _check_id(context, "surface", request.surface, required=False)
        with self.app.store.snapshot() as snap:
            tenant = authenticate_tenant(self.app, snap, context)
            response = self.related_response(request, tenant, snap, context, started)
        if self.decisions is not None:
            self.decisions.record(DECISION_RELATED, tenant, request, response)
        return response

    # ------------------------------------------- after authentication (shared by batch plans and replay)
    def feed_response(self, request, tenant, snap, context, started: float, method: str = "GetFeed"):
        """GetFeed's answer once the tenant is known: the one code path from request to
        FeedResponse that GetFeed, batch plans (server.batch_plans) and replay use."""
        state = self._state(request.user_id, request.surface, request.limit, tenant, snap, context)
        state.explain = request.explain
        if request.context.session_item_ids:
            state.session_idx = self._resolve(snap, tenant, request.context.session_item_ids)
        else:
            state.session_idx = self._stored_session(request, tenant, snap)
        state.exclude_idx = self._resolve(snap, tenant, request.exclude_item_ids)
        return self._respond(method, request.cursor, state, snap, context, started)

    def related_response(self, request, tenant, snap, context, started: float, method: str = "GetRelated"):
        """GetRelated's answer once the tenant is known (as :meth:`feed_response`)."""
        anchor = snap.item_index(tenant.tenant_id, request.item_id)
        if anchor is None:
            not_found(context, f"item_id: {request.item_id!r} is not in the catalog")
        state = self._state(request.user_id, request.surface or "related", request.limit, tenant, snap, context)
        state.anchor_idx = anchor
        return self._respond(method, request.cursor, state, snap, context, started)

    # ------------------------------------------------------------------ helpers
    def _state(self, user_id, surface, limit, tenant, snap, context) -> RequestState:
        config = tenant.config
        if limit > config.max_limit:
            invalid(context, f"limit: {limit} is above this tenant's max_limit {config.max_limit}")
        remaining = context.time_remaining()
        budget_s = config.latency_budget_ms / 1000.0
        if remaining is not None:
            budget_s = min(budget_s, max(remaining - 0.0005, 0.0))  # leave room to send the reply
        return request_state(snap, tenant, user_id, surface, limit, budget_s, self.app.kill_switch)

    def _stored_session(self, request, tenant, snap) -> np.ndarray:
        """The user's current session as the ingest worker keeps it (server.store.sessions),
        when active (and, if the request names a session_id, when it is that one). Its item
        ids are written into ``request.context.session_item_ids``, so the decision log keeps
        what was used and a replay re-runs with the same seeds."""
        stored = snap.session(tenant.tenant_id, request.user_id)
        if stored is None:
            return np.empty(0, dtype=np.int64)
        sid = request.context.session_id
        items = active_session_items(stored, time.time(), session_hash(sid) if sid else None)
        if items.size:
            request.context.session_item_ids.extend(
                self.app.item_meta(snap, tenant.tenant_id, int(i)).get("id", "") for i in items)
        return items.astype(np.int64)

    @staticmethod
    def _resolve(snap, tenant, item_ids) -> np.ndarray:
        if not item_ids:
            return np.empty(0, dtype=np.int64)
        found = (snap.item_index(tenant.tenant_id, i) for i in item_ids)
        return np.fromiter((i for i in found if i is not None), dtype=np.int64)

    def _scope(self, state) -> bytes:
        return f"{state.tenant.tenant_id}\x00{state.user_id}\x00{state.surface}\x00{state.anchor_idx}".encode()

    def _respond(self, method, cursor, state, snap, context, started):
        explain = None
        if cursor:
            try:
                tail = self.app.cursors.decode(self._scope(state), cursor)
            except CursorError as exc:
                invalid(context, str(exc))
            if state.user_id:
                stone = tombstone(snap.txn, self.app.store, state.tenant.tenant_id, state.user_id)
                if stone is not None and stone.at_ms >= tail.issued_at_ms:
                    invalid(context, "cursor: issued before the user's data was erased or their consent changed; "
                                     "request the first page again")
            page, rest = self._page_from_tail(state, tail)
            level, model_version, personalized, canary = (tail.level, tail.model_version,
                                                          tail.level <= LEVEL_CACHED, tail.canary)
            if tail.labelled:  # the ranking's own experiment and variant, as page 1 reported them
                state.experiment, state.variant = tail.experiment, tail.variant
        else:
            result = self.app.funnel.run(state)
            ranking = result.ranking
            tail = RankingTail(0, result.level, ranking.items.astype(np.int32), ranking.scores, ranking.reasons,
                               ranking.sources, ranking.sponsored, experiment=state.experiment,
                               variant=state.variant, model_version=result.model_version, canary=result.canary)
            page, rest = self._split(tail, state.limit)
            level, model_version, personalized = result.level, result.model_version, result.personalized
            canary = result.canary
            if state.explain:
                explain = dict(zip(ranking.items[: state.limit].tolist(), ranking.features[: state.limit]))
        # "<32 hex>.<experiment>.<variant>" inside an experiment (server.experiments.parse_request_id)
        request_id = uuid.uuid4().hex + (f".{state.experiment}.{state.variant}" if state.experiment else "")
        response = funnel_pb2.FeedResponse(
            mode=funnel_pb2.MODE_PERSONALIZED if personalized else funnel_pb2.MODE_FALLBACK,
            degradation_level=level, request_id=request_id, model_version=model_version,
            candidates_retrieved=state.candidates_retrieved, candidates_scored=state.candidates_scored,
            next_cursor=self.app.cursors.encode(self._scope(state), rest) if rest.items.shape[0] else "",
            sources_failed=state.sources_failed, experiment=state.experiment, variant=state.variant,
            config_version=state.tenant.config.version, canary=canary, segment=state.segment)
        for name, count in state.filtered.items():
            response.filtered[name] = count
        tenant_id = state.tenant.tenant_id
        for j in range(page.items.shape[0]):
            index = int(page.items[j])
            meta = self.app.item_meta(snap, tenant_id, index)
            reason = render(page.reasons[j], meta.get("category", ""))
            if explain is not None and index in explain:
                reason += " [" + ", ".join(f"{n}={v:.3f}" for n, v in zip(FEATURES, explain[index]) if v) + "]"
            response.items.append(funnel_pb2.FeedItem(
                item_id=meta.get("id", ""), score=float(page.scores[j]), position=page.position + j,
                reason=reason, sources=source_names(int(page.sources[j])), is_sponsored=bool(page.sponsored[j]),
                title=meta.get("title", ""), category=meta.get("category", ""),
                maturity_rating=meta.get("maturity_rating", "")))
        elapsed = time.perf_counter() - started
        response.server_time_us = int(elapsed * 1e6)
        self.app.metrics.observe_request(method, tenant_id, level, elapsed, state)
        if state.canary_outcomes:  # a canary model ran: its guardrail window (server.models.canary)
            record_outcomes(state, elapsed)
        return response

    @staticmethod
    def _split(tail: RankingTail, limit: int) -> tuple[RankingTail, RankingTail]:
        def part(sl, position):
            return dataclasses.replace(tail, position=position, items=tail.items[sl], scores=tail.scores[sl],
                                       reasons=tail.reasons[sl], sources=tail.sources[sl],
                                       sponsored=tail.sponsored[sl])

        return part(slice(0, limit), tail.position), part(slice(limit, None), tail.position + limit)

    def _page_from_tail(self, state, tail: RankingTail):
        """Later pages: the rest of the snapshot, re-filtered (an item deactivated
        since page 1 disappears; nothing is added, so no duplicates)."""
        outcome = self.app.funnel.filter_plan(state).apply(tail.items.astype(np.int64), state)
        count_removals(outcome, state.filtered)
        m = outcome.mask
        kept = dataclasses.replace(tail, items=tail.items[m], scores=tail.scores[m], reasons=tail.reasons[m],
                                   sources=tail.sources[m], sponsored=tail.sponsored[m])
        return self._split(kept, state.limit)
