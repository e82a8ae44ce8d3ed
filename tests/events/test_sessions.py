"""Session items from events, end to end: events with a session_id build the user's
current session (ingest worker), GetFeed seeds with it when the request names no session
items (and logs what it used, so replay re-runs it), Admin.GetUserSignals shows it,
and erasure removes it. The session rules themselves: tests/unit/test_sessions.py."""

from __future__ import annotations

import asyncio

import pytest

from protos import funnel_pb2
from server.decisions.stream import find_decision
from tests.events.helpers import admin_call, event, now_ms, probe_connect, wait_applied, wait_until
from tests.integration.test_feed import active_users

pytestmark = pytest.mark.integration


def _signals(server, admin_key: str, user: str) -> funnel_pb2.UserSignals:
    return admin_call(server, admin_key, "GetUserSignals", funnel_pb2.UserRef(tenant_id="demo", user_id=user))


def _logged_session(nats_url: str, request_id: str) -> list[str]:
    async def run():
        nc = await probe_connect(nats_url)
        try:
            scan = await find_decision(nc.jetstream(), request_id, "demo")
            return scan.decision
        finally:
            await nc.close()

    decision = wait_until(lambda: asyncio.run(run()), 20, interval=0.2, what=f"decision {request_id} to be logged")
    return list(decision.feed.context.session_item_ids)


def _feed(server, api_key: str, user: str, **context) -> funnel_pb2.FeedResponse:
    from protos import funnel_pb2_grpc

    md = (("x-tenant-id", "demo"), ("x-api-key", api_key))
    return funnel_pb2_grpc.RecommenderStub(server.channel).GetFeed(
        funnel_pb2.FeedRequest(user_id=user, limit=10, context=funnel_pb2.RequestContext(**context)),
        metadata=md, timeout=10)


def test_session_events_build_the_session_that_feeds_use_and_erasure_removes(data_dir_copy, nats_server,
                                                                              start_server):
    data_dir, admin_key, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    user = active_users(data_dir)[3]
    first = [i.item_id for i in server.feed(user, api_key, "demo").items]
    a, b, c, d, e = first[:5]
    t = now_ms()
    resp = server.ingest([
        event(user, a, funnel_pb2.VIEW, t - 5000, session_id="s1"),
        event(user, b, funnel_pb2.CLICK, t - 4000, session_id="s1"),
        event(user, c, funnel_pb2.IMPRESSION, t - 3000, session_id="s1"),  # not engaged: not a session item
        event(user, d, funnel_pb2.SKIP, t - 2000, session_id="s1"),        # a skip: not a seed either
        event(user, a, funnel_pb2.LIKE, t - 1000, session_id="s1"),        # a again: now the newest
    ], api_key, "demo")
    assert resp.accepted == 5
    wait_applied(data_dir, nats_server.url)
    assert list(_signals(server, admin_key, user).session_item_ids) == [b, a]

    # a feed without session items seeds with the stored session and logs it; one naming another
    # session, or its own items, does not
    used = _feed(server, api_key, user)
    assert _logged_session(nats_server.url, used.request_id) == [b, a]
    assert not {a, b} & {i.item_id for i in used.items}
    other = _feed(server, api_key, user, session_id="s2")
    assert _logged_session(nats_server.url, other.request_id) == []
    named = _feed(server, api_key, user, session_id="s1")
    assert _logged_session(nats_server.url, named.request_id) == [b, a]
    own = _feed(server, api_key, user, session_item_ids=[e])
    assert _logged_session(nats_server.url, own.request_id) == [e]

    # a new session replaces it; a late event of the old one leaves the new one alone
    server.ingest([event(user, e, funnel_pb2.VIEW, t, session_id="s2"),
                   event(user, c, funnel_pb2.VIEW, t - 500, session_id="s1")], api_key, "demo")
    wait_applied(data_dir, nats_server.url)
    assert list(_signals(server, admin_key, user).session_item_ids) == [e]

    admin_call(server, admin_key, "DeleteUser", funnel_pb2.UserRef(tenant_id="demo", user_id=user))
    assert list(_signals(server, admin_key, user).session_item_ids) == []
    after = _feed(server, api_key, user)
    assert _logged_session(nats_server.url, after.request_id) == []
