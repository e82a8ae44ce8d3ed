"""Ranker: the request's learned model (state.models: deployed, canary or the experiment's
override; or the tenant's JSON linear model) over the pre-ranker's best."""

from server.pipeline.scorers.base import RankingUnavailable, ScoringStage, run_model


class Ranker(ScoringStage):
    name = "rank"

    def score(self, state, features):
        models = state.models
        if models.rank is None:
            raise RankingUnavailable(state.tenant.model_errors.get("rank", "no ranker deployed"))
        return run_model(state, models.rank, models.rank_watch, features)
