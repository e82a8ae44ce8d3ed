"""In-process pieces of the event path: ids, subjects, the seen ring, the outbox."""

from __future__ import annotations

import hashlib

from kernels.layout import SEEN_CAP
from protos import funnel_pb2
from server.events.nats_server import subject_for, tenant_of
from server.events.outbox import Outbox, decode, encode
from server.events.validate import Message, derive_event_id, to_message, validate_event
from kernels.ingest import touch_seen
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
    assert msg.subject == "funnel.events.acme." + hashlib.sha256(b"alice").hexdigest()[:16]
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


# ------------------------------------------------------------ erasure and consent
def _erasure_store(path, n_items: int = 4):
    """A store with tenant "t" holding items i0..i<n-1> (category k), nothing else."""
    import numpy as np

    from kernels.layout import ITEM_ACTIVE, ITEM_CATEGORY, ITEM_WIDTH

    store = LmdbStore.open(str(path))
    rows = np.zeros((n_items, ITEM_WIDTH), dtype=np.float32)
    rows[:, ITEM_ACTIVE], rows[:, ITEM_CATEGORY] = 1.0, np.arange(n_items)
    with store.write() as txn:
        for k in range(n_items):
            store.put_item_meta(txn, "t", k, f"i{k}", {"title": f"Item {k}", "category": str(k)})
        store.put_item_rows(txn, "t", rows)
        store.set_state(txn, "t", "n_items", n_items)
    return store


def _stream_entry(seq: int, user_id: str, item_id: str, ts_ms: int, tenant: str = "t",
                  etype: int = funnel_pb2.CLICK) -> tuple:
    """(stream sequence, subject, payload, stored_at_s) as the worker's fetch hands them over."""
    ev = validate_event(tenant, funnel_pb2.Event(user_id=user_id, item_id=item_id, type=etype,
                                                 timestamp_ms=ts_ms), now_ms=ts_ms)
    msg = to_message(tenant, ev)
    return seq, msg.subject, msg.payload, ts_ms / 1000.0


def _count(store, user_id: str, tenant: str = "t") -> int | None:
    from kernels.layout import USER_EVENT_COUNT
    from server.store import user_row_view

    with store.env.begin() as txn:
        value = store.get_user_copy(txn, tenant, user_id)
    return None if value is None else int(user_row_view(value)[USER_EVENT_COUNT])


def test_the_worker_skips_what_an_erasure_covers_and_applies_later_events_to_a_new_user(tmp_path):
    from server.events.erasure import erase_stored, invalidated_after, tombstone
    from server.events.worker import Applier

    store = _erasure_store(tmp_path)
    try:
        applier = Applier(store)
        t0 = 1_700_000_000_000
        stats = applier.apply([_stream_entry(1, "u", "i0", t0), _stream_entry(2, "u", "i1", t0 + 1),
                               _stream_entry(3, "v", "i1", t0 + 2)], "s1")
        assert (stats.applied, stats.erased, _count(store, "u"), _count(store, "v")) == (3, 0, 2, 1)
        erased_at = t0 + 10_000
        had_row, removed, stone = erase_stored(store, "t", "u", seq=5, stream="s1", now_ms=erased_at)
        assert (had_row, removed, stone.seq, stone.stream, stone.at_ms) == (True, 0, 5, "s1", erased_at)
        assert _count(store, "u") is None and _count(store, "v") == 1
        with store.env.begin() as txn:
            assert tombstone(txn, store, "t", "u") == stone and tombstone(txn, store, "t", "v") is None
            assert invalidated_after(txn, store, "t", "u") == stone.txn > 0
        stats = applier.apply([
            _stream_entry(4, "u", "i2", erased_at + 5),   # fetched before the purge, applied after: seq <= 5
            _stream_entry(5, "v", "i2", erased_at + 5),   # another user: untouched by u's tombstone
            _stream_entry(6, "u", "i2", erased_at - 1),   # happened before the erasure, reached the stream late
            _stream_entry(7, "u", "i3", erased_at + 9),   # after the erasure: u starts as a new user
        ], "s1")
        assert (stats.erased, stats.applied, stats.last_seq) == (2, 2, 7)
        assert _count(store, "u") == 1 and _count(store, "v") == 2
        with store.env.begin() as txn:
            assert user_recent_items(store.get_user_copy(txn, "t", "u"), 5).tolist() == [3]
        # sequences count per stream: after a stream is recreated, only the time rule remains
        stats = Applier(store).apply([_stream_entry(1, "u", "i0", erased_at + 20),
                                      _stream_entry(2, "u", "i0", erased_at)], "s2")
        assert (stats.applied, stats.erased, _count(store, "u")) == (1, 1, 2)
    finally:
        store.close()


