"""The decision log: every served GetFeed/GetRelated response, appended to JetStream.

Serving must never wait for it. The servicer calls :meth:`DecisionLog.record`, which
appends one small tuple (references to the request and response objects, nothing
serialized) to an in-process buffer bounded by ``capacity``; when the buffer is full the
decision is dropped and counted. A background task drains the buffer every ``flush_s``:
it builds and serializes the ``Decision`` protos and publishes a batch at a time through
the serving process's NATS connection (:class:`server.events.publisher.EventPublisher`:
pipelined, PubAcks matched by index), so a slow or absent NATS only ever costs dropped
decisions, never request latency.

Decisions are not durable the way events are: while NATS is unreachable they are
dropped and counted (no disk spooling), and so are those that get no PubAck.
``funnel_decisions_dropped_total{reason}``: ``buffer_full``, ``nats_unavailable``,
``no_puback``; ``funnel_decisions_logged_total`` counts the PubAcks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from prometheus_client import Counter

from protos import funnel_pb2
from server.decisions.stream import decision_subject, ensure_decision_stream
from server.events.validate import Message

log = logging.getLogger("funnel.decisions")

FEED, RELATED = 0, 1


class DecisionLog:
    """``record`` is O(1) and never blocks; ``start``/``close`` run the publishing task."""

    def __init__(self, publisher, metrics=None, capacity: int = 10_000, batch: int = 256, flush_s: float = 0.02):
        self.publisher = publisher
        self.capacity, self.batch, self.flush_s = capacity, batch, flush_s
        self._buffer: deque = deque()
        self._task: asyncio.Task | None = None
        self._stream_ready = None      # the NATS connection the stream was ensured on
        registry = metrics.registry if metrics is not None else None
        dropped = Counter("funnel_decisions_dropped_total", "Served decisions not logged, per reason",
                          ["reason"], registry=registry)
        self._dropped_full = dropped.labels("buffer_full")
        self._dropped_down = dropped.labels("nats_unavailable")
        self._dropped_unacked = dropped.labels("no_puback")
        self._logged = Counter("funnel_decisions_logged_total", "Served decisions stored in FUNNEL_DECISIONS",
                               registry=registry)

    def record(self, kind: int, tenant, request, response) -> None:
        """Hands one served response over (``tenant``: the TenantRuntime that served it).
        The request and response objects must not be changed afterwards (gRPC does not)."""
        if len(self._buffer) >= self.capacity:
            self._dropped_full.inc()
            return
        self._buffer.append((kind, tenant.tenant_id, tenant.config.version, request, response, time.time()))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="decision-log")

    async def close(self, flush_timeout_s: float = 2.0) -> None:
        """Publishes what is buffered (for at most ``flush_timeout_s``), then stops."""
        if self._task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout_s
        while self._buffer and loop.time() < deadline and not self._task.done():
            await asyncio.sleep(self.flush_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                await asyncio.sleep(self.flush_s)
                continue
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the log die: count what was lost and go on
                log.exception("decision log batch failed")
                await asyncio.sleep(self.flush_s)

    async def flush(self) -> None:
        """Publishes up to ``batch`` buffered decisions (drops and counts them without NATS)."""
        buffer, n = self._buffer, min(len(self._buffer), self.batch)
        taken = [buffer.popleft() for _ in range(n)]
        if not taken:
            return
        publisher = self.publisher
        if not publisher.connected or not await self._ensure_stream():
            self._dropped_down.inc(len(taken))
            return
        messages = [_message(*entry) for entry in taken]
        acks = await publisher.send(messages)
        stored = sum(1 for a in acks if a is not None)
        if stored:
            self._logged.inc(stored)
        if stored < len(messages):
            self._dropped_unacked.inc(len(messages) - stored)
            self._stream_ready = None  # e.g. the stream was deleted: set it up again before the next batch

    async def _ensure_stream(self) -> bool:
        nc = self.publisher.nc
        if self._stream_ready is nc:
            return True
        try:
            await ensure_decision_stream(self.publisher.js, timeout_s=2.0)
        except Exception as exc:  # e.g. no JetStream: drop (counted) and try again with the next batch
            log.warning("decision stream unavailable (%s): decisions are dropped", exc)
            return False
        self._stream_ready = nc
        return True


def build_decision(kind: int, tenant_id: str, config_version: int, request, response,
                   served_at: float) -> funnel_pb2.Decision:
    decision = funnel_pb2.Decision(
        request_id=response.request_id, tenant_id=tenant_id, user_id=request.user_id,
        model_version=response.model_version, degradation_level=response.degradation_level, mode=response.mode,
        latency_us=response.server_time_us, served_at_ms=int(served_at * 1000),
        # another part of the control plane adds these to FeedResponse; use them where present
        config_version=int(getattr(response, "config_version", 0) or config_version),
        experiment=getattr(response, "experiment", ""), variant=getattr(response, "variant", ""),
        canary=bool(getattr(response, "canary", False)), segment=getattr(response, "segment", ""))
    decision.user_hash = decision_subject(tenant_id, request.user_id).rsplit(".", 1)[1]
    if kind == FEED:
        decision.feed.CopyFrom(request)
        decision.surface = request.surface or "*"
    else:
        decision.related.CopyFrom(request)
        decision.surface = request.surface or "related"
    decision.items.extend(response.items)
    return decision


def _message(kind, tenant_id, config_version, request, response, served_at) -> Message:
    decision = build_decision(kind, tenant_id, config_version, request, response, served_at)
    return Message(decision_subject(tenant_id, request.user_id), response.request_id, decision.SerializeToString())
