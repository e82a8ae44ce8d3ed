"""Diversity: per page, at most max_per_category items of a category and no
same-category run longer than max_streak (kernels.diversity), in one kernel call
over the whole snapshot with page_size = the request's limit, so every page of
the cursor obeys the caps."""

import numpy as np

from kernels.diversity import diversify
from server.pipeline.rerankers.base import Ranking, Reranker


class DiversityReranker(Reranker):
    name = "diversity"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        rules = state.rules
        if not (rules.max_per_category or rules.max_streak) or len(ranking) <= 1:
            return ranking
        n = len(ranking)
        return ranking.take(diversify(np.arange(n, dtype=np.int64), ranking.categories, n,
                                      rules.max_per_category, rules.max_streak, state.limit))
