"""In-process pieces of the event path: ids, subjects, the seen ring, the outbox."""

from __future__ import annotations

import hashlib

from kernels.layout import SEEN_CAP
from protos import funnel_pb2
from server.events.nats_server import subject_for, tenant_of
from server.events.outbox import Outbox, decode, encode
from server.events.validate import Message, derive_event_id, to_message, validate_event
from server.events.worker import touch_seen
from server.store import LmdbStore, empty_user_value, user_recent_items


def test_derived_event_ids_are_stable_and_depend_on_every_field():
    ev = funnel_pb2.Event(user_id="u", item_id="i", type=funnel_pb2.CLICK, timestamp_ms=5, request_id="r",
                          session_id="s")
    first = validate_event("t", ev, now_ms=10)
    assert first["event_id"] == validate_event("t", ev, now_ms=99)["event_id"]
    assert len(first["event_id"]) == 32
    base = ("t", "u", "i", funnel_pb2.CLICK, 5, "r", "s")
    ids = {derive_event_id(*base)}
    for k, changed in enumerate(("t2", "u2", "i2", funnel_pb2.VIEW, 6, "r2", "s2")):
        ids.add(derive_event_id(*base[:k], changed, *base[k + 1:]))
    assert len(ids) == 8
    # no ambiguity from concatenation
    assert derive_event_id("t", "ab", "c", 1, 1, "", "") != derive_event_id("t", "a", "bc", 1, 1, "", "")
    assert validate_event("t", funnel_pb2.Event(event_id="mine", user_id="u", item_id="i", type=1,
                                                timestamp_ms=5), 10)["event_id"] == "mine"


def test_messages_carry_tenant_scoped_ids_and_per_user_subjects():
    ev = validate_event("acme", funnel_pb2.Event(event_id="e1", user_id="alice", item_id="i", type=2,
                                                 timestamp_ms=5), 10)
    msg = to_message("acme", ev)
    assert msg.msg_id == "acme:e1"
    assert msg.subject == "funnel.events.acme." + hashlib.sha1(b"alice").hexdigest()[:8]
    assert msg.subject == subject_for("acme", "alice") and tenant_of(msg.subject) == "acme"
    assert tenant_of("funnel.events.acme") == "" and tenant_of("other.events.acme.x") == ""
    assert funnel_pb2.Event.FromString(msg.payload).event_id == "e1"


def test_touch_seen_keeps_distinct_items_newest_last_and_evicts_the_oldest():
    value = empty_user_value()
    for index in range(300):
        touch_seen(value, index)
    assert user_recent_items(value, SEEN_CAP).tolist() == list(range(300 - SEEN_CAP, 300))
    touch_seen(value, 100)  # present: moves to the newest slot, nothing evicted
    touch_seen(value, 300)  # new: evicts the oldest (44)
    assert user_recent_items(value, SEEN_CAP).tolist() == [i for i in range(45, 300) if i != 100] + [100, 300]
    small = empty_user_value()
    for index in (1, 2, 3, 2):
        touch_seen(small, index)
    assert user_recent_items(small, SEEN_CAP).tolist() == [1, 3, 2]


def test_outbox_spools_in_order_and_never_reuses_a_sequence(tmp_path):
    store = LmdbStore.open(str(tmp_path))
    try:
        outbox = Outbox(store)
        messages = [Message(f"funnel.events.t.{k:08x}", f"t:{k}", bytes([k]) * k) for k in range(5)]
        assert decode(encode(messages[3])) == messages[3]
        assert outbox.spool(messages[:3]) == 3
        assert outbox.spool(messages[3:]) == 5
        pending = outbox.peek(10)
        assert [seq for seq, _ in pending] == [1, 2, 3, 4, 5]
        assert [m for _, m in pending] == messages
        assert outbox.delete([1, 2, 3, 4, 5]) == 0
        outbox.spool(messages[:1])
        assert [seq for seq, _ in outbox.peek(10)] == [6]
    finally:
        store.close()
