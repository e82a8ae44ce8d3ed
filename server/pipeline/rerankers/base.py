"""Re-ranking stages over a scored ranking (best first after ``FreshnessBoost``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class Ranking:
    items: np.ndarray        # int64 item indices
    scores: np.ndarray       # float32
    features: np.ndarray     # float32[n, N_FEATURES] (zeros for fallback levels)
    categories: np.ndarray   # int32
    sources: np.ndarray      # uint8 source bits
    sponsored: np.ndarray    # bool: placed in a sponsored slot
    reasons: np.ndarray      # uint8 reason codes (server.pipeline.rerankers.reasons)

    def take(self, order: np.ndarray) -> "Ranking":
        return Ranking(self.items[order], self.scores[order], self.features[order], self.categories[order],
                       self.sources[order], self.sponsored[order], self.reasons[order])

    def __len__(self) -> int:
        return int(self.items.shape[0])


class Reranker(ABC):
    """Returns a ranking of the same items (or a subset), in serving order."""

    name: str = "reranker"

    @abstractmethod
    def rerank(self, state, ranking: Ranking) -> Ranking: ...
