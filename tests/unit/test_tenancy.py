import pytest

from server.catalog import category_ids, maturity_code
from server.tenancy import ConfigError, SurfaceRules, TenantConfig, hash_key, new_api_key


def test_keys_are_stored_hashed_and_checked():
    key = new_api_key()
    config = TenantConfig(tenant_id="t1", api_key_hashes=(hash_key("other-key-123456"), hash_key(key)))
    assert config.check_key(key)
    assert not config.check_key(key + "x")
    assert not config.check_key("")
    assert key not in str(config.to_json())


@pytest.mark.parametrize("changes, field", [
    (dict(tenant_id="Bad Id"), "tenant_id"),
    (dict(maturity_policy="PG-13"), "maturity_policy"),
    (dict(default_limit=0), "default_limit"),
    (dict(max_limit=5000), "max_limit"),
    (dict(latency_budget_ms=0), "latency_budget_ms"),
    (dict(surfaces={"home": SurfaceRules(sponsored_positions=(1, 1))}), "sponsored_positions"),
    (dict(linear_model_json="{not json"), "linear_model_json"),
    (dict(linear_model_json='{"bogus": 1}'), "linear_model_json"),
    (dict(linear_model_json='{"cf_score": "1"}'), "linear_model_json"),
])
def test_invalid_configs_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=field):
        TenantConfig(**dict(dict(tenant_id="t1"), **changes)).validate()


def test_unknown_keys_are_rejected_on_load():
    with pytest.raises(ConfigError, match="unknown tenant config keys: colour"):
        TenantConfig.from_json({"tenant_id": "t1", "colour": "red"})
    with pytest.raises(ConfigError, match="unknown keys max_items"):
        TenantConfig.from_json({"tenant_id": "t1", "surfaces": {"*": {"max_items": 3}}})


def test_json_round_trip_and_surface_fallback():
    config = TenantConfig(tenant_id="t1", surfaces={"*": SurfaceRules(max_per_category=2),
                                                    "home": SurfaceRules(sponsored_positions=(2, 5))}).validate()
    back = TenantConfig.from_json(config.to_json())
    assert back == config
    assert back.rules_for("home").sponsored_positions == (2, 5)
    assert back.rules_for("search").max_per_category == 2


@pytest.mark.parametrize("raw, code, name", [
    ("PG-13", 2, "PG13"), ("pg 13", 2, "PG13"), ("G", 0, "G"), ("NC-17", 4, "NC17"),
    ("", 4, ""), ("TV-MA", 4, "TV-MA"), (None, 4, ""),
])
def test_maturity_parsing_fails_closed(raw, code, name):
    assert maturity_code(raw) == (code, name)


def test_category_ids_cap_at_64_with_other():
    names = []
    ids = category_ids([f"c{i}" for i in range(70)], names)
    assert ids[:63] == list(range(63)) and set(ids[63:]) == {63}
    assert len(names) == 64 and names[63] == "other"


