"""Diversity: per page, at most max_per_category items of a category and no
same-category run longer than max_streak (kernels.diversity), page after page
over the whole snapshot so every page of the cursor obeys the caps."""

import numpy as np

from kernels.diversity import diversify
from server.pipeline.rerankers.base import Ranking, Reranker


class DiversityReranker(Reranker):
    name = "diversity"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        rules = state.tenant.config.rules_for(state.surface)
        if not (rules.max_per_category or rules.max_streak) or len(ranking) <= 1:
            return ranking
        remaining = np.arange(len(ranking), dtype=np.int64)
        taken = np.zeros(len(ranking), dtype=bool)
        pages = []
        while remaining.shape[0]:
            chosen = diversify(remaining, ranking.categories, state.limit, rules.max_per_category, rules.max_streak)
            pages.append(chosen)
            taken[chosen] = True
            remaining = remaining[~taken[remaining]]  # keeps score order
        return ranking.take(np.concatenate(pages))
