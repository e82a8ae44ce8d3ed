"""JetStream publishing of whole batches on a NATS connection of their own.

:class:`JetStreamBatchWriter` speaks the small part of the NATS client protocol a
publisher needs (INFO, CONNECT, SUB, HPUB, MSG/HMSG, PING/PONG, -ERR) on one TCP
connection. Message ``i`` of batch ``b`` is an ``HPUB`` with header
``Nats-Msg-Id`` and reply subject ``<inbox>.<b>.<i>``; a batch is encoded into one
buffer and written in one call, and the PubAcks arriving on ``<inbox>.>`` are
matched off the socket with one regex per reply (no Msg object, queue or task per
message). Why not nats-py for this: its per-message publish checks and its
per-reply dispatch cost ~25 us of CPU per event against ~4 us here
(bench/README.md, "Event ingestion").

Why not JetStream fast-ingest batches (ADR-50, ``allow_batched``, nats-server
2.14+): nats-server 2.15.1 stores a batch's messages with the same CPU per message
as plain publishes (measured: ~19 us either way), saves the client ~1.5 us per
event, and omits duplicate ``Nats-Msg-Id`` messages without saying which (the
batch ack counts them as stored), so Ingest could no longer report duplicates.

Nothing here reconnects: when the connection is lost, every batch still waiting
ends at once with its unacked messages failed, and the owner opens a new writer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from typing import Sequence
from urllib.parse import unquote

log = logging.getLogger("funnel.events")

# A stored message's PubAck as the raw bytes of its fields: (stream, seq, duplicate),
# duplicate being None or a true value. Kept as bytes: the Ingest path only counts them.
Ack = tuple

_HEADER = b"NATS/1.0\r\nNats-Msg-Id: "
_HEADER_OVERHEAD = len(_HEADER) + 4  # + id + "\r\n\r\n"
# a subject token may hold no whitespace or control character; a header value no CR/LF
_BAD_SUBJECT = re.compile("[\x00-\x20\x7f]")
_BAD_HEADER = re.compile("[\r\n]")
_CONTROL_LINE = re.compile(rb"(MSG|HMSG|PING|PONG|\+OK|-ERR|INFO)\b ?([^\r\n]*)\r\n")


class BatchWriterUnavailable(RuntimeError):
    """The server cannot be used this way (TLS or auth this writer does not speak, no headers)."""


class PendingReplies:
    """The replies of one batch: an Ack or the reason it failed, per message index;
    ``done`` resolves when every message has one."""

    __slots__ = ("acks", "failures", "left", "done")

    def __init__(self, n: int, loop):
        self.acks: list = [None] * n
        self.failures: dict[int, str] = {}
        self.left = n
        self.done: asyncio.Future = loop.create_future()
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

    def fail_pending(self, reason: str) -> None:
        for index, ack in enumerate(self.acks):
            if ack is None and index not in self.failures:
                self.failures[index] = reason
        self.left = 0
        if not self.done.done():
            self.done.set_result(None)


# the two PubAcks nats-server sends, matched without json.loads; anything else (a
# domain, an error, another layout) goes through json
_PLAIN_ACK = re.compile(rb'\{"stream":"([^"\\]*)","seq":(\d+)(,"duplicate": ?true)?\}\Z')


def parse_pub_ack(payload: bytes) -> tuple[Ack | None, str]:
    """(Ack, "") for a JetStream publish reply's JSON, or (None, why not): an API error
    or a malformed reply, where ``js.publish`` would raise."""
    plain = _PLAIN_ACK.match(payload)
    if plain is not None:
        return plain.groups(), ""
    try:
        resp = json.loads(payload)
    except ValueError:
        return None, "malformed reply"
    if not isinstance(resp, dict):
        return None, "malformed reply"
    if "error" in resp or "stream" not in resp or "seq" not in resp:
        error = resp.get("error")
        return None, f"API error {error.get('err_code', '') if isinstance(error, dict) else error}"
    return (str(resp["stream"]).encode(), str(resp["seq"]).encode(), resp.get("duplicate") or None), ""


class JetStreamBatchWriter(asyncio.Protocol):
    """``await JetStreamBatchWriter.open(host, port, ...)``, then ``await send(messages,
    timeout_s)`` from any number of tasks: one Ack per message, or None where the message
    was not sent (too large, unusable subject), got an error reply (no stream: status 503,
    an API error), got nothing within ``timeout_s`` of the batch being written, or was
    pending when the connection was lost. A None may still have been stored (its PubAck
    lost); a republish with the same ``Nats-Msg-Id`` is then a duplicate."""

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._info: asyncio.Future = self._loop.create_future()
        self._pong: asyncio.Future | None = None
        self._error = ""
        self._inbox = b""
        self._ack_frame = None
        self._batches: dict[int, PendingReplies] = {}
        self._next_batch = 0
        self.max_payload = 1 << 20
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, user: str | None = None, password: str | None = None,
                   timeout_s: float = 2.0) -> "JetStreamBatchWriter":
        """Connects and authenticates (``user`` alone is a token, as in a NATS URL); raises
        OSError / asyncio.TimeoutError when the server is not reachable,
        :class:`BatchWriterUnavailable` when it cannot be used by this writer."""
        loop = asyncio.get_running_loop()
        _, writer = await asyncio.wait_for(loop.create_connection(cls, host, port), timeout_s)
        try:
            await asyncio.wait_for(writer._handshake(user, password), timeout_s)
        except BaseException:
            writer.close()
            raise
        return writer

    async def _handshake(self, user, password) -> None:
        info = await self._info
        if info.get("tls_required") or not info.get("headers") or info.get("nonce"):
            raise BatchWriterUnavailable("the server wants TLS or nkey/JWT auth, or has no headers")
        self.max_payload = int(info.get("max_payload", self.max_payload))
        connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
                   "protocol": 1, "lang": "python", "version": "funnel", "name": "funnel-ingest"}
        if user is not None and password is not None:
            connect.update(user=unquote(user), **{"pass": unquote(password)})
        elif user is not None:
            connect["auth_token"] = unquote(user)
        self.use_inbox(f"_INBOX.{secrets.token_hex(11)}".encode())
        self._pong = self._loop.create_future()
        # the PONG confirms both the CONNECT and the SUB (or an -ERR came first)
        self._transport.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nSUB " + self._inbox
                              + b".> 1\r\nPING\r\n")
        await self._pong
        if self._error:
            raise BatchWriterUnavailable(self._error)

    def use_inbox(self, inbox: bytes) -> None:
        """Replies are expected on ``<inbox>.<batch>.<index>`` (subscribed at the handshake)."""
        self._inbox = inbox
        self._ack_frame = re.compile(
            rb"MSG " + re.escape(inbox) +
            rb'\.(\d+)\.(\d+) 1 \d+\r\n\{"stream":"([^"\\]*)","seq":(\d+)(,"duplicate": ?true)?\}\r\n')

    # -- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        reason = f"connection lost ({exc or 'closed'})"
        for future in (self._info, self._pong):
            if future is not None and not future.done():
                future.set_exception(ConnectionError(self._error or reason))
        for batch in list(self._batches.values()):
            batch.fail_pending(reason)

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        pos = self._parse(data)
        self._rest = data[pos:]

    def _parse(self, data: bytes) -> int:
        """Handles every complete frame of ``data``; returns where the incomplete rest begins."""
        end = len(data)
        pos = 0
        ack_frame, batches = self._ack_frame, self._batches
        while pos < end:
            if ack_frame is not None:
                # the common case, one regex per PubAck: MSG <inbox>.<b>.<i> 1 <n>\r\n{"stream":..,"seq":..}\r\n
                m = ack_frame.match(data, pos)
                if m is not None:
                    batch = batches.get(int(m.group(1)))
                    if batch is not None:  # else a batch that already timed out (its events were spooled)
                        batch.settle(int(m.group(2)), m.group(3, 4, 5))
                    pos = m.end()
                    continue
            line = _CONTROL_LINE.match(data, pos)
            if line is None:
                if data.find(b"\r\n", pos) < 0:
                    return pos  # an incomplete control line
                log.warning("NATS batch writer: unexpected protocol line %r", data[pos:pos + 80])
                self._transport.close()
                return end
            op, args = line.group(1), line.group(2)
            body = line.end()
            if op == b"MSG" or op == b"HMSG":
                fields = args.split()
                n_header = int(fields[-2]) if op == b"HMSG" else 0
                size = int(fields[-1])
                if body + size + 2 > end:
                    return pos  # the payload has not all arrived
                self._on_reply(fields[0], data[body:body + n_header], data[body + n_header:body + size])
                pos = body + size + 2
                continue
            pos = body
            if op == b"PING":
                self._transport.write(b"PONG\r\n")
            elif op == b"PONG":
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
            elif op == b"INFO":
                if not self._info.done():
                    self._info.set_result(json.loads(args))
            elif op == b"-ERR":
                # e.g. an authorization violation during CONNECT (the server then closes)
                self._error = args.decode(errors="replace")
                log.warning("NATS batch writer: -ERR %s", self._error)
                if self._pong is not None and not self._pong.done():
                    self._pong.set_result(None)
        return pos

    def _on_reply(self, subject: bytes, headers: bytes, payload: bytes) -> None:
        batch, _, index = subject[len(self._inbox) + 1:].partition(b".")
        try:
            pending = self._batches.get(int(batch))
            index = int(index)
        except ValueError:
            log.debug("unexpected reply subject %r", subject)
            return
        if pending is None:
            return
        if headers:
            status = headers.split(b"\r\n", 1)[0][len(b"NATS/1.0"):].strip()
            if status:  # 503: no stream takes the subject
                pending.settle(index, None, f"status {status.decode(errors='replace')}")
                return
        pending.settle(index, *parse_pub_ack(payload))

    # -- publishing

    async def send(self, messages: Sequence, timeout_s: float) -> tuple[list, dict[int, str], int]:
        """Publishes ``messages`` (``.subject``, ``.msg_id``, ``.payload``) as one write and
        waits up to ``timeout_s`` for their PubAcks: (acks, failure reason per index, number
        that got no reply in time)."""
        batch_no = self._next_batch
        self._next_batch += 1
        batch = self._batches[batch_no] = PendingReplies(len(messages), self._loop)
        try:
            if self.closed:
                batch.fail_pending("connection closed")
            else:
                self._transport.write(self._encode(batch_no, batch, messages))
            try:
                await asyncio.wait_for(batch.done, timeout_s)
            except asyncio.TimeoutError:
                pass
        finally:
            del self._batches[batch_no]
        return batch.acks, batch.failures, batch.left

    def _encode(self, batch_no: int, batch: PendingReplies, messages: Sequence) -> bytes:
        reply = b"%s.%d." % (self._inbox, batch_no)
        max_payload = self.max_payload
        # one scan over the whole batch; per message only when it finds something
        check_each = (_BAD_SUBJECT.search(".".join([m.subject for m in messages])) is not None
                      or _BAD_HEADER.search("".join([m.msg_id for m in messages])) is not None)
        frames = []
        for index, m in enumerate(messages):
            subject, msg_id, payload = m.subject.encode(), m.msg_id.encode(), m.payload
            n_header = _HEADER_OVERHEAD + len(msg_id)
            size = n_header + len(payload)
            if size > max_payload or not subject or (check_each and (
                    _BAD_SUBJECT.search(m.subject) is not None or _BAD_HEADER.search(m.msg_id) is not None)):
                # the server would close the connection (and fail every batch on it) for these
                batch.settle(index, None, "too large" if size > max_payload else "invalid subject or id")
                continue
            frames.append(b"HPUB %b %b%d %d %d\r\n%b%b\r\n\r\n%b\r\n" % (
                subject, reply, index, n_header, size, _HEADER, msg_id, payload))
        return b"".join(frames)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
