"""Sponsored slots: the surface's sponsored page positions are filled with the best
remaining sponsored items (that passed every hard filter), page after page."""

import numpy as np

from server.pipeline.rerankers.base import Ranking, Reranker
from server.pipeline.rerankers.reasons import SPONSORED


class SponsoredSlots(Reranker):
    name = "sponsored"

    def rerank(self, state, ranking: Ranking) -> Ranking:
        slots = sorted(p for p in state.rules.sponsored_positions if p < state.limit)
        sponsored_items = state.snap.item_list(state.tenant.tenant_id, "sponsored")
        if not slots or sponsored_items.shape[0] == 0 or len(ranking) == 0:
            return ranking
        is_sponsored = np.isin(ranking.items, sponsored_items)
        ads = list(np.flatnonzero(is_sponsored))
        organic = list(np.flatnonzero(~is_sponsored))
        order, page_start = [], 0
        while (ads or organic) and page_start < len(ranking):
            for pos in range(state.limit):
                if pos in slots and ads:
                    order.append(ads.pop(0))
                elif organic:
                    order.append(organic.pop(0))
                elif ads:
                    break  # never pad a page with ads outside their slots
            page_start += state.limit
            if not organic:
                break
        order = np.asarray(order, dtype=np.int64)
        out = ranking.take(order)
        out.sponsored = is_sponsored[order]
        out.reasons = np.where(out.sponsored, np.uint8(SPONSORED), out.reasons).astype(np.uint8)
        return out
