"""Editorial boost: score += editorial_weight * strength * (score spread of this request),
where strength is the item's editorial_boost (0..1), or 1 for the tenant's boosted
items. Measured in the request's own score spread, the boost means the same for any
model's score scale: weight 1.0 lifts a fully boosted item by the whole spread (to the
top), 0.25 by a quarter. Learned rankers rarely see editorial signals vary in their
training data, so the tenant's intent is applied here, explicitly."""

import numpy as np

from kernels.layout import FEATURES
from server.pipeline.rerankers.base import Ranking, Reranker

EDITORIAL = FEATURES.index("editorial_boost")


def editorial_strength(state, ranking: Ranking) -> np.ndarray:
    strength = ranking.features[:, EDITORIAL]
    boosted = state.tenant.boosted_idx
    if boosted.shape[0]:
        strength = np.where(np.isin(ranking.items, boosted), np.float32(1.0), strength)
    return strength


class EditorialBoost(Reranker):
    name = "editorial"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        weight = state.rules.editorial_weight
        if weight and len(ranking) > 1:
            spread = float(ranking.scores.max() - ranking.scores.min()) or 1.0
            ranking.scores = ranking.scores + np.float32(weight * spread) * editorial_strength(state, ranking)
        return ranking
