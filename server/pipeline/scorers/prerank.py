"""Pre-ranker: the tenant's linear model over all filtered candidates."""

from server.pipeline.scorers.base import RankingUnavailable, ScoringStage


class PreRanker(ScoringStage):
    name = "prerank"

    def __init__(self, keep: int):
        self.keep = keep

    def score(self, state, features):
        scorer = state.tenant.prerank
        if scorer is None:
            raise RankingUnavailable(state.tenant.model_errors.get("prerank", "no pre-ranker deployed"))
        return scorer.score(features)
