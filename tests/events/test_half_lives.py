"""Per-tenant half-lives on the event path, against real LMDB stores: the worker decays
each event with its own tenant's affinity and trending half-lives and follows a new
config version from the next batch on, the roll-up decays the trending lists with the
tenant's trending half-life, and Admin.UpsertTenant (a real in-process gRPC server)
validates, versions and restores them."""

from __future__ import annotations

import dataclasses
import json
import math

import grpc
import numpy as np
import pytest

from kernels.layout import ITEM_CATEGORY, STAT_EVENTS, STAT_TREND, USER_AFFINITY
from ops.catalog import EVENT_WEIGHTS as W
from ops.features import DAY_SECONDS as DAY
from protos import funnel_pb2, funnel_pb2_grpc
from server.events.rollup import RollUp
from server.events.worker import Applier
from server.store import LmdbStore, user_row_view
from server.tenancy import TenantConfig, TenantRegistry
from tests.events.conftest import CATEGORIES
from tests.events.test_item_counters import batch_of, stats_of

T0 = 1_700_000_000  # now_ts of the small data directory's tenants
CLICK, LIKE, VIEW = funnel_pb2.CLICK, funnel_pb2.LIKE, funnel_pb2.VIEW


def since(t_last: float, t: float) -> float:
    """Seconds the user's affinity decays over from its reference (the last event, kept as
    float32 days: USER_LAST_ACTIVE_DAYS, never before the tenant clock T0) to ``t``."""
    return t - max(float(np.float32(t_last / DAY)) * DAY, T0)


def set_half_lives(store: LmdbStore, tenant: str, **values) -> TenantConfig:
    registry = TenantRegistry(store)
    with store.snapshot() as snap:
        current = registry.get(snap.txn, tenant) or TenantConfig(tenant_id=tenant)
    return registry.put(dataclasses.replace(current, **values))


def affinity(store: LmdbStore, tenant: str, user_id: str, item_id: str) -> float:
    """The user's stored affinity for the category of ``item_id``."""
    with store.snapshot() as snap:
        category = int(snap.item_row(tenant, snap.item_index(tenant, item_id))[ITEM_CATEGORY])
        return float(user_row_view(snap.user(tenant, user_id))[USER_AFFINITY + category])


@pytest.fixture
def store(small_copy, tmp_path):
    """Tenant "shop" (affinity half-life 1 day, trending 2 days) and tenant "calm" (the
    defaults, 30 and 7), each with items i0..i19 over the same categories, clock T0."""
    from ops.load import load_dataset

    data_dir, _ = small_copy
    src = tmp_path / "calm-items"
    src.mkdir()
    with open(src / "items.jsonl", "w") as f:
        for k in range(20):
            f.write(json.dumps({"item_id": f"i{k}", "title": f"Item {k}", "categories": [CATEGORIES[k % 5]],
                                "maturity_rating": "PG", "created_at": T0 + k}) + "\n")
    load_dataset(data_dir, "calm", str(src), now_ts=T0, progress=False)
    s = LmdbStore.open(data_dir)
    set_half_lives(s, "calm")
    set_half_lives(s, "shop", affinity_half_life_days=1.0, trending_half_life_days=2.0)
    yield s
    s.close()


