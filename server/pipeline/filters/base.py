"""Hard filters. Each filter contributes its rule to the request's FilterPlan; the
plan runs every rule in one kernel pass (kernels.filters.hard_filter) over any
candidate list: ranked candidates and every fallback level alike, so no level
can bypass them. Filters are fail-closed: a filter that cannot build its rule
raises, and the request fails rather than serve unfiltered items."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from kernels.filters import hard_filter
from kernels.layout import ITEM_WIDTH, MATURITY_CODES, N_REASONS, REASON_NAMES


@dataclass
class FilterOutcome:
    kept: np.ndarray          # int64 indices that passed, input order
    mask: np.ndarray          # bool per input candidate: passed
    removed: np.ndarray       # int64[N_REASONS] counts per kernels.layout reason code


@dataclass
class FilterPlan:
    max_maturity: int | None = None  # unset = G, the most restrictive (fail closed)
    blocked_categories: int = 0
    deny_parts: list = field(default_factory=list)  # (indices, reason code)
    _deny: tuple | None = None

    def deny(self, indices: np.ndarray, reason: int) -> None:
        if len(indices):
            self.deny_parts.append((np.asarray(indices, dtype=np.int64), reason))
            self._deny = None

    def _deny_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._deny is None:
            if self.deny_parts:
                idx = np.concatenate([p[0] for p in self.deny_parts])
                reason = np.concatenate([np.full(len(p[0]), p[1], dtype=np.uint8) for p in self.deny_parts])
                order = np.argsort(idx, kind="stable")
                self._deny = (np.ascontiguousarray(idx[order]), np.ascontiguousarray(reason[order]))
            else:
                self._deny = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint8))
        return self._deny

    def apply(self, candidates: np.ndarray, state) -> FilterOutcome:
        candidates = np.ascontiguousarray(candidates, dtype=np.int64)
        reasons = np.empty(candidates.shape[0], dtype=np.uint8)
        deny_idx, deny_reason = self._deny_arrays()
        max_maturity = MATURITY_CODES["G"] if self.max_maturity is None else self.max_maturity
        hard_filter(candidates, state.chunk_addrs, state.n_items, ITEM_WIDTH, max_maturity,
                    self.blocked_categories, deny_idx, deny_reason, reasons)
        mask = reasons == 0
        return FilterOutcome(candidates[mask], mask, np.bincount(reasons, minlength=N_REASONS))


def count_removals(outcome: FilterOutcome, into: dict[str, int]) -> None:
    for code in np.flatnonzero(outcome.removed[1:N_REASONS]) + 1:
        into[REASON_NAMES[code]] = into.get(REASON_NAMES[code], 0) + int(outcome.removed[code])


class HardFilter(ABC):
    """Adds one rule to the plan."""

    name: str = "filter"

    @abstractmethod
    def contribute(self, state, plan: FilterPlan) -> None: ...