# ------------------------------------------------------------------ half-lives
@pytest.mark.parametrize("field", ["affinity_half_life_days", "trending_half_life_days"])
@pytest.mark.parametrize("value, shown", [
    (float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf"), (-1.0, "-1.0"), (0.0, "0.0"),
    (3650.5, "3650.5"), ("7", "'7'"), (True, "True"),
])
def test_half_lives_out_of_range_are_rejected_with_the_field_and_value(field, value, shown):
    with pytest.raises(ConfigError) as err:
        TenantConfig(tenant_id="t1", **{field: value}).validate()
    assert str(err.value) == f"{field}: must be within (0, 3650] days, got {shown}"


def test_half_lives_default_to_30_and_7_days_and_accept_the_range_ends():
    from ops.features import HalfLives

    assert TenantConfig(tenant_id="t1").validate().half_lives() == HalfLives(30.0, 7.0)
    config = TenantConfig(tenant_id="t1", affinity_half_life_days=3650, trending_half_life_days=1e-3).validate()
    assert config.half_lives() == HalfLives(3650.0, 1e-3)


def test_half_lives_round_trip_through_json_and_a_config_without_them_gets_the_defaults():
    from server.tenancy import config_changes

    config = TenantConfig(tenant_id="t1", affinity_half_life_days=1.5, trending_half_life_days=0.25).validate()
    back = TenantConfig.from_json(config.to_json())
    assert back == config and back.half_lives().affinity_days == 1.5 and back.half_lives().trending_days == 0.25
    legacy = TenantConfig(tenant_id="t1").to_json()
    for key in ("affinity_half_life_days", "trending_half_life_days"):
        del legacy[key]  # stored before the fields existed
    assert TenantConfig.from_json(legacy).half_lives() == TenantConfig(tenant_id="t1").half_lives()
    # ... and counts as holding the defaults in the version log, not as a change
    assert config_changes(legacy, TenantConfig(tenant_id="t1").to_json()) == []
    assert config_changes(legacy, config.to_json()) == ["affinity_half_life_days", "trending_half_life_days"]


def test_half_lives_round_trip_through_the_admin_proto_and_zero_means_the_default():
    from protos import funnel_pb2
    from server.servicers.admin import tenant_from_proto, tenant_to_proto

    config = TenantConfig(tenant_id="t1", affinity_half_life_days=1.5, trending_half_life_days=0.25).validate()
    msg = tenant_to_proto(config)
    assert (msg.affinity_half_life_days, msg.trending_half_life_days) == (1.5, 0.25)
    assert tenant_from_proto(msg, None) == config
    unset = tenant_from_proto(funnel_pb2.Tenant(tenant_id="t1"), None)
    assert (unset.affinity_half_life_days, unset.trending_half_life_days) == (30.0, 7.0)
    bad = tenant_from_proto(funnel_pb2.Tenant(tenant_id="t1", trending_half_life_days=-2.0), None)
    with pytest.raises(ConfigError, match=r"^trending_half_life_days: must be within \(0, 3650\] days, got -2.0$"):
        bad.validate()


def test_restoring_a_version_restores_its_half_lives(tmp_path):
    from server.store import LmdbStore
    from server.tenancy import TenantRegistry

    store = LmdbStore.open(str(tmp_path))
    try:
        registry = TenantRegistry(store)
        registry.put(TenantConfig(tenant_id="t1", affinity_half_life_days=1.0, trending_half_life_days=2.0))
        registry.put(TenantConfig(tenant_id="t1"))
        with store.snapshot() as snap:
            assert registry.half_lives(snap.txn, "t1").affinity_days == 30.0
            assert registry.half_lives(snap.txn, "nobody").affinity_days == 30.0  # unknown tenant: the defaults
            rows, _ = registry.version_log(snap.txn, registry.get(snap.txn, "t1"), 10)
        assert rows[0][2] == "changed: affinity_half_life_days, trending_half_life_days"
        restored = registry.restore("t1", 1)
        assert (restored.version, restored.affinity_half_life_days, restored.trending_half_life_days) == (3, 1.0, 2.0)
        with store.snapshot() as snap:
            assert (registry.half_lives(snap.txn, "t1").affinity_days,
                    registry.half_lives(snap.txn, "t1").trending_days) == (1.0, 2.0)
    finally:
        store.close()


def test_the_tenant_command_sets_half_lives_without_a_new_key(tmp_path, capsys):
    from server.app import init_data_dir
    from server.cli import main
    from server.store import LmdbStore
    from server.tenancy import TenantRegistry

    data_dir = str(tmp_path / "data")
    init_data_dir(data_dir)

    def stored():
        store = LmdbStore.open(data_dir, readonly=True)
        try:
            with store.snapshot() as snap:
                return TenantRegistry(store).get(snap.txn, "t1")
        finally:
            store.close()

    assert main(["tenant", "--data-dir", data_dir, "--tenant", "t1", "--affinity-half-life-days", "2"]) == 0
    assert "new API key (shown once" in capsys.readouterr().out
    first = stored()
    assert (first.version, first.affinity_half_life_days, first.trending_half_life_days) == (1, 2.0, 7.0)
    assert main(["tenant", "--data-dir", data_dir, "--tenant", "t1", "--trending-half-life-days", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "shown once" not in out and "config version 2" in out
    second = stored()
    assert (second.affinity_half_life_days, second.trending_half_life_days) == (2.0, 0.5)
    assert second.api_key_hashes == first.api_key_hashes
    assert main(["tenant", "--data-dir", data_dir, "--tenant", "t1", "--affinity-half-life-days", "0"]) == 0
    assert stored().affinity_half_life_days == 30.0  # 0 = the default
    capsys.readouterr()
    assert main(["tenant", "--data-dir", data_dir, "--tenant", "t1", "--affinity-half-life-days", "-3"]) == 1
    assert "affinity_half_life_days: must be within (0, 3650] days, got -3.0" in capsys.readouterr().err
    assert stored().version == 3  # nothing written
    assert main(["tenant", "--data-dir", data_dir, "--tenant", "t1", "--restore", "1",
                 "--trending-half-life-days", "1"]) == 2
    assert stored().version == 3
