"""NATS down: Ingest spools to the outbox; NATS back: the forwarder drains it, exactly once."""

from __future__ import annotations

import time

import pytest

from protos import funnel_pb2
from tests.events.helpers import counters, event, now_ms, outbox_depth, user_value, wait_applied, wait_until

pytestmark = pytest.mark.integration


def test_spooled_events_are_forwarded_when_nats_is_back_and_applied_once(small_copy, nats_server, start_server):
    data_dir, key = small_copy
    server = start_server(data_dir, nats_server.url)
    warm = server.ingest([event("spool-warm", "i0", funnel_pb2.VIEW, now_ms())], key, "shop")
    assert warm.accepted == 1
    wait_applied(data_dir, nats_server.url)

    nats_server.stop()
    t = now_ms() - 60_000
    events = [event("spool-user", f"i{k % 20}", funnel_pb2.CLICK if k % 3 else funnel_pb2.SKIP, t + k)
              for k in range(30)]
    started = time.monotonic()
    resp = server.ingest(events, key, "shop")
    assert (resp.accepted, resp.spooled, resp.duplicates, len(resp.rejected)) == (0, 30, 0, 0)
    assert time.monotonic() - started < 5
    assert outbox_depth(data_dir) == 30
    assert user_value(data_dir, "shop", "spool-user") is None

    nats_server.start()
    wait_until(lambda: outbox_depth(data_dir) == 0, 20, interval=0.1, what="the outbox to drain")
    wait_applied(data_dir, nats_server.url)
    assert counters(user_value(data_dir, "shop", "spool-user")) == (30, 10)

    # the forwarder kept every event id: sending the batch again only finds duplicates
    again = server.ingest(events, key, "shop")
    assert (again.accepted, again.duplicates, again.spooled) == (30, 30, 0)
    wait_applied(data_dir, nats_server.url)
    assert counters(user_value(data_dir, "shop", "spool-user")) == (30, 10)


def test_not_serving_until_nats_is_connected_then_the_first_ingest_publishes(small_copy, start_proc, tmp_path):
    """A server whose NATS comes up late reports NOT_SERVING (or no answer) meanwhile, never
    SERVING, so a caller that waits for SERVING gets its first batch published, not spooled."""
    from server.events.nats_server import EmbeddedNats
    from tests.conftest import free_port
    from tests.events.helpers import _health

    data_dir, key = small_copy
    nats_port, port = free_port(), free_port()
    proc = start_proc("serve", ["serve", "--data-dir", data_dir, "--port", str(port), "--workers", "1",
                                "--grace", "2", "--nats", f"nats://127.0.0.1:{nats_port}"])
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert not _health(target), "SERVING before NATS was reachable"
        assert proc.proc.poll() is None, proc.log()
        time.sleep(0.1)
    nats = EmbeddedNats(str(tmp_path / "late-nats"), nats_port).start()
    try:
        wait_until(lambda: _health(target), 30, interval=0.1, what="SERVING after NATS started")
        import grpc

        from protos import funnel_pb2_grpc

        with grpc.insecure_channel(target) as channel:
            resp = funnel_pb2_grpc.EventsStub(channel).Ingest(
                funnel_pb2.IngestRequest(events=[event("late-user", "i1", funnel_pb2.VIEW, now_ms())]),
                metadata=(("x-tenant-id", "shop"), ("x-api-key", key)), timeout=10)
        assert (resp.accepted, resp.spooled) == (1, 0)
    finally:
        proc.stop()
        nats.stop()
