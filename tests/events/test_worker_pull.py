"""The worker's own pull path: ack subjects read as nats-py reads them, and a lost
delivery stops the batch instead of being acked by the AckAll after it."""

from __future__ import annotations

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
