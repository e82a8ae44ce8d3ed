"""Inactive: deactivated or deleted items. The kernel checks the ACTIVE column of
every candidate unconditionally; this stage exists so the rule has a name and a
place, and contributes nothing else to the plan."""

from server.pipeline.filters.base import FilterPlan, HardFilter


class InactiveFilter(HardFilter):
    name = "inactive"

    def contribute(self, state, plan: FilterPlan) -> None:
        return None
