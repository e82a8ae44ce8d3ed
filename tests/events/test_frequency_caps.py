"""Frequency caps end to end: impressions ingested through Events.Ingest reach the
user's impression log (ingest worker) and the next GetFeed removes the capped
item, or every item of a capped sponsored campaign, on the surfaces that cap."""

from __future__ import annotations

import pytest

from protos import funnel_pb2, funnel_pb2_grpc
from tests.events.helpers import event, now_ms, wait_applied

pytestmark = pytest.mark.integration

CAMPAIGN_ITEMS = ("i10", "i11", "i12")


def configure(data_dir: str) -> None:
    """Surface "*" caps an item at 2 impressions an hour; surface "ads" caps campaign
    "summer" (i10, i11, i12) at 2 impressions of any of its items an hour."""
    from server.catalog import CatalogWriter, ValidItem
    from server.store import LmdbStore
    from server.tenancy import SurfaceRules, TenantConfig, TenantRegistry

    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            config = registry.get(snap.txn, "shop")
        surfaces = {"*": SurfaceRules(frequency_cap=2, frequency_window_s=3600),
                    "ads": SurfaceRules(campaign_frequency_cap=2, frequency_window_s=3600)}
        registry.put(TenantConfig.from_json(dict(config.to_json(), surfaces={k: v.__dict__ for k, v in
                                                                              surfaces.items()})))
        CatalogWriter(store).upsert([ValidItem("shop", item_id, f"Promo {item_id}", ["Drama"], 1, "PG", 1_700_000_000,
                                               True, True, 0.0, campaign="summer") for item_id in CAMPAIGN_ITEMS])
    finally:
        store.close()


def feed(server, key: str, user: str, surface: str = "", limit: int = 100):
    md = (("x-tenant-id", "shop"), ("x-api-key", key))
    return funnel_pb2_grpc.RecommenderStub(server.channel).GetFeed(
        funnel_pb2.FeedRequest(user_id=user, surface=surface, limit=limit), metadata=md, timeout=10)


def ids(resp) -> list[str]:
    return [i.item_id for i in resp.items]


def test_item_cap_removes_an_item_after_its_capped_impressions(small_copy, nats_server, start_server):
    data_dir, key = small_copy
    configure(data_dir)
    server = start_server(data_dir, nats_server.url)
    first = feed(server, key, "viewer", limit=20)
    shown, other = first.items[0].item_id, first.items[1].item_id
    t = now_ms()
    assert server.ingest([event("viewer", shown, funnel_pb2.IMPRESSION, t),
                          event("viewer", other, funnel_pb2.IMPRESSION, t)], key, "shop").accepted == 2
    wait_applied(data_dir, nats_server.url)
    after_one = feed(server, key, "viewer", limit=20)
    assert shown in ids(after_one) and other in ids(after_one)  # 1 impression < cap 2

    assert server.ingest([event("viewer", shown, funnel_pb2.IMPRESSION, t + 1)], key, "shop").accepted == 1
    wait_applied(data_dir, nats_server.url)
    capped = feed(server, key, "viewer", limit=20)
    assert shown not in ids(capped) and other in ids(capped)
    assert capped.filtered["frequency_cap"] >= 1
    assert len(capped.items) == 20
    # impressions outside the window do not count
    old = now_ms() - 2 * 3600 * 1000
    server.ingest([event("viewer", other, funnel_pb2.IMPRESSION, old + k) for k in range(3)], key, "shop")
    wait_applied(data_dir, nats_server.url)
    assert other in ids(feed(server, key, "viewer", limit=20))
    # another user is not capped by this user's impressions
    assert shown in ids(feed(server, key, "someone-else", limit=20))


def test_campaign_cap_removes_every_item_of_the_campaign(small_copy, nats_server, start_server):
    data_dir, key = small_copy
    configure(data_dir)
    server = start_server(data_dir, nats_server.url)
    before = feed(server, key, "shopper", surface="ads")
    present = [i for i in CAMPAIGN_ITEMS if i in ids(before)]
    assert present, "the campaign's items should be servable before any cap"
    t = now_ms()
    server.ingest([event("shopper", "i10", funnel_pb2.IMPRESSION, t)], key, "shop")
    wait_applied(data_dir, nats_server.url)
    assert [i for i in CAMPAIGN_ITEMS if i in ids(feed(server, key, "shopper", surface="ads"))] == present
    server.ingest([event("shopper", "i11", funnel_pb2.IMPRESSION, t + 1)], key, "shop")  # 2 for the campaign
    wait_applied(data_dir, nats_server.url)
    capped = feed(server, key, "shopper", surface="ads")
    assert not [i for i in CAMPAIGN_ITEMS if i in ids(capped)]
    assert capped.filtered["frequency_cap"] >= len(present)
    # the "*" surface caps items, not campaigns: one impression each is under its cap of 2
    assert [i for i in CAMPAIGN_ITEMS if i in ids(feed(server, key, "shopper"))] == present


def test_erasure_and_opt_out_drop_the_impression_log(small_copy):
    """The impression log is the user's data too: DeleteUser's store step and an opt-out remove it."""
    from server.events.erasure import erase_stored, set_consent
    from server.events.worker import Applier
    from server.store import LmdbStore
    from tests.events.test_item_counters import batch_of

    data_dir, _ = small_copy
    store = LmdbStore.open(data_dir)
    try:
        t = now_ms() / 1000
        Applier(store).apply(batch_of("shop", [(u, "i3", funnel_pb2.IMPRESSION, t) for u in ("a", "b", "c")]), "s")
        with store.env.begin() as txn:
            assert all(store.get_impressions_copy(txn, "shop", u) is not None for u in "abc")
        erase_stored(store, "shop", "a", 3, "s")
        set_consent(store, "shop", "b", personalized=False)
        with store.env.begin() as txn:
            assert store.get_impressions_copy(txn, "shop", "a") is None
            assert store.get_impressions_copy(txn, "shop", "b") is None
            assert store.get_impressions_copy(txn, "shop", "c") is not None
    finally:
        store.close()
