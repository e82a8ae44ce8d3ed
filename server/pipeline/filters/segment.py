"""Segment eligibility: what the user's named segment may see on this surface
(SurfaceRules.segment_rules, compiled by server.segments). Removals count as
blocked_category / blocked_item, like the tenant's own blocks."""

from kernels.layout import REMOVED_BLOCKED_ITEM
from server.pipeline.filters.base import FilterPlan, HardFilter


class SegmentFilter(HardFilter):
    name = "segment"

    def contribute(self, state, plan: FilterPlan) -> None:
        if not state.segment:
            return
        eligibility = state.tenant.segments.eligibility(state.surface, state.segment)
        plan.blocked_categories |= eligibility.blocked_categories
        plan.deny(eligibility.denied_idx, REMOVED_BLOCKED_ITEM)
