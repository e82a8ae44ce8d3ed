"""Collaborative filtering: the user's (or anchor item's) CF embedding -> ANN over item CF embeddings."""

from __future__ import annotations

import numpy as np

from kernels.layout import CF_DIM, ITEM_CF, SIGNAL_CF, USER_CF, USER_HAS_CF
from server.pipeline.sources.base import CandidateSource, SourceResult
from server.pipeline.state import SOURCE_CF


class CollaborativeSource(CandidateSource):
    name, bit, signal = "cf", SOURCE_CF, SIGNAL_CF

    def retrieve(self, state) -> SourceResult | None:
        index = state.tenant.index("cf")
        if index is None:
            return None
        if state.anchor_idx >= 0:
            key = (id(index), "item", state.anchor_idx)
        elif state.user_row[USER_HAS_CF] == 1.0:
            # the user embedding only changes with a retrain, which also swaps the index
            key = (id(index), "user", state.tenant.tenant_id, state.user_id)
        else:
            return None
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if state.anchor_idx >= 0:
            query = state.snap.item_row(state.tenant.tenant_id, state.anchor_idx)[ITEM_CF:ITEM_CF + CF_DIM]
        else:
            query = state.user_row[USER_CF:USER_CF + CF_DIM]
        # USearch rejects some buffer formats of LMDB-backed views ("=f"): hand it 128 owned bytes
        matches = index.search(np.array(query, dtype=np.float32), self.k)
        # inner-product distance is 1 - dot; the ranker sees the exact dot, this only orders
        result = SourceResult(matches.keys.astype(np.int64), np.ones(len(matches.keys), dtype=np.float32))
        self.cache.put(key, result)
        return result

