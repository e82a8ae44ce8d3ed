"""Freshness: score += surface freshness_weight * item_recency, then sort best first."""

import numpy as np

from kernels.layout import FEATURES
from server.pipeline.rerankers.base import Ranking, Reranker

RECENCY = FEATURES.index("item_recency")


class FreshnessBoost(Reranker):
    name = "freshness"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        weight = state.rules.freshness_weight
        if weight:
            ranking.scores = ranking.scores + np.float32(weight) * ranking.features[:, RECENCY]
        return ranking.take(np.argsort(-ranking.scores, kind="stable"))
