"""JetStream publishing for Events.Ingest, with the outbox as the fallback.

:class:`EventPublisher` keeps one nats-py connection per serving process,
connecting (and reconnecting) in the background; until it is connected, or
when a publish gets no PubAck in ``timeout_s``, events go to the outbox.

A JetStream publish is a core NATS publish whose reply subject receives the
PubAck. Rather than one nats-py request (future, timer, task) per message, the
publisher subscribes once to ``<inbox>.>`` and gives message ``i`` of batch
``b`` the reply subject ``<inbox>.<b>.<i>``: a batch is written to the socket in
one go and its PubAcks are matched back by index (2-3x less client CPU per event
than ``js.publish`` under ``asyncio.gather``; bench/README.md, "Event ingestion").
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Sequence

from nats.js.api import PubAck

from server.events.nats_server import ensure_stream
from server.events.outbox import Outbox
from server.events.validate import Message

log = logging.getLogger("funnel.events")
_MSG_ID = "Nats-Msg-Id"


class _PendingAcks:
    """The replies of one batch: a PubAck or the reason it failed, per message index."""

    __slots__ = ("acks", "failures", "left", "done")

    def __init__(self, n: int):
        self.acks: list = [None] * n
        self.failures: dict[int, str] = {}
        self.left = n
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()
        if n == 0:
            self.done.set_result(None)

    def settle(self, index: int, ack, failure: str = "") -> None:
        if not 0 <= index < len(self.acks) or self.acks[index] is not None or index in self.failures:
            return  # not ours, or a second reply for the same message
        if ack is None:
            self.failures[index] = failure
        else:
            self.acks[index] = ack
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


# the two PubAcks nats-server sends here, matched without json.loads (a third of the
# reply cost); anything else (a domain, an error, another layout) goes through json
_PLAIN_ACK = re.compile(rb'\{"stream":"([^"\\]*)","seq":(\d+)(,"duplicate": ?true)?\}\Z')


def pub_ack(msg) -> tuple[PubAck | None, str]:
    """(PubAck, "") for a JetStream publish reply, or (None, why not): a status
    reply (503: no stream took the subject) or an API error, as ``js.publish`` raises."""
    if msg.headers and msg.headers.get("Status"):
        return None, f"status {msg.headers.get('Status')}"
    plain = _PLAIN_ACK.match(msg.data)
    if plain is not None:
        return PubAck(stream=plain.group(1).decode(), seq=int(plain.group(2)),
                      duplicate=True if plain.group(3) else None), ""
    try:
        resp = json.loads(msg.data)
    except ValueError:
        return None, "malformed reply"
    if not isinstance(resp, dict):
        return None, "malformed reply"
    if "error" in resp or "stream" not in resp or "seq" not in resp:
        error = resp.get("error")
        return None, f"API error {error.get('err_code', '') if isinstance(error, dict) else error}"
    return PubAck.from_response(resp), ""


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
        self._inbox = ""  # PubAcks of batch b, message i arrive on <inbox>.<b>.<i>
        self._batches: dict[int, _PendingAcks] = {}
        self._next_batch = 0

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
        # nats-py re-subscribes after a reconnect; replies lost meanwhile time out (spooled)
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.>", cb=self._on_reply)
        self._inbox = inbox
        self.nc, self.js = nc, js
        log.info("publishing events to %s", self.nats_url)

    async def _on_reply(self, msg) -> None:
        batch, _, index = msg.subject[len(self._inbox) + 1:].partition(".")
        try:
            pending = self._batches.get(int(batch))
            if pending is not None:  # else: a batch that already timed out (its events were spooled)
                pending.settle(int(index), *pub_ack(msg))
        except ValueError:
            log.debug("unexpected reply subject %s", msg.subject)

    async def send(self, messages: Sequence[Message]) -> list:
        """One PubAck per message, None where the publish failed or got no PubAck
        within ``timeout_s`` of the batch being written."""
        if not self.connected:
            return [None] * len(messages)
        nc = self.nc
        batch = self._next_batch
        self._next_batch += 1
        pending = self._batches[batch] = _PendingAcks(len(messages))
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
        if pending.left or pending.failures:
            reasons = set(pending.failures.values()) | ({"timeout"} if pending.left else set())
            log.warning("%d of %d publishes got no PubAck (%s)", len(pending.failures) + pending.left,
                        len(messages), ", ".join(sorted(reasons)))
        return pending.acks

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