def test_each_event_decays_with_its_own_tenants_half_lives(store):
    applier = Applier(store)
    # i0, i5, i10 share a category; the same events reach both tenants, in the same batches
    first = [("u", "i0", CLICK, T0)]
    later = [("u", "i5", LIKE, T0 + 3 * DAY), ("v", "i0", VIEW, T0 + 3 * DAY)]
    assert applier.apply(batch_of("shop", first, 1) + batch_of("calm", first, 2), "s").applied == 2
    assert applier.apply(batch_of("calm", later, 3) + batch_of("shop", later, 5), "s").applied == 4

    # three days apart: the first click is worth 2**-3 of itself for "shop", 2**(-3/30) for "calm"
    gap = since(T0, T0 + 3 * DAY)
    assert affinity(store, "shop", "u", "i5") == pytest.approx(W["click"] * 2 ** (-gap / DAY) + W["like"], rel=1e-6)
    assert affinity(store, "calm", "u", "i5") == pytest.approx(W["click"] * 2 ** (-gap / (30 * DAY)) + W["like"],
                                                               rel=1e-6)
    assert affinity(store, "shop", "u", "i5") < 0.8 * affinity(store, "calm", "u", "i5")
    # the item counters of i0 (click at T0, view three days later): trending half-life 2 days vs 7
    assert stats_of(store, "shop", "i0")[STAT_TREND] == pytest.approx(W["click"] * 2 ** -1.5 + W["view"], rel=1e-12)
    assert stats_of(store, "calm", "i0")[STAT_TREND] == pytest.approx(W["click"] * 2 ** (-3 / 7) + W["view"],
                                                                      rel=1e-12)
    assert stats_of(store, "shop", "i0")[STAT_EVENTS + CLICK] == pytest.approx(2 ** -1.5, rel=1e-12)


def test_a_new_config_version_applies_to_the_events_applied_after_it(store):
    applier = Applier(store)
    applier.apply(batch_of("shop", [("u", "i0", CLICK, T0)]), "s")
    applier.apply(batch_of("shop", [("u", "i5", LIKE, T0 + 3 * DAY)], 2), "s")
    before = W["click"] * 2 ** (-since(T0, T0 + 3 * DAY) / DAY) + W["like"]
    assert affinity(store, "shop", "u", "i5") == pytest.approx(before, rel=1e-6)

    set_half_lives(store, "shop", affinity_half_life_days=10.0)
    # the stored sum is not recomputed: it decays from its reference time with the new half-life
    applier.apply(batch_of("shop", [("u", "i10", CLICK, T0 + 13 * DAY)], 3), "s")
    after = before * 2 ** (-since(T0 + 3 * DAY, T0 + 13 * DAY) / (10 * DAY)) + W["click"]
    assert affinity(store, "shop", "u", "i10") == pytest.approx(after, rel=1e-6)

    # a restore is a new version too: back to one day
    assert TenantRegistry(store).restore("shop", 2).version == 4  # 1 created, 2 half-lives 1 and 2, 3 affinity 10
    applier.apply(batch_of("shop", [("u", "i15", CLICK, T0 + 14 * DAY)], 4), "s")
    restored = after * 2 ** (-since(T0 + 13 * DAY, T0 + 14 * DAY) / DAY) + W["click"]
    assert affinity(store, "shop", "u", "i15") == pytest.approx(restored, rel=1e-6)


def test_a_stored_config_that_does_not_load_keeps_the_last_good_half_lives(store):
    applier = Applier(store)
    applier.apply(batch_of("shop", [("u", "i0", CLICK, T0)]), "s")
    with store.write() as txn:  # written around the Admin API's validation
        doc = store.get_json(txn, "tenants", b"shop")
        store.put_json(txn, "tenants", b"shop", dict(doc, affinity_half_life_days=0.0, version=doc["version"] + 1))
    applier.apply(batch_of("shop", [("u", "i5", LIKE, T0 + 3 * DAY)], 2), "s")
    gap = since(T0, T0 + 3 * DAY)
    assert affinity(store, "shop", "u", "i5") == pytest.approx(W["click"] * 2 ** (-gap / DAY) + W["like"], rel=1e-6)
    assert math.isfinite(affinity(store, "shop", "u", "i5"))


