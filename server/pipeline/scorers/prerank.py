"""Pre-ranker: the request's pre-ranking model (state.models) over all filtered candidates."""

from server.pipeline.scorers.base import RankingUnavailable, ScoringStage, run_model


class PreRanker(ScoringStage):
    name = "prerank"

    def __init__(self, keep: int):
        self.keep = keep

    def score(self, state, features):
        models = state.models
        if models.prerank is None:
            raise RankingUnavailable(state.tenant.model_errors.get("prerank", "no pre-ranker deployed"))
        return run_model(state, models.prerank, models.prerank_watch, features)
