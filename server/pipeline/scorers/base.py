"""Scoring stages: a cheap pre-ranker over every candidate, then the learned
ranker over the best few hundred. Each returns exactly one score per candidate,
in input order (server.models.runtime.Scorer guarantees it, NaN/inf sunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class RankingUnavailable(RuntimeError):
    """No usable model: the funnel drops to a fallback level."""


class ScoringStage(ABC):
    name: str = "scorer"

    @abstractmethod
    def score(self, state, features: np.ndarray) -> np.ndarray: ...
