"""FUNNEL_EVENTS retention: the worker sets the stream's limits; a full stream refuses new
events, which spool and arrive once the cap allows; events that expire before the worker
applies them are counted, not silently passed over."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

from protos import funnel_pb2
from server.events.nats_server import STREAM, ensure_event_stream, ensure_stream, stream_config
from tests.conftest import free_port
from tests.events.helpers import (
    applied_seq,
    counters,
    event,
    now_ms,
    outbox_depth,
    probe_connect,
    user_value,
    wait_applied,
    wait_until,
)

pytestmark = pytest.mark.integration


def _stream(nats_url: str, fn):
    async def run():
        nc = await probe_connect(nats_url)
        try:
            return await fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


def test_retention_is_created_updated_and_left_alone_when_it_matches(nats_server):
    from nats.js.api import StorageType, StreamConfig

    async def run(js):
        # a stream as earlier versions created it: no limits at all
        await ensure_stream(js, config=StreamConfig(name=STREAM, subjects=["funnel.events.>"],
                                                    storage=StorageType.FILE, duplicate_window=600.0))
        first = await ensure_event_stream(js)
        again = await ensure_event_stream(js)
        capped = await ensure_event_stream(js, max_age_days=0, max_bytes=1 << 20)
        short = await ensure_event_stream(js, max_age_days=60 / 86400)  # a minute: the dedupe window follows
        return first.config, again.config, capped.config, short.config

    first, again, capped, short = _stream(nats_server.url, run)
    assert (first.max_age, first.max_bytes, first.discard) == (30 * 86400.0, -1, "new")
    assert (again.max_age, again.max_bytes) == (first.max_age, first.max_bytes)
    assert (capped.max_age, capped.max_bytes, capped.duplicate_window) == (0.0, 1 << 20, 600.0)
    assert (short.max_age, short.max_bytes, short.duplicate_window) == (60.0, -1, 60.0)
    with pytest.raises(ValueError, match=">= 0"):
        stream_config(max_age_days=-1)
    with pytest.raises(ValueError, match=">= 0"):
        stream_config(max_age_days=float("nan"))


def test_a_full_stream_refuses_events_which_spool_and_are_applied_once_after_the_cap_is_raised(
        small_copy, nats_server, start_server):
    data_dir, key = small_copy
    server = start_server(data_dir, nats_server.url, "--events-max-bytes", "16384")
    wait_until(lambda: _stream(nats_server.url, lambda js: js.stream_info(STREAM)).config.max_bytes == 16384,
               20, interval=0.1, what="the worker to cap the stream")
    t = now_ms() - 60_000
    accepted = spooled = 0
    for b in range(8):
        resp = server.ingest([event("capped", f"i{k % 50}", funnel_pb2.VIEW, t + 50 * b + k,
                                    session_id="s" * 64) for k in range(50)], key, "shop")
        assert len(resp.rejected) == 0 and resp.duplicates == 0
        accepted, spooled = accepted + resp.accepted, spooled + resp.spooled
    assert accepted + spooled == 400
    assert 0 < accepted < 400 and spooled > 0, (accepted, spooled)  # the cap refused some: spooled, not lost
    stored = _stream(nats_server.url, lambda js: js.stream_info(STREAM)).state
    assert stored.bytes <= 16384 and stored.messages == accepted
    assert outbox_depth(data_dir) == spooled
    server.stop()

    server = start_server(data_dir, nats_server.url)  # default retention: no cap, the worker lifts it
    wait_until(lambda: outbox_depth(data_dir) == 0, 30, interval=0.1, what="the outbox to drain")
    wait_applied(data_dir, nats_server.url)
    assert counters(user_value(data_dir, "shop", "capped")) == (400, 0)
    assert _stream(nats_server.url, lambda js: js.stream_info(STREAM)).state.messages == 400


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def test_events_that_expire_before_they_are_applied_are_counted_missing(small_copy, nats_server, start_server,
                                                                        start_proc):
    data_dir, key = small_copy
    server = start_server(data_dir, nats_server.url, "--no-ingest")
    worker = start_proc("ingest-0", ["ingest", "--data-dir", data_dir, "--nats", nats_server.url])
    assert server.ingest([event("kept", "i1", funnel_pb2.VIEW, now_ms())], key, "shop").accepted == 1
    last = wait_applied(data_dir, nats_server.url)
    assert worker.stop() == 0

    resp = server.ingest([event("expired", f"i{k}", funnel_pb2.CLICK, now_ms()) for k in range(5)], key, "shop")
    assert resp.accepted == 5
    one_second = 1 / 86400
    _stream(nats_server.url, lambda js: ensure_event_stream(js, max_age_days=one_second))
    wait_until(lambda: _stream(nats_server.url, lambda js: js.stream_info(STREAM)).state.messages == 0,
               20, interval=0.1, what="the events to expire")

    port = free_port()
    worker = start_proc("ingest-1", ["ingest", "--data-dir", data_dir, "--nats", nats_server.url,
                                     "--events-max-age-days", repr(one_second), "--metrics-port", str(port)])
    wait_until(lambda: "consuming FUNNEL_EVENTS" in worker.log(), 20, interval=0.1, what="the worker to start")
    assert _metric(port, "funnel_ingest_missing_total") == 5.0
    assert "5 events were removed unapplied" in worker.log()
    assert user_value(data_dir, "shop", "expired") is None
    assert applied_seq(data_dir) == last
