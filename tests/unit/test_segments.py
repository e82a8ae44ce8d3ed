"""Named segments: rule evaluation (order, every condition at its boundaries),
validation naming the field, config and proto round trips, compiled eligibility,
and the per-segment list builder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kernels.layout import (
    ITEM_ACTIVE,
    ITEM_WIDTH,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_EVENT_COUNT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
    USER_WIDTH,
)
from ops.interactions import Interactions
from ops.segments import segment_lists
from server.segments import ALL_CATEGORIES, NO_RESTRICTION, SegmentPlan, user_facts
from server.tenancy import (
    ConfigError,
    Segment,
    SegmentRules,
    SurfaceRules,
    TenantConfig,
    config_changes,
)

CATEGORIES = ["Drama", "Comedy", "Animation"]
NOW_DAYS = 20_000.0


def row(count=0, skip=0.0, last_days=NOW_DAYS, affinity=None, offline=False):
    r = np.zeros(USER_WIDTH, dtype=np.float32)
    if offline:  # rows built by `funnel load` keep only log1p(count)
        r[USER_ACTIVITY] = math.log1p(count)
    else:
        r[USER_EVENT_COUNT] = count
        r[USER_ACTIVITY] = math.log1p(count)
    r[USER_SKIP_RATE] = skip
    r[USER_LAST_ACTIVE_DAYS] = last_days
    for c, w in (affinity or {}).items():
        r[USER_AFFINITY + c] = w
    return r


def plan_of(*segments, surfaces=None) -> SegmentPlan:
    config = TenantConfig(tenant_id="t", segments=tuple(segments),
                          surfaces=surfaces or {"*": SurfaceRules()}).validate()
    return SegmentPlan(config, CATEGORIES)


def segment_of(plan, r, consent=True):
    return plan.classify(user_facts(r, consent, NOW_DAYS))


# ------------------------------------------------------------------ evaluation
def test_first_matching_segment_wins_and_an_empty_rule_catches_everyone():
    plan = plan_of(Segment("heavy", min_interactions=100), Segment("drama", top_categories=("Drama",)),
                   Segment("everyone"))
    assert segment_of(plan, row(count=500, affinity={0: 1.0})) == "heavy"  # matches all three: the first wins
    assert segment_of(plan, row(count=5, affinity={0: 1.0})) == "drama"
    assert segment_of(plan, row(count=5, affinity={1: 1.0})) == "everyone"
    assert segment_of(plan, None) == "everyone"  # unknown / anonymous
    assert plan_of(Segment("drama", top_categories=("Drama",))).classify(user_facts(None, True, NOW_DAYS)) == ""


def test_top_category_is_the_affinity_argmax_and_none_means_no_affinity():
    plan = plan_of(Segment("comedy", top_categories=("Comedy",)), Segment("cold", top_categories=("none",)),
                   Segment("ghost", top_categories=("NotInCatalog",)))
    assert segment_of(plan, row(count=3, affinity={0: 0.4, 1: 0.6})) == "comedy"
    assert segment_of(plan, row(count=3, affinity={0: 0.6, 1: 0.4})) == ""
    assert segment_of(plan, row(count=3, affinity={0: 0.5, 1: 0.5})) == ""  # ties: lowest id (Drama)
    assert segment_of(plan, row(count=3)) == "cold"
    assert segment_of(plan, None) == "cold"


@pytest.mark.parametrize("offline", [False, True])
def test_interaction_bounds_are_inclusive(offline):
    plan = plan_of(Segment("mid", min_interactions=10, max_interactions=20))
    assert [segment_of(plan, row(count=n, offline=offline)) for n in (9, 10, 20, 21)] == ["", "mid", "mid", ""]


def test_max_interactions_zero_selects_users_without_interactions():
    plan = plan_of(Segment("none_yet", max_interactions=0))
    assert segment_of(plan, row(count=0)) == "none_yet"
    assert segment_of(plan, row(count=1)) == ""
    assert segment_of(plan, None) == "none_yet"


def test_skip_rate_bounds_are_inclusive():
    plan = plan_of(Segment("skippy", min_skip_rate=0.25, max_skip_rate=0.5))
    got = [segment_of(plan, row(count=10, skip=s)) for s in (0.2499, 0.25, 0.5, 0.5001)]
    assert got == ["", "skippy", "skippy", ""]


def test_lifecycle_new_active_lapsed_at_the_boundary():
    plan = plan_of(Segment("new", lifecycle=("new",)), Segment("active", lifecycle=("active",), lapsed_after_days=7),
                   Segment("lapsed", lifecycle=("lapsed",), lapsed_after_days=7))
    assert segment_of(plan, None) == "new"
    assert segment_of(plan, row(count=0)) == "new"
    assert segment_of(plan, row(count=3, last_days=NOW_DAYS - 7.0)) == "active"  # exactly N days: still active
    assert segment_of(plan, row(count=3, last_days=NOW_DAYS - 7.5)) == "lapsed"
    assert segment_of(plan, row(count=3, last_days=NOW_DAYS)) == "active"


def test_consent_condition_and_opted_out_users_are_matched_as_unknown():
    plan = plan_of(Segment("opted_out", consent="withheld"), Segment("drama", top_categories=("Drama",)),
                   Segment("new", lifecycle=("new",), consent="granted"))
    heavy_drama = row(count=50, affinity={0: 1.0})
    assert segment_of(plan, heavy_drama) == "drama"
    assert segment_of(plan, heavy_drama, consent=False) == "opted_out"
    # nothing of an opted-out user is used: without a consent segment they look new, not like a drama fan
    no_consent_segment = plan_of(Segment("drama", top_categories=("Drama",)), Segment("new", lifecycle=("new",)))
    assert segment_of(no_consent_segment, heavy_drama, consent=False) == "new"
    assert segment_of(plan, None) == "new"


def test_conditions_are_a_conjunction():
    plan = plan_of(Segment("x", top_categories=("Drama",), min_interactions=5, max_skip_rate=0.5,
                           lifecycle=("active",)))
    good = dict(count=5, skip=0.5, affinity={0: 1.0})
    assert segment_of(plan, row(**good)) == "x"
    for change in (dict(count=4), dict(skip=0.6), dict(affinity={1: 1.0}), dict(last_days=NOW_DAYS - 31)):
        assert segment_of(plan, row(**dict(good, **change))) == "", change


# ------------------------------------------------------------------ eligibility
def test_eligibility_compiles_categories_and_items_per_surface():
    resolved = {"a": 7, "b": 3}
    surfaces = {"*": SurfaceRules(segment_rules={"kids": SegmentRules(allowed_categories=("Animation", "Unknown"),
                                                                      blocked_item_ids=("a", "b", "gone"))}),
                "home": SurfaceRules(segment_rules={"kids": SegmentRules(blocked_categories=("Drama",))}),
                "bare": SurfaceRules()}
    config = TenantConfig(tenant_id="t", segments=(Segment("kids"), Segment("other")), surfaces=surfaces).validate()
    plan = SegmentPlan(config, CATEGORIES,
                       lambda ids: np.array(sorted(resolved[i] for i in ids if i in resolved), dtype=np.int64))
    star = plan.eligibility("search", "kids")  # not configured: the "*" rules
    assert star.blocked_categories == ALL_CATEGORIES & ~(1 << 2)
    assert star.denied_idx.tolist() == [3, 7]
    assert plan.eligibility("*", "kids") == star
    home = plan.eligibility("home", "kids")
    assert home.blocked_categories == 1 << 0 and home.denied_idx.tolist() == []
    assert plan.eligibility("bare", "kids") is NO_RESTRICTION  # a configured surface does not inherit "*"
    assert plan.eligibility("*", "other") is NO_RESTRICTION
    assert plan.eligibility("*", "") is NO_RESTRICTION


def test_allowed_categories_naming_only_unknown_categories_block_everything():
    surfaces = {"*": SurfaceRules(segment_rules={"s": SegmentRules(allowed_categories=("Nope",))})}
    plan = SegmentPlan(TenantConfig(tenant_id="t", segments=(Segment("s"),), surfaces=surfaces).validate(), CATEGORIES)
    assert plan.eligibility("*", "s").blocked_categories == ALL_CATEGORIES


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("change,field", [
    (dict(segments=(Segment("bad name"),)), "segments[0].name"),
    (dict(segments=(Segment("a"), Segment("a"))), "segments[1].name"),
    (dict(segments=(Segment("a", min_interactions=-1),)), "segments[0].min_interactions"),
    (dict(segments=(Segment("a", min_interactions=5, max_interactions=4),)), "segments[0].max_interactions"),
    (dict(segments=(Segment("a", max_skip_rate=1.5),)), "segments[0].max_skip_rate"),
    (dict(segments=(Segment("a", min_skip_rate=0.6, max_skip_rate=0.5),)), "segments[0].max_skip_rate"),
    (dict(segments=(Segment("a", lifecycle=("dormant",)),)), "segments[0].lifecycle"),
    (dict(segments=(Segment("a", lifecycle=("new", "new")),)), "segments[0].lifecycle"),
    (dict(segments=(Segment("a", lapsed_after_days=0),)), "segments[0].lapsed_after_days"),
    (dict(segments=(Segment("a", consent="maybe"),)), "segments[0].consent"),
    (dict(segments=(Segment("a", top_categories=("",)),)), "segments[0].top_categories"),
    (dict(segments=tuple(Segment(f"s{i}") for i in range(65))), "segments"),
    (dict(segments=(Segment("a"),), surfaces={"home": SurfaceRules(segment_rules={"b": SegmentRules()})}),
     "surfaces['home'].segment_rules['b']"),
    (dict(segments=(Segment("a"),),
          surfaces={"*": SurfaceRules(segment_rules={"a": SegmentRules(blocked_item_ids=("x", "x"))})}),
     "surfaces['*'].segment_rules['a'].blocked_item_ids"),
])
def test_validation_names_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        TenantConfig(tenant_id="t", **change).validate()
    assert str(err.value).startswith(field + ":") or str(err.value).startswith(field + " "), str(err.value)


def test_unknown_keys_in_stored_json_are_rejected_with_the_path():
    with pytest.raises(ConfigError, match=r"segments\[0\]: unknown keys colour"):
        TenantConfig.from_json({"tenant_id": "t", "segments": [{"name": "a", "colour": "red"}]})
    with pytest.raises(ConfigError, match=r"surfaces\['\*'\]\.segment_rules\['a'\]: unknown keys x"):
        TenantConfig.from_json({"tenant_id": "t", "surfaces": {"*": {"segment_rules": {"a": {"x": []}}}}})


def test_segments_round_trip_through_json_and_show_in_the_change_summary():
    config = TenantConfig(
        tenant_id="t",
        segments=(Segment("kids", top_categories=("Animation", "none"), max_interactions=0, lifecycle=("new",)),
                  Segment("all")),
        surfaces={"*": SurfaceRules(segment_rules={"kids": SegmentRules(("Animation",), ("Drama",), ("i1",))})},
    ).validate()
    again = TenantConfig.from_json(config.to_json())
    assert again == config
    assert "segments" in config_changes(TenantConfig(tenant_id="t").to_json(), config.to_json())


def test_segments_round_trip_through_the_admin_proto():
    from server.servicers.admin import tenant_from_proto, tenant_to_proto

    config = TenantConfig(
        tenant_id="t",
        segments=(Segment("a", top_categories=("Drama",), min_interactions=2, max_interactions=9, min_skip_rate=0.1,
                          max_skip_rate=0.3, lifecycle=("active", "lapsed"), lapsed_after_days=14, consent="granted"),
                  Segment("b", max_interactions=0), Segment("c")),
        surfaces={"*": SurfaceRules(segment_rules={"a": SegmentRules(("Drama",), (), ("x",))}),
                  "home": SurfaceRules(max_per_category=2, segment_rules={"c": SegmentRules((), ("Comedy",), ())})},
    ).validate()
    back = tenant_from_proto(tenant_to_proto(config), None)
    assert back.segments == config.segments
    assert back.surfaces == config.surfaces


# ------------------------------------------------------------------ list builder
def test_segment_lists_rank_each_segments_items_by_decayed_weight():
    now = 100 * 86400
    items = np.zeros((6, ITEM_WIDTH), dtype=np.float32)
    items[:, ITEM_ACTIVE] = 1.0
    items[5, ITEM_ACTIVE] = 0.0  # inactive: never listed
    # users 0, 1 in segment 0; user 2 in segment 1; user 3 in none
    user = np.array([0, 0, 1, 1, 2, 3, 0, 1], dtype=np.int32)
    item = np.array([1, 2, 2, 5, 4, 3, 0, 0], dtype=np.int32)
    ts = np.array([now, now, now, now, now, now, now - 30 * 86400, now + 10], dtype=np.int64)  # last: future
    weight = np.ones(8, dtype=np.float32)
    history = Interactions(np.array(["u0", "u1", "u2", "u3"]), user, item, ts, weight)
    lists = segment_lists(history, items, np.array([0, 0, 1, -1]), 3, now)
    assert lists[0].tolist() == [2, 1, 0]  # item 2 twice; item 0 decayed (a 30-day-old row); future rows ignored
    assert lists[1].tolist() == [4]
    assert lists[2].tolist() == []
