"""EventPublisher's batch path (server/events/batch_writer.py) against a real nats-server:
every message is acked by its own PubAck, duplicates are stored once and counted, failures
are spooled, and a nats-server killed mid-batch loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from server.events.batch_writer import BatchWriterUnavailable, JetStreamBatchWriter, PendingReplies
from server.events.nats_server import STREAM, EmbeddedNats, subject_for
from server.events.outbox import Outbox
from server.events.publisher import EventPublisher
from server.events.validate import Message
from server.store import LmdbStore
from tests.events.helpers import probe_connect

pytestmark = pytest.mark.integration


def messages(prefix: str, n: int, users: int = 50) -> list[Message]:
    return [Message(subject_for("t", f"u{k % users}"), f"t:{prefix}-{k}", b"event %d" % k) for k in range(n)]


@pytest.fixture
def outbox(tmp_path):
    store = LmdbStore.open(str(tmp_path / "store"))
    yield Outbox(store)
    store.close()


@pytest.fixture
async def publisher(nats_server, outbox):
    pub = EventPublisher(nats_server.url, outbox)
    await pub.start()
    assert pub.connected
    yield pub
    await pub.close()


async def stored_ids(nats_url: str) -> list[str]:
    """Nats-Msg-Id of every message in the event stream, in stream order."""
    nc = await probe_connect(nats_url)
    try:
        js = nc.jetstream()
        left = (await js.stream_info(STREAM)).state.messages
        sub = await js.pull_subscribe("funnel.events.>", stream=STREAM,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        ids = []
        while left > 0:
            batch = await sub.fetch(min(left, 1000), timeout=5)
            ids += [m.headers["Nats-Msg-Id"] for m in batch]
            left -= len(batch)
        return ids
    finally:
        await nc.close()


async def test_batches_go_through_the_writer_and_duplicates_are_stored_once_and_counted(publisher, nats_server):
    batch = messages("a", 300)
    batch[10] = batch[3]  # the same id twice within one batch
    assert await publisher.publish(batch) == (300, 1, 0)
    assert publisher._writer is not None and not publisher._writer.closed  # not the nats-py fallback
    again = messages("a", 300)[:200] + messages("b", 100)
    assert await publisher.publish(again) == (300, 199, 0)  # a-10 was never stored: new this time
    ids = await stored_ids(nats_server.url)
    assert len(ids) == len(set(ids)) == 400
    assert set(ids) == {m.msg_id for m in messages("a", 300) + messages("b", 100)}
    acks = await publisher.send(messages("c", 3))
    assert [(a.stream, a.seq, a.duplicate) for a in acks] == [(STREAM, 401, None), (STREAM, 402, None),
                                                             (STREAM, 403, None)]


async def test_concurrent_batches_are_pipelined_on_one_connection(publisher, nats_server):
    results = await asyncio.gather(*(publisher.publish(messages(f"p{b}", 500)) for b in range(8)))
    assert results == [(500, 0, 0)] * 8
    assert len(set(await stored_ids(nats_server.url))) == 4000


async def test_unstorable_messages_are_spooled_and_the_rest_of_the_batch_is_acked(publisher, outbox):
    batch = messages("s", 20)
    batch[2] = Message("not.an.event.subject", "t:no-stream", b"x")  # no stream: status 503
    batch[5] = Message("bad subject", "t:bad", b"x")  # would break the protocol line
    batch[7] = Message(batch[7].subject, "t:huge", b"x" * (2 << 20))  # over max_payload
    assert await publisher.publish(batch) == (17, 0, 3)
    assert [m.msg_id for _, m in outbox.peek(10)] == ["t:no-stream", "t:bad", "t:huge"]
    assert not publisher._writer.closed  # none of them cost the connection
    assert await publisher.publish(messages("s2", 5)) == (5, 0, 0)


async def test_the_nats_py_path_takes_over_where_the_writer_cannot_be_used(nats_server, outbox, monkeypatch):
    async def unavailable(*args, **kwargs):
        raise BatchWriterUnavailable("e.g. a TLS server")

    monkeypatch.setattr(JetStreamBatchWriter, "open", unavailable)
    pub = EventPublisher(nats_server.url, outbox)
    await pub.start()
    try:
        batch = messages("f", 50)
        batch[9] = batch[1]
        assert await pub.publish(batch) == (50, 1, 0)
        assert await pub.publish(messages("f", 50)) == (50, 49, 0)
        assert pub._writer is None
    finally:
        await pub.close()


async def test_a_nats_server_killed_mid_batch_loses_nothing(tmp_path, outbox):
    """Every event is either acked (and then in the stream after a restart) or spooled."""
    from tests.conftest import free_port

    nats = EmbeddedNats(str(tmp_path / "nats"), free_port()).start()
    pub = EventPublisher(nats.url, outbox, timeout_s=5.0)
    await pub.start()
    try:
        sent: list[list[Message]] = [messages(f"k{b}", 500, users=1000) for b in range(80)]

        async def caller(lane: int):
            return [await pub.publish(batch) for batch in sent[lane::6]]

        callers = asyncio.gather(*(caller(lane) for lane in range(6)))
        await asyncio.sleep(0.3)  # some batches acked, others in flight
        os.kill(nats.proc.pid, signal.SIGKILL)
        nats.proc.wait()
        results = [r for lane in await callers for r in lane]
        accepted, spooled = sum(r[0] for r in results), sum(r[2] for r in results)
        assert accepted + spooled == 40_000
        assert accepted > 0 and spooled > 0, "the kill did not land mid-load"

        nats.start()  # same store, same port
        ids = set(await stored_ids(nats.url))
        in_outbox = {m.msg_id for _, m in outbox.peek(100_000)}
        assert len(in_outbox) == spooled
        everything = {m.msg_id for batch in sent for m in batch}
        assert ids | in_outbox == everything  # nothing lost
        assert len(ids) >= accepted  # every acked event survived (a spooled one may be stored too)

        # the publisher finds the restarted server again, through the batch writer
        async def published():
            while (result := await pub.publish(messages("after", 10))) != (10, 0, 0):
                await asyncio.sleep(0.2)
            return result

        await asyncio.wait_for(published(), 20)
        assert pub._writer is not None and not pub._writer.closed
    finally:
        await pub.close()
        nats.stop()


class _Transport:
    def __init__(self):
        self.written = []
        self.closed = False

    def write(self, data):
        self.written.append(bytes(data))

    def close(self):
        self.closed = True


def _msg(subject: bytes, payload: bytes, header: bytes = b"") -> bytes:
    if header:
        return b"HMSG %s 1 %d %d\r\n%s%s\r\n" % (subject, len(header), len(header) + len(payload), header, payload)
    return b"MSG %s 1 %d\r\n%s\r\n" % (subject, len(payload), payload)


async def test_replies_split_anywhere_parse_the_same():
    """The frame parser against every split of one stream of server frames into two reads."""
    frames = b"".join([
        _msg(b"_INBOX.abc.0.0", b'{"stream":"S","seq":1}'),  # the one-regex path
        b"PING\r\n",
        _msg(b"_INBOX.abc.0.1", b"", header=b"NATS/1.0 503\r\n\r\n"),  # no stream took the subject
        _msg(b"_INBOX.abc.0.2", b'{"stream":"S","seq":2,"duplicate": true}'),
        _msg(b"_INBOX.abc.0.3", b'{"stream":"S","domain":"hub","seq":3}'),  # through json
        _msg(b"_INBOX.abc.0.4", b'{"error":{"code":400,"err_code":10071,"description":"x"}}'),
        _msg(b"_INBOX.abc.9.0", b'{"stream":"S","seq":4}'),  # a batch that already timed out
        b"+OK\r\n",
    ])
    for cut in range(len(frames) + 1):
        writer = JetStreamBatchWriter()
        writer.connection_made(_Transport())
        writer.use_inbox(b"_INBOX.abc")
        batch = writer._batches[0] = PendingReplies(5, asyncio.get_running_loop())
        writer.data_received(frames[:cut])
        writer.data_received(frames[cut:])
        assert batch.done.done(), cut
        assert batch.acks[0] == (b"S", b"1", None)
        assert batch.acks[2][:2] == (b"S", b"2") and batch.acks[2][2]
        assert batch.acks[3] == (b"S", b"3", None)
        assert batch.failures == {1: "status 503", 4: "API error 10071"}
        assert writer._transport.written == [b"PONG\r\n"] and not writer._transport.closed
        assert writer._rest == b""
