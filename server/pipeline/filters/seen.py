"""Seen: items in the user's recently-seen ring and in this session's items."""

from kernels.layout import REMOVED_SEEN
from server.pipeline.filters.base import FilterPlan, HardFilter


class SeenFilter(HardFilter):
    name = "seen"

    def contribute(self, state, plan: FilterPlan) -> None:
        plan.deny(state.seen, REMOVED_SEEN)
        plan.deny(state.session_idx, REMOVED_SEEN)
        if state.anchor_idx >= 0:
            plan.deny([state.anchor_idx], REMOVED_SEEN)  # never relate an item to itself
