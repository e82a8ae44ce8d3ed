"""Events servicer: authenticate, validate per event, publish or spool, reply.

Statuses: UNAUTHENTICATED for a wrong tenant/key (as GetFeed);
RESOURCE_EXHAUSTED for more than MAX_BATCH events (nothing is taken);
otherwise OK with each invalid event listed as (index, reason) while the valid
ones of the same batch are accepted or spooled; INTERNAL only if the outbox
itself cannot be written (then the caller must retry: nothing was promised).
"""

from __future__ import annotations

import asyncio
import time

import grpc

from protos import funnel_pb2, funnel_pb2_grpc
from server.events.outbox import Forwarder, Outbox
from server.events.publisher import EventPublisher
from server.events.validate import MAX_BATCH, event_message
from server.servicers.common import RpcAbort, authenticate_tenant, rpc


class EventsServicer(funnel_pb2_grpc.EventsServicer):
    """Owns the process's :class:`EventPublisher` (connected to
    ``app.settings.nats_url``) and, when ``forward`` is set, the outbox
    :class:`Forwarder`; :meth:`start` and :meth:`close` run them."""

    def __init__(self, app, forward: bool = False):
        self.app = app
        self.outbox = Outbox(app.store)
        self.publisher = EventPublisher(app.settings.nats_url, self.outbox, metrics=app.metrics)
        self.forwarder = Forwarder(self.outbox, self.publisher) if forward and app.settings.nats_url else None
        self._forward_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.publisher.start()
        if self.forwarder is not None:
            self._forward_task = asyncio.create_task(self.forwarder.run(), name="outbox-forwarder")

    async def close(self) -> None:
        if self._forward_task is not None:
            self._forward_task.cancel()
            await asyncio.gather(self._forward_task, return_exceptions=True)
        await self.publisher.close()

    @rpc
    async def Ingest(self, request, context):
        with self.app.store.snapshot() as snap:
            tenant_id = authenticate_tenant(self.app, snap, context).tenant_id
        if len(request.events) > MAX_BATCH:
            raise RpcAbort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"events: {len(request.events)} events in one call; at most {MAX_BATCH}")
        now_ms = int(time.time() * 1000)
        messages, response = [], funnel_pb2.IngestResponse()
        for index, event in enumerate(request.events):
            checked = event_message(tenant_id, event, now_ms)
            if isinstance(checked, str):
                response.rejected.append(funnel_pb2.RejectedEvent(index=index, reason=checked))
            else:
                messages.append(checked)
        accepted, duplicates, spooled = await self.publisher.publish(messages)
        response.accepted, response.duplicates, response.spooled = accepted, duplicates, spooled
        self.app.metrics.observe_ingest(tenant_id, accepted, duplicates, spooled, len(response.rejected))
        return response
