"""Scoring stages: a cheap pre-ranker over every candidate, then the learned
ranker over the best few hundred. Each returns exactly one score per candidate,
in input order (server.models.runtime.Scorer guarantees it, NaN/inf sunk)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from server.models.runtime import ModelError


class RankingUnavailable(RuntimeError):
    """No usable model: the funnel drops to a fallback level."""


class ScoringStage(ABC):
    name: str = "scorer"

    @abstractmethod
    def score(self, state, features: np.ndarray) -> np.ndarray: ...


def run_model(state, scorer, watch, features: np.ndarray) -> np.ndarray:
    """``scorer.score(features)``; for a canary model (``watch`` set) the outcome
    (failed?, rows, NaN/inf count) is also noted on the request for its guardrails."""
    if watch is None:
        return scorer.score(features)
    if state.canary_outcomes is None:
        state.canary_outcomes = []
    try:
        scores, nonfinite = scorer.score_counted(features)
    except ModelError:
        state.canary_outcomes.append((watch, True, 0, 0))
        raise
    state.canary_outcomes.append((watch, False, int(features.shape[0]), nonfinite))
    return scores
