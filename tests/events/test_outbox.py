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
