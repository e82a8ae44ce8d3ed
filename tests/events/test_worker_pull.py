"""The worker's own pull path: ack subjects read as nats-py reads them, and a lost
delivery stops the batch instead of being acked by the AckAll after it."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from server.events.worker import IngestWorker, delivery_of

V1 = "$JS.ACK.FUNNEL_EVENTS.funnel-ingest.1.4711.42.1795334227696286983.17"
V2 = "$JS.ACK.hub.ACCHASH.FUNNEL_EVENTS.funnel-ingest.2.4711.42.1795334227696286983.17.rnd"


@pytest.mark.parametrize("reply", [V1, V2])
def test_delivery_of_reads_what_nats_py_metadata_reads(reply):
    meta = Msg.Metadata._from_reply(reply)
    seq, consumer_seq, stored_at = delivery_of(reply.encode())
    assert (seq, consumer_seq) == (meta.sequence.stream, meta.sequence.consumer) == (4711, 42)
    assert stored_at == pytest.approx(meta.timestamp.timestamp(), abs=1e-6)


@pytest.mark.parametrize("reply", [b"_INBOX.abc", b"$JS.ACK.too.short", b"$JS.API.X.a.b.c.d.e.f"])
def test_delivery_of_refuses_what_is_not_a_delivery(reply):
    with pytest.raises(ValueError):
        delivery_of(reply)


def _delivery(seq: int, consumer_seq: int) -> tuple[bytes, bytes, bytes]:
    reply = f"$JS.ACK.FUNNEL_EVENTS.funnel-ingest.1.{seq}.{consumer_seq}.1700000000000000000.0"
    return b"funnel.events.shop.0123456789abcdef", reply.encode(), b"payload"


def test_stream_entries_follow_the_consumer_sequence_and_stop_at_a_gap(tmp_path):
    worker = IngestWorker(str(tmp_path), "nats://127.0.0.1:1")
    entries = worker._stream_entries([_delivery(10, 1), _delivery(12, 2)])  # stream gaps are purges: fine
    assert [(seq, subject, payload) for seq, subject, payload, _ in entries] == [
        (10, b"funnel.events.shop.0123456789abcdef", b"payload"), (12, b"funnel.events.shop.0123456789abcdef",
                                                                   b"payload")]
    assert entries[0][3] == pytest.approx(1_700_000_000.0)
    worker._stream_entries([_delivery(13, 3)])
    with pytest.raises(RuntimeError, match="lost"):
        worker._stream_entries([_delivery(15, 5)])


# ------------------------------------------------------------ the raw inboxes' parser fast path
def _frames() -> bytes:
    ack = b"$JS.ACK.FUNNEL_EVENTS.funnel-ingest.1.%d.%d.1700000000000000000.0"
    out = [b"MSG funnel.events.shop.%016x 1 %s %d\r\n%s\r\n" % (k, ack % (k, k), len(p), p)
           for k, p in enumerate([b"a", b"", b"\r\n\r\nMSG x 1 3\r\n", bytes(range(256))])]
    out.insert(2, b"PING\r\n")                                            # between raw frames
    out.insert(3, b"MSG other.subject 2 _INBOX.r 3\r\nxyz\r\n")           # not a raw inbox
    status = b"NATS/1.0 408 Request Timeout\r\n\r\n"
    out.append(b"HMSG _INBOX.w 1 %d %d\r\n%s\r\n" % (len(status), len(status), status))  # a status
    out.append(b"MSG funnel.events.shop.ffff 1 5\r\nnorep\r\n")            # no reply subject
    out.append(b"MSG  funnel.events.shop.eeee  1  2\r\nhi\r\n")            # unusual spacing
    out.append(b"+OK\r\nPONG\r\n")
    out.append(b"MSG funnel.events.shop.dddd 1 %s 4\r\nlast\r\n" % (ack % (9, 9)))
    return b"".join(out)


class _Nc:
    """The client side the parser calls, recording what it is handed."""

    def __init__(self):
        self.calls = []
        self.raw_inboxes = {1: lambda subject, reply, payload, headers: self.calls.append(
            ("raw", subject, reply, payload, headers))}

    async def _process_msg(self, sid, subject, reply, data, headers):
        take = self.raw_inboxes.get(sid)
        if take is not None:
            take(subject, reply, data, headers)
        else:
            self.calls.append(("msg", sid, bytes(subject), bytes(reply), data, headers))

    async def _process_ping(self):
        self.calls.append(("ping",))

    async def _process_pong(self):
        self.calls.append(("pong",))

    async def _process_err(self, err):
        self.calls.append(("err", err))


def _feed(parser, chunks) -> list:
    async def run():
        for chunk in chunks:
            await parser.parse(chunk)
    asyncio.run(run())
    return parser.nc.calls


def test_raw_parser_hands_over_what_nats_py_parser_does_at_every_split():
    from nats.protocol.parser import Parser

    from server.events.worker import raw_delivery_client

    data = _frames()
    expected = _feed(Parser(_Nc()), [data])
    assert [c[0] for c in expected].count("raw") == 8 and ("ping",) in expected and ("pong",) in expected
    assert ("msg", 2, b"other.subject", b"_INBOX.r", b"xyz", None) in expected
    raw_parser = type(raw_delivery_client()._ps)
    assert raw_parser is not Parser
    got = _feed(raw_parser(_Nc()), [data])
    assert got == expected
    # hashable bytes, as the worker keys its subject cache with them
    assert all(type(x) is bytes for call in got if call[0] == "raw" for x in call[1:4])
    for k in range(1, len(data)):
        assert _feed(raw_parser(_Nc()), [data[:k], data[k:]]) == expected, k
    assert _feed(raw_parser(_Nc()), [data[i:i + 1] for i in range(len(data))]) == expected


def test_raw_parser_removes_a_frame_before_its_callback_raises():
    from server.events.worker import raw_delivery_client

    nc = _Nc()
    seen = []

    def take(subject, reply, payload, headers):
        seen.append(payload)
        if payload == b"boom":
            raise RuntimeError("callback failed")

    nc.raw_inboxes[1] = take
    parser = type(raw_delivery_client()._ps)(nc)
    with pytest.raises(RuntimeError):
        _feed(parser, [b"MSG s 1 2\r\nok\r\nMSG s 1 4\r\nboom\r\nMSG s 1 4\r\nnext\r\n"])
    _feed(parser, [b""])
    assert seen == [b"ok", b"boom", b"next"]  # nothing handed over twice
