"""Blocked: items and categories the tenant never serves."""

from kernels.layout import REMOVED_BLOCKED_ITEM
from server.pipeline.filters.base import FilterPlan, HardFilter


class BlockedFilter(HardFilter):
    name = "blocked"

    def contribute(self, state, plan: FilterPlan) -> None:
        plan.blocked_categories |= state.tenant.blocked_category_mask
        plan.deny(state.tenant.blocked_idx, REMOVED_BLOCKED_ITEM)