def test_an_erasure_removes_only_that_users_spooled_events(tmp_path):
    from server.events.erasure import erase_stored

    store = _erasure_store(tmp_path)
    try:
        outbox = Outbox(store)

        def spooled(tenant, user_id, item_id):
            ev = validate_event(tenant, funnel_pb2.Event(user_id=user_id, item_id=item_id, type=funnel_pb2.CLICK,
                                                         timestamp_ms=5), now_ms=10)
            return to_message(tenant, ev)

        mine, other = spooled("t", "u", "i0"), spooled("t", "v", "i0")
        # subjects hash user ids: a user sharing u's subject keeps their events
        collision = Message(mine.subject, "t:collide", spooled("t", "w", "i1").payload)
        elsewhere, garbage = spooled("t2", "u", "i0"), Message(mine.subject, "t:bad", b"\xff\x00not an event")
        outbox.spool([mine, other, collision, spooled("t", "u", "i1"), elsewhere, garbage])
        had_row, removed, _ = erase_stored(store, "t", "u", seq=0, stream="")
        assert (had_row, removed) == (False, 2)
        assert [m for _, m in outbox.peek(10)] == [other, collision, elsewhere, garbage]
    finally:
        store.close()


def test_opting_out_clears_the_row_and_keeps_older_events_out_after_opting_in(tmp_path):
    from kernels.layout import USER_CONSENT
    from server.events.erasure import erase_stored, set_consent, tombstone
    from server.events.worker import Applier
    from server.store import user_row_view, user_seen_view

    store = _erasure_store(tmp_path)
    try:
        applier, t0 = Applier(store), 1_700_000_000_000
        applier.apply([_stream_entry(1, "u", "i0", t0)], "s1")
        erase_stored(store, "t", "u", seq=1, stream="s1", now_ms=t0 + 1)
        applier.apply([_stream_entry(2, "u", "i1", t0 + 2), _stream_entry(3, "u", "i2", t0 + 3)], "s1")
        assert _count(store, "u") == 2
        opted_out_at = t0 + 100
        set_consent(store, "t", "u", False, now_ms=opted_out_at)
        with store.env.begin() as txn:
            value = store.get_user_copy(txn, "t", "u")
            stone = tombstone(txn, store, "t", "u")
        expected = empty_user_value()
        user_row_view(expected)[USER_CONSENT] = 0.0
        assert value == expected  # nothing of the user is kept but the opt-out itself
        assert (stone.seq, stone.stream, stone.at_ms) == (1, "s1", opted_out_at)  # the erasure's seq stays
        stats = applier.apply([_stream_entry(4, "u", "i1", opted_out_at + 1)], "s1")
        assert (stats.no_consent, _count(store, "u")) == (1, 0)
        opted_in_at = opted_out_at + 10
        set_consent(store, "t", "u", True, now_ms=opted_in_at)
        stats = applier.apply([_stream_entry(5, "u", "i3", opted_in_at + 1),
                               _stream_entry(6, "u", "i0", opted_out_at - 50),  # before the opt-out
                               _stream_entry(7, "u", "i2", opted_in_at - 5)], "s1")  # while opted out
        assert (stats.applied, stats.erased, _count(store, "u")) == (1, 2, 1)
        with store.env.begin() as txn:
            assert user_seen_view(store.get_user_copy(txn, "t", "u")).tolist() == [3]
        set_consent(store, "t", "nobody", True)  # opting in needs no row: personalised is the default
        with store.env.begin() as txn:
            assert store.get_user_copy(txn, "t", "nobody") is None and tombstone(txn, store, "t", "nobody") is None
    finally:
        store.close()


def test_a_read_only_store_opens_a_data_dir_older_than_the_erased_db(tmp_path):
    import lmdb

    from server.events.erasure import tombstone

    env = lmdb.open(str(tmp_path / "store"), max_dbs=4)
    env.open_db(b"users")
    env.close()
    store = LmdbStore.open(str(tmp_path), readonly=True)
    try:
        assert "erased" not in store.db
        with store.env.begin() as txn:
            assert tombstone(txn, store, "t", "u") is None
    finally:
        store.close()


def test_touch_seen_matches_a_plain_list_model_on_random_sequences():
    import random

    rng = random.Random(3)
    for _ in range(20):
        value, model = empty_user_value(), []
        for _ in range(rng.randrange(1, 900)):
            index = rng.randrange(rng.choice((5, 50, 400)))
            touch_seen(value, index)
            if index in model:
                model.remove(index)
            model.append(index)
            del model[:-SEEN_CAP]
        assert user_recent_items(value, SEEN_CAP).tolist() == model
