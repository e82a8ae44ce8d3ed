"""Events.Ingest against a real server process, a real nats-server and the ingest worker."""

from __future__ import annotations

import math
import shutil

import grpc
import numpy as np
import pytest

from kernels.layout import (
    MAX_CATEGORIES,
    SEEN_CAP,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_SKIP_RATE,
)
from protos import funnel_pb2
from server.events.validate import MAX_BATCH
from server.store import user_recent_items, user_row_view
from tests.conftest import free_port
from tests.events.helpers import (
    EventServer,
    counters,
    event,
    item_category,
    item_index,
    now_ms,
    user_value,
    wait_applied,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(small_data_dir, tmp_path_factory):
    """(server, data_dir, nats_url, api_key): one server for the module's tests."""
    from server.events.nats_server import EmbeddedNats

    root = tmp_path_factory.mktemp("ingest")
    data_dir = str(root / "data")
    shutil.copytree(small_data_dir[0], data_dir)
    nats = EmbeddedNats(str(root / "nats"), free_port()).start()
    server = EventServer(data_dir, nats.url, str(root / "serve.log"))
    yield server, data_dir, nats.url, small_data_dir[1]
    server.stop()
    nats.stop()


def test_malformed_events_get_precise_reasons_and_valid_ones_are_accepted(setup):
    server, _, _, key = setup
    t = now_ms()
    long = "x" * 257
    events = [
        event("v1", "i1", funnel_pb2.CLICK, t),                            # 0 ok
        event("", "i1", funnel_pb2.CLICK, t),                              # 1
        event("v1", "", funnel_pb2.CLICK, t),                              # 2
        event(long, "i1", funnel_pb2.CLICK, t),                            # 3
        event("v1", "i1", funnel_pb2.EVENT_TYPE_UNSPECIFIED, t),           # 4
        event("v1", "i1", 42, t),                                          # 5
        event("v1", "i1", funnel_pb2.CLICK, 0),                            # 6
        event("v1", "i1", funnel_pb2.CLICK, t + 120_000),                  # 7
        event("v1", "i1", funnel_pb2.DWELL, t, watch_time_ms=-1),          # 8
        event("v1", "i1", funnel_pb2.CLICK, t, surface=long),              # 9
        event("v1", "i1", funnel_pb2.CLICK, t, session_id=long),           # 10
        event("v1", "i1", funnel_pb2.CLICK, t, request_id=long),           # 11
        event("v1", "i1", funnel_pb2.CLICK, t, event_id=long),             # 12
        event("v1", "i1", funnel_pb2.CLICK, t, event_id="a\r\nb"),         # 13
        event("v1", "i2", funnel_pb2.VIEW, t + 30_000),                    # 14 ok: within a minute
        event("v1", "i3", funnel_pb2.DWELL, t, watch_time_ms=45_000),      # 15 ok
        event("v1", "i1" * 128, funnel_pb2.IMPRESSION, t),                 # 16 ok: 256 characters
    ]
    resp = server.ingest(events, key, "shop")
    assert {r.index: r.reason for r in resp.rejected} == {
        1: "user_id: required",
        2: "item_id: required",
        3: "user_id: longer than 256 characters",
        4: "type: unspecified event type",
        5: "type: unknown event type 42",
        6: "timestamp_ms: must be positive (milliseconds since the epoch)",
        7: "timestamp_ms: more than 60 s in the future",
        8: "watch_time_ms: negative",
        9: "surface: longer than 256 characters",
        10: "session_id: longer than 256 characters",
        11: "request_id: longer than 256 characters",
        12: "event_id: longer than 256 characters",
        13: "event_id: contains control characters",
    }
    assert (resp.accepted, resp.duplicates, resp.spooled) == (4, 0, 0)


def test_batch_limit_and_authentication(setup):
    server, _, _, key = setup
    t = now_ms()
    too_many = [event("v2", "i1", funnel_pb2.VIEW, t + k) for k in range(MAX_BATCH + 1)]
    with pytest.raises(grpc.RpcError) as exc:
        server.ingest(too_many, key, "shop")
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {MAX_BATCH}" in exc.value.details()
    assert server.ingest(too_many[:MAX_BATCH], key, "shop").accepted == MAX_BATCH
    for tenant, api_key in (("shop", "wrong"), ("nope", key), ("shop", "")):
        with pytest.raises(grpc.RpcError) as exc:
            server.ingest(too_many[:1], api_key, tenant)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_duplicate_event_ids_count_once(setup):
    server, data_dir, nats_url, key = setup
    t = now_ms() - 10_000
    user = "dup-user"
    events = [
        event(user, "i0", funnel_pb2.CLICK, t, event_id="e-1"),
        event(user, "i1", funnel_pb2.VIEW, t + 1, event_id="e-2"),
        event(user, "i2", funnel_pb2.SKIP, t + 2, event_id="e-3"),
        event(user, "i3", funnel_pb2.LIKE, t + 3),                          # derived ids from here
        event(user, "i5", funnel_pb2.DWELL, t + 4, watch_time_ms=10_000),   # weight 1/6: a skip
        event(user, "i0", funnel_pb2.PURCHASE, t + 5, request_id="r1"),
        event(user, "i7", funnel_pb2.IMPRESSION, t + 6),                    # no feature change
        event(user, "no-such-item", funnel_pb2.CLICK, t + 7),               # unknown to the catalog
        event(user, "i0", funnel_pb2.PURCHASE, t + 5, request_id="r1"),     # same derived id twice in one batch
    ]
    first = server.ingest(events, key, "shop")
    assert (first.accepted, first.duplicates, first.spooled, len(first.rejected)) == (9, 1, 0, 0)
    second = server.ingest(events, key, "shop")
    assert (second.accepted, second.duplicates, second.spooled) == (9, 9, 0)
    wait_applied(data_dir, nats_url)

    value = user_value(data_dir, "shop", user)
    count, skips = counters(value)
    assert (count, skips) == (6, 2)
    row = user_row_view(value)
    assert row[USER_ACTIVITY] == np.float32(math.log1p(6))
    assert row[USER_SKIP_RATE] == np.float32(2 / 6)
    # seen ring: distinct items, newest last (i0 moved to the end by its purchase)
    expected = [item_index(data_dir, "shop", i) for i in ("i1", "i2", "i3", "i5", "i0")]
    assert user_recent_items(value, SEEN_CAP).tolist() == expected
    # affinity per category: events milliseconds apart barely decay
    expected_affinity = np.zeros(MAX_CATEGORIES)
    for item_id, weight in (("i0", 0.6), ("i1", 0.5), ("i2", 0.1), ("i3", 0.9), ("i5", 10 / 60), ("i0", 1.0)):
        expected_affinity[item_category(data_dir, "shop", item_id)] += weight
    np.testing.assert_allclose(row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES], expected_affinity, rtol=1e-4)


def test_events_of_a_user_without_consent_change_nothing(setup):
    from kernels.layout import USER_CONSENT
    from server.store import LmdbStore, empty_user_value

    server, data_dir, nats_url, key = setup
    opted_out = empty_user_value()
    user_row_view(opted_out)[USER_CONSENT] = 0.0
    store = LmdbStore.open(data_dir)
    try:
        with store.write() as txn:
            store.put_user(txn, "shop", "opted-out", opted_out)
    finally:
        store.close()
    resp = server.ingest([event("opted-out", "i4", funnel_pb2.CLICK, now_ms())], key, "shop")
    assert resp.accepted == 1
    wait_applied(data_dir, nats_url)
    assert user_value(data_dir, "shop", "opted-out") == opted_out
