"""Content: items touched in this session (or the anchor, or the user's latest
seen items) -> ANN over content vectors built from item metadata."""

from __future__ import annotations

import numpy as np

from kernels.layout import SIGNAL_CONTENT
from server.pipeline.sources.base import CandidateSource, SourceResult
from server.pipeline.state import RECENT_SEEDS, SOURCE_CONTENT

MAX_SEEDS = RECENT_SEEDS  # session items used as seeds, like the recent items the state holds


class ContentSource(CandidateSource):
    name, bit, signal = "content", SOURCE_CONTENT, SIGNAL_CONTENT

    def retrieve(self, state) -> SourceResult | None:
        index = state.tenant.index("content")
        if index is None:
            return None
        if state.anchor_idx >= 0:
            seeds = np.array([state.anchor_idx], dtype=np.int64)
        elif state.session_idx.shape[0]:
            seeds = state.session_idx[-MAX_SEEDS:]
        elif state.recent.shape[0]:
            seeds = state.recent.astype(np.int64)
        else:
            return None
        key = (id(index), seeds.tobytes())
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        vectors = index.get(seeds)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(seeds), -1)
        vectors = vectors[np.isfinite(vectors).all(axis=1)]
        if vectors.shape[0] == 0:
            return None
        query = vectors.mean(axis=0)
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            return None
        matches = index.search(query / norm, self.k)
        # cosine distance = 1 - cos; strength is the cosine similarity clipped to 0..1
        result = SourceResult(matches.keys.astype(np.int64),
                              np.clip(1.0 - matches.distances, 0.0, 1.0).astype(np.float32))
        self.cache.put(key, result)
        return result
