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
