"""The local durable outbox: events that got no PubAck wait here for NATS.

db ``outbox``: key = big-endian u64 sequence (strictly increasing, never
reused: the high-water mark is kept in db ``progress`` under ``b"outbox"``),
value = ``>HH`` lengths of subject and msg id, subject, msg id, serialized
Event. Every serving process may spool (LMDB serialises writers across
processes); one :class:`Forwarder` (serving worker 0) drains it in key order.
A crash between a forward publish and the delete republishes the message with
the same ``Nats-Msg-Id``, which JetStream drops within its duplicate window.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Sequence

from server.events.validate import Message

log = logging.getLogger("funnel.events")
_HEADER = struct.Struct(">HH")
_SEQ = struct.Struct(">Q")
_HIGH_WATER = b"outbox"


def encode(message: Message) -> bytes:
    subject, msg_id = message.subject.encode(), message.msg_id.encode()
    return _HEADER.pack(len(subject), len(msg_id)) + subject + msg_id + message.payload


def decode(value: bytes) -> Message:
    n_subject, n_id = _HEADER.unpack_from(value)
    at = _HEADER.size
    return Message(value[at:at + n_subject].decode(), value[at + n_subject:at + n_subject + n_id].decode(),
                   bytes(value[at + n_subject + n_id:]))


class Outbox:
    """Typed access to db ``outbox`` of an :class:`server.store.LmdbStore`
    (opened with ``sync=True``, so a committed spool survives a power cut)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db["outbox"]

    def spool(self, messages: Sequence[Message]) -> int:
        """Appends ``messages`` in order in one write transaction; returns the depth after it."""
        progress = self.store.db["progress"]
        with self.store.write() as txn:
            raw = txn.get(_HIGH_WATER, db=progress)
            seq = _SEQ.unpack(raw)[0] if raw is not None else 0
            for message in messages:
                seq += 1
                txn.put(_SEQ.pack(seq), encode(message), db=self.db, append=True)
            txn.put(_HIGH_WATER, _SEQ.pack(seq), db=progress)
            return txn.stat(self.db)["entries"]

    def peek(self, limit: int) -> list[tuple[int, Message]]:
        """The oldest ``limit`` entries as (sequence, message)."""
        out = []
        with self.store.env.begin() as txn:
            for key, value in txn.cursor(db=self.db):
                out.append((_SEQ.unpack(key)[0], decode(value)))
                if len(out) >= limit:
                    break
        return out

    def delete(self, seqs: Sequence[int]) -> int:
        """Removes the given entries in one write transaction; returns the depth after it."""
        with self.store.write() as txn:
            for seq in seqs:
                txn.delete(_SEQ.pack(seq), db=self.db)
            return txn.stat(self.db)["entries"]

    def depth(self) -> int:
        with self.store.env.begin() as txn:
            return txn.stat(self.db)["entries"]


class Forwarder:
    """Drains the outbox while NATS is reachable: publishes up to ``batch``
    entries at a time in key order (pipelined, each with its ``Nats-Msg-Id``)
    and deletes those that got a PubAck. Polls every ``idle_s`` while the
    outbox is empty or NATS is down; backs off the same after a failed publish."""

    def __init__(self, outbox: Outbox, publisher, batch: int = 500, idle_s: float = 0.5):
        self.outbox, self.publisher = outbox, publisher
        self.batch, self.idle_s = batch, idle_s
        self.forwarded = 0

    async def run(self) -> None:
        while True:
            depth = self.outbox.depth()
            self.publisher.observe_depth(depth)
            if not depth or not self.publisher.connected:
                await asyncio.sleep(self.idle_s)
                continue
            pending = self.outbox.peek(self.batch)
            acks = await self.publisher.send([m for _, m in pending])
            done = [seq for (seq, _), ack in zip(pending, acks) if ack is not None]
            if done:
                depth = await asyncio.to_thread(self.outbox.delete, done)
                self.publisher.observe_depth(depth)
                self.forwarded += len(done)
                log.info("forwarded %d spooled events to JetStream (%d left in the outbox)", len(done), depth)
            if len(done) < len(pending):
                await asyncio.sleep(self.idle_s)
