"""Ranker: the learned model (or the tenant's JSON linear model) over the pre-ranker's best."""

from server.pipeline.scorers.base import RankingUnavailable, ScoringStage


class Ranker(ScoringStage):
    name = "rank"

    def score(self, state, features):
        scorer = state.tenant.rank
        if scorer is None:
            raise RankingUnavailable(state.tenant.model_errors.get("rank", "no ranker deployed"))
        return scorer.score(features)
