"""Excluded: ids the caller asked to leave out of this response."""

from kernels.layout import REMOVED_EXCLUDED
from server.pipeline.filters.base import FilterPlan, HardFilter


class ExcludedFilter(HardFilter):
    name = "excluded"

    def contribute(self, state, plan: FilterPlan) -> None:
        plan.deny(state.exclude_idx, REMOVED_EXCLUDED)
