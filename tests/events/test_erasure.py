"""Admin.DeleteUser (GDPR erasure) and Admin.SetConsent, end to end: a real nats-server,
real `funnel serve` processes with their ingest worker, real LMDB. The worker-side rules
(tombstone sequence and time, outbox scan) have unit tests in test_units.py."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from kernels.layout import USER_CONSENT
from protos import funnel_pb2, funnel_pb2_grpc
from server.events.erasure import erase_stored, set_consent, tombstone
from server.events.nats_server import subject_for
from server.store import LmdbStore, empty_user_value, push_seen, user_recent_items, user_row_view
from tests.events.helpers import (
    admin_call,
    counters,
    event,
    item_index,
    now_ms,
    stream_last_seq,
    subject_messages,
    user_value,
    wait_applied,
    wait_until,
)
from tests.integration.test_feed import active_users

pytestmark = pytest.mark.integration


def ids(feed) -> list[str]:
    return [i.item_id for i in feed.items]


def ref(user_id: str, tenant: str = "demo") -> funnel_pb2.UserRef:
    return funnel_pb2.UserRef(tenant_id=tenant, user_id=user_id)


def read_tombstone(data_dir: str, tenant: str, user_id: str):
    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.env.begin() as txn:
            return tombstone(txn, store, tenant, user_id)
    finally:
        store.close()


def worker_stream(data_dir: str) -> str:
    """The stream identity the ingest worker stored with its position."""
    from server.events.worker import PROGRESS_KEY

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        with store.env.begin() as txn:
            return json.loads(txn.get(PROGRESS_KEY, db=store.db["progress"]))["stream"]
    finally:
        store.close()


def test_delete_user_erases_events_row_and_feed_and_later_events_start_a_new_user(
        data_dir_copy, nats_server, start_server):
    data_dir, admin_key, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    candidates = active_users(data_dir, 5)
    user = candidates[0]
    bystander = next(u for u in candidates[1:] if subject_for("demo", u) != subject_for("demo", user))

    feed = server.feed(user, api_key, "demo")
    # personalised (level 1 = pre-ranker only, when a loaded box makes the first call miss its budget)
    assert feed.mode == funnel_pb2.MODE_PERSONALIZED and feed.degradation_level <= 1
    clicked = ids(feed)[:3]
    t = now_ms()
    resp = server.ingest([event(user, item, funnel_pb2.CLICK, t + k) for k, item in enumerate(clicked)]
                         + [event(bystander, clicked[0], funnel_pb2.CLICK, t)], api_key, "demo")
    assert resp.accepted == 4
    wait_applied(data_dir, nats_server.url)
    subject = subject_for("demo", user)
    assert subject_messages(nats_server.url, subject) == 3
    assert not set(clicked) & set(ids(server.feed(user, api_key, "demo")))  # the seen filter has them
    bystander_value = user_value(data_dir, "demo", bystander)
    cursor = server.feed(user, api_key, "demo").next_cursor
    bystander_cursor = server.feed(bystander, api_key, "demo").next_cursor
    assert cursor and bystander_cursor

    erasure = admin_call(server, admin_key, "DeleteUser", ref(user))
    assert erasure.user_id == user and erasure.had_features
    assert (erasure.events_purged, erasure.outbox_removed) == (3, 0)
    assert erasure.erased_through_seq == stream_last_seq(nats_server.url) >= 4
    assert erasure.erased_at_ms >= t
    # the row, the user's stream messages and their signals are gone; the bystander keeps everything
    assert user_value(data_dir, "demo", user) is None
    assert subject_messages(nats_server.url, subject) == 0
    assert subject_messages(nats_server.url, subject_for("demo", bystander)) == 1
    assert user_value(data_dir, "demo", bystander) == bystander_value
    assert not admin_call(server, admin_key, "GetUserSignals", ref(user)).known
    stone = read_tombstone(data_dir, "demo", user)
    assert (stone.seq, stone.at_ms) == (erasure.erased_through_seq, erasure.erased_at_ms)
    assert stone.stream == worker_stream(data_dir) != ""  # the sequence rule binds the worker's stream

    # the rest of a ranking computed before the erasure is not served; the bystander's is
    with pytest.raises(grpc.RpcError) as err:
        server.feed(user, api_key, "demo", cursor=cursor)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "erased" in err.value.details()
    assert server.feed(bystander, api_key, "demo", cursor=bystander_cursor).items

    # the next feed is a stranger's: nothing from CF, content, the seen ring or a cached ranking
    cold = server.feed(user, api_key, "demo")
    assert server.feed(user, api_key, "demo", cursor=cold.next_cursor).items  # issued after: fine
    assert "seen" not in cold.filtered
    assert not {s for item in cold.items for s in item.sources} & {"cf", "content", "cache"}
    # (retried: the ingest worker's roll-up may move the trending lists between two calls)
    wait_until(lambda: ids(server.feed(user, api_key, "demo")) == ids(server.feed("never-seen", api_key, "demo")),
               5.0, what="the erased user's feed to equal a new user's")

    # erasing again is harmless and purges nothing more
    again = admin_call(server, admin_key, "DeleteUser", ref(user))
    assert (again.had_features, again.events_purged, again.outbox_removed) == (False, 0, 0)

    # later events count from zero, as for a new user
    t2 = max(now_ms(), again.erased_at_ms + 1)
    resp = server.ingest([event(user, clicked[1], funnel_pb2.CLICK, t2),
                          event(user, clicked[2], funnel_pb2.SKIP, t2 + 1)], api_key, "demo")
    assert resp.accepted == 2
    wait_applied(data_dir, nats_server.url)
    value = user_value(data_dir, "demo", user)
    assert counters(value) == (2, 1)
    assert user_recent_items(value, 10).tolist() == [item_index(data_dir, "demo", c) for c in clicked[1:]]
    assert subject_messages(nats_server.url, subject) == 2
    signals = admin_call(server, admin_key, "GetUserSignals", ref(user))
    assert signals.known and signals.personalization_consent and not signals.has_embedding
    assert list(signals.recent_item_ids) == [clicked[2], clicked[1]]


def test_opting_out_serves_a_non_personalised_feed_and_keeps_events_out_until_opting_in(
        data_dir_copy, nats_server, start_server):
    data_dir, admin_key, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    user = active_users(data_dir, 1)[0]
    assert server.feed(user, api_key, "demo").mode == funnel_pb2.MODE_PERSONALIZED

    before = admin_call(server, admin_key, "GetUserSignals", ref(user))
    assert before.known and before.top_categories and before.recent_item_ids
    signals = admin_call(server, admin_key, "SetConsent",
                         funnel_pb2.ConsentRequest(tenant_id="demo", user_id=user, personalized=False))
    assert signals.known and not signals.personalization_consent and not signals.has_embedding
    assert (signals.activity, list(signals.top_categories), list(signals.recent_item_ids)) == (0.0, [], [])
    expected = empty_user_value()
    user_row_view(expected)[USER_CONSENT] = 0.0
    assert user_value(data_dir, "demo", user) == expected  # no feature of the user is kept

    feed = server.feed(user, api_key, "demo")
    assert feed.mode == funnel_pb2.MODE_FALLBACK and feed.degradation_level == 4
    assert {s for item in feed.items for s in item.sources} == {"popular"}
    assert "seen" not in feed.filtered

    opted_out = now_ms()
    resp = server.ingest([event(user, feed.items[0].item_id, funnel_pb2.CLICK, opted_out + 1)], api_key, "demo")
    assert resp.accepted == 1
    wait_applied(data_dir, nats_server.url)
    assert user_value(data_dir, "demo", user) == expected  # counted no_consent, nothing stored

    signals = admin_call(server, admin_key, "SetConsent",
                         funnel_pb2.ConsentRequest(tenant_id="demo", user_id=user, personalized=True))
    assert signals.known and signals.personalization_consent
    t = now_ms() + 1
    resp = server.ingest([event(user, feed.items[1].item_id, funnel_pb2.LIKE, t),
                          # happened while opted out: stays out after the opt-in as well
                          event(user, feed.items[2].item_id, funnel_pb2.LIKE, opted_out)], api_key, "demo")
    assert resp.accepted == 2
    wait_applied(data_dir, nats_server.url)
    value = user_value(data_dir, "demo", user)
    assert counters(value) == (1, 0) and user_row_view(value)[USER_CONSENT] == 1.0
    assert user_recent_items(value, 10).tolist() == [item_index(data_dir, "demo", feed.items[1].item_id)]
    assert feed.items[1].item_id not in ids(server.feed(user, api_key, "demo"))


def test_user_rpcs_reject_bad_input_and_erasure_changes_nothing_while_nats_is_down(
        data_dir_copy, nats_server, start_server):
    data_dir, admin_key, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    user = active_users(data_dir, 1)[0]
    consent = funnel_pb2.ConsentRequest(tenant_id="demo", user_id=user, personalized=False)
    for method, request in (("DeleteUser", ref(user)), ("SetConsent", consent), ("GetUserSignals", ref(user))):
        with pytest.raises(grpc.RpcError) as err:
            admin_call(server, "not-the-admin-key", method, request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        bad = (("", user, grpc.StatusCode.INVALID_ARGUMENT, "tenant_id: required"),
               ("demo", "", grpc.StatusCode.INVALID_ARGUMENT, "user_id: required"),
               ("demo", "u" * 257, grpc.StatusCode.INVALID_ARGUMENT, "user_id: longer than 256 characters"),
               ("nope", user, grpc.StatusCode.NOT_FOUND, "tenant_id: 'nope' does not exist"))
        for tenant_id, user_id, code, message in bad:
            request = type(request)(tenant_id=tenant_id, user_id=user_id)
            with pytest.raises(grpc.RpcError) as err:
                admin_call(server, admin_key, method, request)
            assert (err.value.code(), err.value.details()) == (code, message), (method, tenant_id, user_id)
    assert user_value(data_dir, "demo", user) is not None  # none of that changed anything

    resp = server.ingest([event(user, "1", funnel_pb2.CLICK, now_ms())], api_key, "demo")
    assert resp.accepted == 1
    wait_applied(data_dir, nats_server.url)
    subject = subject_for("demo", user)
    assert subject_messages(nats_server.url, subject) == 1
    value = user_value(data_dir, "demo", user)
    nats_server.stop()
    with pytest.raises(grpc.RpcError) as err:
        admin_call(server, admin_key, "DeleteUser", ref(user), timeout=20)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "retry" in err.value.details()
    assert user_value(data_dir, "demo", user) == value and read_tombstone(data_dir, "demo", user) is None
    nats_server.start()  # same port and store: the server reconnects, the retry erases
    erasure = wait_until(lambda: _try_delete(server, admin_key, user), 20.0, what="DeleteUser after NATS is back")
    assert erasure.had_features and erasure.events_purged == 1
    assert user_value(data_dir, "demo", user) is None and subject_messages(nats_server.url, subject) == 0
    # consent needs no NATS: the store alone
    nats_server.stop()
    signals = admin_call(server, admin_key, "SetConsent", consent)
    assert signals.known and not signals.personalization_consent


def _try_delete(server, admin_key: str, user: str):
    try:
        return admin_call(server, admin_key, "DeleteUser", ref(user))
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


def test_delete_user_on_a_server_without_nats_is_a_failed_precondition(shared_server, trained_data_dir):
    data_dir, admin_key, _ = trained_data_dir
    user = active_users(data_dir, 1)[0]
    with grpc.insecure_channel(shared_server.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            funnel_pb2_grpc.AdminStub(channel).DeleteUser(ref(user), metadata=(("x-admin-key", admin_key),),
                                                          timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert user_value(data_dir, "demo", user) is not None


# ------------------------------------------------------------------ in-process
def _serving(data_dir: str):
    from server.app import ServeSettings, ServingApp

    return ServingApp(ServeSettings(data_dir=data_dir))


def _run(app, funnel, user: str, budget_s: float = 1.0, kill_switch: bool = False):
    """(degradation level, personalised, first 20 items, what the request state used) of
    one request through ``funnel``; read inside the snapshot its views point into."""
    from server.pipeline.state import request_state

    with app.store.snapshot() as snap:
        state = request_state(snap, app.registry.get(snap, "demo"), user, "*", 20, budget_s, kill_switch)
        result = funnel.run(state)
        used = {"known": state.known_user, "personalized": state.personalized, "seen": int(state.seen.size),
                "recent": int(state.recent.size), "row": bool(np.any(state.user_row)),
                "filtered": dict(state.filtered)}
        return result.level, result.personalized, result.ranking.items[:20].tolist(), used


def test_erasure_and_opt_out_invalidate_cached_rankings_in_every_serving_process(data_dir_copy):
    """Two funnels over one store stand for two serving processes: each has its own
    in-memory cache, and only the store connects them (as between processes)."""
    from server.events.worker import Applier
    from server.pipeline.default import default_funnel
    from server.pipeline.funnel import LEVEL_CACHED

    data_dir = data_dir_copy[0]
    app = _serving(data_dir)
    try:
        processes = [app.funnel, default_funnel()]
        user = active_users(data_dir, 1)[0]
        ranked = [_run(app, f, user)[:3] for f in processes]
        assert [r[0] for r in ranked] == [0, 0]
        # an expired budget falls back to the cached ranking in both (proves the check below can fail)
        for funnel, (_, _, items) in zip(processes, ranked):
            level, _, cached, _ = _run(app, funnel, user, budget_s=-1.0)
            assert level == LEVEL_CACHED and cached == items[:len(cached)]

        erase_stored(app.store, "demo", user, seq=0, stream="")  # step 2 of DeleteUser, from neither funnel
        # the user comes back with an event after the erasure: known again, so a cache would be asked
        t = now_ms() + 1
        with app.store.snapshot() as snap:
            item_id = snap.item_meta("demo", ranked[0][2][0])["id"]
        msg = _message("demo", user, item_id, t)
        assert Applier(app.store).apply([(1, msg.subject, msg.payload, t / 1000.0)], "s").applied == 1
        for funnel in processes:
            level, _, _, _ = _run(app, funnel, user, budget_s=-1.0)
            assert level > LEVEL_CACHED
        # a ranking computed after the erasure is cached and served again
        fresh = _run(app, processes[1], user)[2]
        level, _, cached, _ = _run(app, processes[1], user, budget_s=-1.0)
        assert level == LEVEL_CACHED and cached == fresh[:len(cached)]

        set_consent(app.store, "demo", user, False)
        set_consent(app.store, "demo", user, True)
        assert _run(app, processes[1], user, budget_s=-1.0)[0] > LEVEL_CACHED
    finally:
        app.store.close()


def _message(tenant: str, user_id: str, item_id: str, ts_ms: int):
    from server.events.validate import to_message, validate_event

    ev = funnel_pb2.Event(user_id=user_id, item_id=item_id, type=funnel_pb2.CLICK, timestamp_ms=ts_ms)
    return to_message(tenant, validate_event(tenant, ev, now_ms=ts_ms))


def test_an_opted_out_user_is_served_like_a_stranger_with_nothing_of_theirs_used(data_dir_copy):
    """A row with USER_CONSENT 0 that still holds history (e.g. imported that way):
    no CF, content, affinity or seen ring of it is used."""
    data_dir = data_dir_copy[0]
    app = _serving(data_dir)
    try:
        user = active_users(data_dir, 1)[0]
        level, personalized, stranger, _ = _run(app, app.funnel, "never-seen", kill_switch=True)
        assert (level, personalized) == (4, False)
        with app.store.write() as txn:
            value = app.store.get_user_copy(txn, "demo", user)
            user_row_view(value)[USER_CONSENT] = 0.0
            push_seen(value, stranger[:5])  # a seen filter would remove these
            app.store.put_user(txn, "demo", user, value)
        level, personalized, items, used = _run(app, app.funnel, user)
        assert used["known"] and not used["personalized"]
        assert (used["seen"], used["recent"], used["row"]) == (0, 0, False)
        assert (level, personalized) == (4, False)
        assert "seen" not in used["filtered"] and items == stranger
    finally:
        app.store.close()