@pytest.mark.parametrize("trending_days, first", [(7.0, "i1"), (1.0, "i2")])
def test_the_rollup_decays_trending_with_the_tenants_half_life(store, trending_days, first):
    """i1 gets 3 clicks two days before the roll-up, i2 one click at it: with 7 days
    i1 leads (1.8 * 2**(-2/7) = 1.48 > 0.6), with 1 day i2 does (1.8 / 4 = 0.45 < 0.6)."""
    set_half_lives(store, "shop", trending_half_life_days=trending_days)
    applier = Applier(store)
    rollup = RollUp(store, applier.counters, half_lives=applier.half_lives)  # as the IngestWorker wires them
    events = [(f"u{k}", "i1", CLICK, T0) for k in range(3)] + [("u9", "i2", CLICK, T0 + 2 * DAY)]
    applier.apply(batch_of("shop", events), "s")
    rollup.run(now_s=T0 + 2 * DAY)
    with store.snapshot() as snap:
        index = {i: snap.item_index("shop", i) for i in ("i1", "i2")}
        assert snap.item_list("shop", "trending").tolist() == [index[first], index[({"i1", "i2"} - {first}).pop()]]


# ------------------------------------------------------------------ Admin API
@pytest.fixture
async def admin(tmp_path):
    """(Admin stub, metadata, app) on an in-process gRPC server over a fresh data directory."""
    from server.app import ServeSettings, ServingApp, init_data_dir
    from server.servicers.admin import AdminServicer
    from tests.conftest import free_port

    data_dir = str(tmp_path / "data")
    admin_key = init_data_dir(data_dir)
    app = ServingApp(ServeSettings(data_dir=data_dir))
    server = grpc.aio.server()
    funnel_pb2_grpc.add_AdminServicer_to_server(AdminServicer(app), server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield funnel_pb2_grpc.AdminStub(channel), (("x-admin-key", admin_key),), app
    finally:
        await channel.close()
        await server.stop(None)
        app.store.close()


@pytest.mark.parametrize("field, value, shown", [
    ("affinity_half_life_days", math.nan, "nan"), ("affinity_half_life_days", math.inf, "inf"),
    ("trending_half_life_days", -1.0, "-1.0"), ("trending_half_life_days", 4000.0, "4000.0"),
])
async def test_upsert_tenant_rejects_bad_half_lives_naming_the_field(admin, field, value, shown):
    stub, amd, _ = admin
    with pytest.raises(grpc.aio.AioRpcError) as err:
        tenant = funnel_pb2.Tenant(tenant_id="t", **{field: value})
        await stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"tenant.{field}: must be within (0, 3650] days, got {shown}"
    with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing was written
        await stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="t"), metadata=amd)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_half_lives_are_versioned_with_the_config_and_restored(admin):
    stub, amd, app = admin

    async def upsert(**fields):
        tenant = funnel_pb2.Tenant(tenant_id="t", **fields)
        return await stub.UpsertTenant(funnel_pb2.UpsertTenantRequest(tenant=tenant), metadata=amd)

    v1 = await upsert(affinity_half_life_days=1.0, trending_half_life_days=2.5)
    assert (v1.version, v1.affinity_half_life_days, v1.trending_half_life_days) == (1, 1.0, 2.5)
    v2 = await upsert()  # proto3 0 = the defaults
    assert (v2.version, v2.affinity_half_life_days, v2.trending_half_life_days) == (2, 30.0, 7.0)
    log = await stub.ListConfigVersions(funnel_pb2.GetTenantRequest(tenant_id="t"), metadata=amd)
    assert log.versions[0].summary == "changed: affinity_half_life_days, trending_half_life_days"
    back = await stub.RestoreConfig(funnel_pb2.RestoreConfigRequest(tenant_id="t", version=1), metadata=amd)
    assert (back.version, back.affinity_half_life_days, back.trending_half_life_days) == (3, 1.0, 2.5)
    got = await stub.GetTenant(funnel_pb2.GetTenantRequest(tenant_id="t"), metadata=amd)
    assert (got.affinity_half_life_days, got.trending_half_life_days) == (1.0, 2.5)
    with app.store.snapshot() as snap:  # what the ingest worker and funnel load read
        assert TenantRegistry(app.store).half_lives(snap.txn, "t").trending_days == 2.5
