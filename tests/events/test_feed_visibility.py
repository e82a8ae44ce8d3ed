"""An ingested click changes the user's next GetFeed (seen filter) within a second."""

from __future__ import annotations

import math
import time

import pytest

from kernels.layout import USER_ACTIVITY
from protos import funnel_pb2
from server.store import user_recent_items, user_row_view
from tests.events.helpers import counters, event, item_index, now_ms, user_value, user_values, wait_applied

pytestmark = pytest.mark.integration


def test_click_removes_the_item_from_the_next_feed_within_a_second(data_dir_copy, nats_server, start_server):
    data_dir, _, api_key = data_dir_copy
    server = start_server(data_dir, nats_server.url)
    # the most active loaded user: a personalised feed and offline-built counters
    user = max(user_values(data_dir, "demo").items(), key=lambda kv: user_row_view(kv[1])[USER_ACTIVITY])[0]
    before = user_value(data_dir, "demo", user)
    offline_count = round(math.expm1(float(user_row_view(before)[USER_ACTIVITY])))
    # the ingest worker is up and consuming before the timed part
    assert server.ingest([event("warm-up", "1", funnel_pb2.IMPRESSION, now_ms())], api_key, "demo").accepted == 1
    wait_applied(data_dir, nats_server.url)

    feed = server.feed(user, api_key, "demo")
    assert feed.mode == funnel_pb2.MODE_PERSONALIZED and len(feed.items) == 20
    clicked = feed.items[0].item_id
    resp = server.ingest([event(user, clicked, funnel_pb2.CLICK, now_ms())], api_key, "demo")
    assert resp.accepted == 1
    acked = time.monotonic()
    while clicked in [i.item_id for i in server.feed(user, api_key, "demo").items]:
        assert time.monotonic() - acked < 1.0, "the click did not reach the feed within 1 s"
        time.sleep(0.01)

    after = user_value(data_dir, "demo", user)
    assert counters(after)[0] == offline_count + 1
    assert user_recent_items(after, 1).tolist() == [item_index(data_dir, "demo", clicked)]


def test_clicks_lift_an_item_into_trending_and_new_users_feeds(small_copy, nats_server, start_server):
    """Item-side counters: clicks on one item reach the trending/popular lists through the
    worker's roll-up, and with them the feeds of users the tenant knows nothing about."""
    from tests.events.helpers import item_list, wait_until

    data_dir, key = small_copy
    server = start_server(data_dir, nats_server.url)
    target = "i150"
    assert target not in [i.item_id for i in server.feed("newcomer-1", key, "shop").items]
    assert item_list(data_dir, "shop", "trending") == []
    t = now_ms()
    resp = server.ingest([event(f"fan-{k}", target, funnel_pb2.CLICK, t + k) for k in range(3)], key, "shop")
    assert resp.accepted == 3
    index = item_index(data_dir, "shop", target)
    wait_until(lambda: item_list(data_dir, "shop", "trending")[:1] == [index], 10,
               what="the roll-up to put the clicked item first in trending")
    assert item_list(data_dir, "shop", "popular")[0] == index
    assert target in [i.item_id for i in server.feed("newcomer-2", key, "shop").items]
