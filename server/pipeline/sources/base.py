"""Candidate source interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass
class SourceResult:
    items: np.ndarray      # int64 item indices, best first, may contain indices the filters remove
    strength: np.ndarray   # float32, same length: the source's own relevance signal (0..1)


class CandidateSource(ABC):
    """Returns up to ``k`` candidate item indices for a request, best first.
    Sources fail open: an exception or a late answer skips the source (counted),
    it never fails the request."""

    name: str = "source"
    bit: int = 0
    signal: int | None = None  # kernels.layout SIGNAL_* column its strength feeds, if any

    def __init__(self, k: int, budget_ms: float, cache_entries: int = 0):
        from server.pipeline.sources.cache import SourceCache

        self.k = k
        self.budget_ms = budget_ms
        self.cache = SourceCache(cache_entries)  # used by sources whose answer is a pure function of a key

    @abstractmethod
    def retrieve(self, state) -> SourceResult | None:
        """None when the source has nothing to say for this request (e.g. no user embedding)."""
