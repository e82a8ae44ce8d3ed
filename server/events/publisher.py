"""JetStream publishing for Events.Ingest, with the outbox as the fallback.

:class:`EventPublisher` keeps one nats-py connection per serving process,
connecting (and reconnecting) in the background; until it is connected, or
when a publish gets no PubAck in ``timeout_s``, events go to the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from server.events.nats_server import ensure_stream
from server.events.outbox import Outbox
from server.events.validate import Message

log = logging.getLogger("funnel.events")


class EventPublisher:
    """``publish(batch) -> (accepted, duplicates, spooled)``: every message is
    published concurrently with header ``Nats-Msg-Id``; the call returns after
    every publish got its PubAck or failed, and the failed ones are spooled in
    one synced outbox transaction before it returns. ``accepted`` counts
    PubAcks (``duplicates`` of them carried ``duplicate``: JetStream had the id
    already), ``spooled`` the rest. With ``nats_url`` empty nothing connects and
    every event is spooled (they wait for a configured NATS)."""

    def __init__(self, nats_url: str, outbox: Outbox, timeout_s: float = 2.0, metrics=None):
        self.nats_url, self.outbox, self.timeout_s, self.metrics = nats_url, outbox, timeout_s, metrics
        self.nc = None
        self.js = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self.js is not None and self.nc.is_connected

    async def start(self, wait_s: float = 15.0) -> None:
        """Starts connecting; waits up to ``wait_s`` for the first connection so a server
        that reports SERVING publishes rather than spools when NATS is up. Past that it
        serves anyway (spooling) and keeps connecting in the background."""
        if self.nats_url:
            self._task = asyncio.create_task(self._connect(), name="nats-connect")
            deadline = asyncio.get_running_loop().time() + wait_s
            while not self.connected and not self._task.done() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.nc is not None:
            await self.nc.close()

    async def _connect(self) -> None:
        import nats

        async def on_error(exc):
            log.debug("nats: %s", exc)

        async def on_disconnect():
            if not self._closing:
                log.warning("NATS %s disconnected: Ingest spools to the outbox until it is back",
                            self.nats_url)

        async def on_reconnect():
            log.warning("NATS %s reconnected", self.nats_url)

        # max_reconnect_attempts=-1 makes the first connect wait for the server as well
        nc = await nats.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                connect_timeout=2, error_cb=on_error, disconnected_cb=on_disconnect,
                                reconnected_cb=on_reconnect)
        js = nc.jetstream()
        while True:
            try:
                await ensure_stream(js)
                break
            except Exception as exc:  # e.g. a server without JetStream: keep spooling, retry
                log.error("NATS %s: cannot set up the event stream (%s); retrying", self.nats_url, exc)
                await asyncio.sleep(5.0)
        self.nc, self.js = nc, js
        log.info("publishing events to %s", self.nats_url)

    async def send(self, messages: Sequence[Message]) -> list:
        """One PubAck per message, None where the publish failed or timed out."""
        if not self.connected:
            return [None] * len(messages)
        js, timeout = self.js, self.timeout_s
        results = await asyncio.gather(
            *(js.publish(m.subject, m.payload, timeout=timeout, headers={"Nats-Msg-Id": m.msg_id})
              for m in messages), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("%d of %d publishes got no PubAck (%s)", len(failed), len(messages),
                        type(failed[0]).__name__)
        return [None if isinstance(r, BaseException) else r for r in results]

    async def publish(self, messages: Sequence[Message]) -> tuple[int, int, int]:
        acks = await self.send(messages) if messages else []
        accepted = sum(1 for a in acks if a is not None)
        duplicates = sum(1 for a in acks if a is not None and a.duplicate)
        unacked = [m for m, a in zip(messages, acks) if a is None]
        if unacked:
            self.observe_depth(await asyncio.to_thread(self.outbox.spool, unacked))
        return accepted, duplicates, len(unacked)

    def observe_depth(self, depth: int) -> None:
        if self.metrics is not None:
            self.metrics.outbox_depth.set(depth)
