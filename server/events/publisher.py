"""JetStream publishing for Events.Ingest, with the outbox as the fallback.

:class:`EventPublisher` keeps one nats-py connection per serving process,
connecting (and reconnecting) in the background; until it is connected, or
when a publish gets no PubAck in ``timeout_s``, events go to the outbox.

Batches are published on a second connection to the same server, a
:class:`server.events.batch_writer.JetStreamBatchWriter`: one buffer of HPUBs per
batch, PubAcks matched off the socket by reply subject (~4 us of client CPU per
event against ~25 us through nats-py). Where that writer cannot be used (a TLS or
nkey/JWT server) or cannot connect just now, the batch goes through nats-py
instead: one ``<inbox>.>`` subscription, message ``i`` of batch ``b`` published
with reply subject ``<inbox>.<b>.<i>``, PubAcks matched back by index. Either way
a message is acked only by its own PubAck.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from nats.js.api import PubAck

from server.events.batch_writer import BatchWriterUnavailable, JetStreamBatchWriter, PendingReplies, parse_pub_ack
from server.events.nats_server import ensure_stream
from server.events.outbox import Outbox
from server.events.validate import Message

log = logging.getLogger("funnel.events")
_MSG_ID = "Nats-Msg-Id"


class EventPublisher:
    """``publish(batch) -> (accepted, duplicates, spooled)``: every message is
    published (pipelined, not one at a time) with header ``Nats-Msg-Id``; the call returns after
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
        self._inbox = ""  # nats-py path: PubAcks of batch b, message i arrive on <inbox>.<b>.<i>
        self._batches: dict[int, PendingReplies] = {}
        self._next_batch = 0
        self._writer: JetStreamBatchWriter | None = None
        self._writer_lock = asyncio.Lock()
        self._writer_unusable = False  # the server speaks something the batch writer does not
        self._writer_retry_at = 0.0

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
        if self._writer is not None:
            self._writer.close()
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
        # nats-py re-subscribes after a reconnect; replies lost meanwhile time out (spooled)
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.>", cb=self._on_reply)
        self._inbox = inbox
        self.nc, self.js = nc, js
        await self._batch_writer()
        log.info("publishing events to %s", self.nats_url)

    async def _batch_writer(self) -> JetStreamBatchWriter | None:
        """The open batch writer, (re)opened on the server nats-py is connected to; None
        while it cannot be opened (then nats-py publishes; a retry after a second)."""
        writer = self._writer
        if writer is not None and not writer.closed:
            return writer
        if self._writer_unusable or self.nc is None:
            return None
        loop = asyncio.get_running_loop()
        if loop.time() < self._writer_retry_at:
            return None
        async with self._writer_lock:
            if self._writer is not None and not self._writer.closed:
                return self._writer
            url = self.nc.connected_url
            if url is None:
                return None
            try:
                if url.scheme not in ("nats", ""):
                    raise BatchWriterUnavailable(f"scheme {url.scheme}")
                self._writer = await JetStreamBatchWriter.open(url.hostname, url.port or 4222, url.username,
                                                               url.password, timeout_s=self.timeout_s)
            except BatchWriterUnavailable as exc:
                log.warning("NATS %s: batches go through nats-py (%s)", self.nats_url, exc)
                self._writer_unusable = True
                return None
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                log.info("NATS %s: batch writer not connected (%s); nats-py publishes meanwhile",
                         self.nats_url, exc)
                self._writer_retry_at = loop.time() + 1.0
                return None
            return self._writer

    async def _on_reply(self, msg) -> None:
        batch, _, index = msg.subject[len(self._inbox) + 1:].partition(".")
        try:
            pending = self._batches.get(int(batch))
            if pending is not None:  # else: a batch that already timed out (its events were spooled)
                status = msg.headers.get("Status") if msg.headers else None
                if status:  # 503: no stream takes the subject
                    pending.settle(int(index), None, f"status {status}")
                else:
                    pending.settle(int(index), *parse_pub_ack(msg.data))
        except ValueError:
            log.debug("unexpected reply subject %s", msg.subject)

    async def send(self, messages: Sequence[Message]) -> list:
        """One PubAck per message, None where the publish failed or got no PubAck
        within ``timeout_s`` of the batch being written."""
        return [None if a is None else PubAck(stream=a[0].decode(), seq=int(a[1]), duplicate=True if a[2] else None)
                for a in await self._send(messages)]

    async def _send(self, messages: Sequence[Message]) -> list:
        """One batch_writer.Ack (stream, seq, duplicate) per message, or None."""
        if not self.connected:
            return [None] * len(messages)
        writer = await self._batch_writer()
        if writer is not None:
            acks, failures, left = await writer.send(messages, self.timeout_s)
        else:
            acks, failures, left = await self._send_nats_py(messages)
        if left or failures:
            reasons = set(failures.values()) | ({"timeout"} if left else set())
            log.warning("%d of %d publishes got no PubAck (%s)", len(failures) + left,
                        len(messages), ", ".join(sorted(reasons)))
        return acks

    async def _send_nats_py(self, messages: Sequence[Message]) -> tuple[list, dict[int, str], int]:
        nc = self.nc
        batch = self._next_batch
        self._next_batch += 1
        pending = self._batches[batch] = PendingReplies(len(messages), asyncio.get_running_loop())
        reply = f"{self._inbox}.{batch}."
        try:
            for index, m in enumerate(messages):
                try:
                    await nc.publish(m.subject, m.payload, reply=reply + str(index), headers={_MSG_ID: m.msg_id})
                except Exception as exc:  # e.g. too large, or the connection went: this one fails
                    pending.settle(index, None, type(exc).__name__)
            try:
                await asyncio.wait_for(pending.done, self.timeout_s)
            except asyncio.TimeoutError:
                pass
        finally:
            del self._batches[batch]
        return pending.acks, pending.failures, pending.left

    async def publish(self, messages: Sequence[Message]) -> tuple[int, int, int]:
        acks = await self._send(messages) if messages else []
        unacked = [m for m, a in zip(messages, acks) if a is None]
        duplicates = sum(1 for a in acks if a is not None and a[2])
        if unacked:
            self.observe_depth(await asyncio.to_thread(self.outbox.spool, unacked))
        return len(messages) - len(unacked), duplicates, len(unacked)

    def observe_depth(self, depth: int) -> None:
        if self.metrics is not None:
            self.metrics.outbox_depth.set(depth)
