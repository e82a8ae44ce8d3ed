"""Reasons: one human-readable explanation per item, chosen from its strongest
signal. Stored as a code (so cursors carry it) and rendered with the item's
category at response time."""

import numpy as np

from kernels.layout import FEATURES
from server.pipeline.rerankers.base import Ranking, Reranker
from server.pipeline.rerankers.editorial import editorial_strength
from server.pipeline.state import SOURCE_CACHE, SOURCE_CF, SOURCE_SEGMENT

(RECOMMENDED, AFFINITY, SIMILAR, TRENDING, EDITORIAL, NEW, POPULAR, CACHED, SEGMENT, SPONSORED,
 TASTE, RELATED) = range(12)
TEMPLATES = {
    RECOMMENDED: "Recommended for you",
    AFFINITY: "Because you watch a lot of {category}",
    SIMILAR: "Similar to what you viewed recently",
    TRENDING: "Trending in {category}",
    EDITORIAL: "Editor's pick",
    NEW: "New in {category}",
    POPULAR: "Popular right now",
    CACHED: "Picked for you earlier",
    SEGMENT: "Popular with viewers who share your taste",
    SPONSORED: "Sponsored",
    TASTE: "Liked by people with similar taste",
    RELATED: "More like this",
}
_F = {name: i for i, name in enumerate(FEATURES)}


def render(code: int, category: str) -> str:
    return TEMPLATES.get(int(code), TEMPLATES[RECOMMENDED]).format(category=category or "this category")


def fallback_reason(source_bit: int) -> int:
    return {SOURCE_CACHE: CACHED, SOURCE_SEGMENT: SEGMENT}.get(source_bit, POPULAR)


class ReasonWriter(Reranker):
    name = "reasons"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        f = ranking.features
        related = state.anchor_idx >= 0
        ranking.reasons = np.select(
            [ranking.sponsored,
             editorial_strength(state, ranking) > 0,
             (f[:, _F["content_similarity"]] >= 0.5) & related,
             (f[:, _F["category_affinity"]] >= 0.25) & state.known_user,
             f[:, _F["content_similarity"]] >= 0.5,
             ((ranking.sources & SOURCE_CF) > 0) & (f[:, _F["cf_score"]] > 0),
             f[:, _F["trending_score"]] >= 0.5,
             f[:, _F["item_recency"]] >= 0.8],
            [SPONSORED, EDITORIAL, RELATED, AFFINITY, SIMILAR, TASTE, TRENDING, NEW],
            default=POPULAR if not state.known_user else RECOMMENDED,
        ).astype(np.uint8)
        return ranking
