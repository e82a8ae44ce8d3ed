"""Degradation decisions exercised in-process on the real trained data (no timing luck)."""

import pytest

from server.app import ServeSettings, ServingApp
from server.pipeline.state import request_state
from tests.integration.test_feed import active_users

pytestmark = pytest.mark.integration


def make_state(app, user_id, limit=20, budget_s=1.0):
    snap = app.store.snapshot()
    return request_state(snap, app.registry.get(snap, "demo"), user_id, "*", limit, budget_s)


def test_tight_budget_drops_to_level_one_with_prerank_only(trained_data_dir):
    app = ServingApp(ServeSettings(data_dir=trained_data_dir[0]))
    user = active_users(trained_data_dir[0], 1)[0]
    state = make_state(app, user)
    full = app.funnel.run(state)
    state.snap.close()
    assert full.level == 0
    app.funnel.ranker_reserve = 1.01  # "the ranker needs more than the whole budget"
    state = make_state(app, user)
    reduced = app.funnel.run(state)
    state.snap.close()
    assert reduced.level == 1
    assert state.candidates_scored <= app.funnel.reduced_candidates
    assert len(reduced.ranking) >= 20


def test_expired_deadline_falls_back_but_never_empty(trained_data_dir):
    app = ServingApp(ServeSettings(data_dir=trained_data_dir[0]))
    state = make_state(app, active_users(trained_data_dir[0], 1)[0], budget_s=-1.0)
    result = app.funnel.run(state)
    state.snap.close()
    assert result.level >= 3 and len(result.ranking) >= 20


def test_a_source_over_budget_is_counted_but_its_candidates_are_used(trained_data_dir):
    app = ServingApp(ServeSettings(data_dir=trained_data_dir[0]))
    cf = next(s for s in app.funnel.sources if s.name == "cf")
    cf.budget_ms = 0.0
    state = make_state(app, active_users(trained_data_dir[0], 1)[0])
    result = app.funnel.run(state)
    state.snap.close()
    assert "cf:late" in state.sources_failed
    assert result.level == 0
    assert (result.ranking.sources & 1).any()  # SOURCE_CF candidates made it into the ranking
