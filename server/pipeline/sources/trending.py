"""Trending: decayed popularity lists, per category for the user's top categories
plus the tenant-wide list."""

from __future__ import annotations

import numpy as np

from kernels.layout import SIGNAL_TRENDING
from server.pipeline.sources.base import CandidateSource, SourceResult
from server.pipeline.state import SOURCE_TRENDING

TOP_CATEGORIES = 3


class TrendingSource(CandidateSource):
    name, bit, signal = "trending", SOURCE_TRENDING, SIGNAL_TRENDING

    def retrieve(self, state) -> SourceResult | None:
        affinity = state.affinity()
        lists = []
        if affinity.any():
            top = np.argsort(-affinity, kind="stable")[:TOP_CATEGORIES]
            per_category = self.k // (2 * TOP_CATEGORIES)
            lists += [state.snap.item_list(state.tenant.tenant_id, f"trending:{c}")[:per_category]
                      for c in top if affinity[c] > 0]
        lists.append(state.snap.item_list(state.tenant.tenant_id, "trending")[: self.k - sum(map(len, lists))])
        strength = [np.linspace(1.0, 0.5, len(x), dtype=np.float32) for x in lists]  # rank-based
        return SourceResult(np.concatenate(lists).astype(np.int64), np.concatenate(strength))
