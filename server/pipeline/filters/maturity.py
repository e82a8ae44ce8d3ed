"""Maturity: nothing rated above the tenant policy. The kernel treats an unknown or
malformed item rating as the most restrictive one (fail closed), and a plan
without a policy allows only G."""

from server.pipeline.filters.base import FilterPlan, HardFilter


class MaturityFilter(HardFilter):
    name = "maturity"

    def contribute(self, state, plan: FilterPlan) -> None:
        plan.max_maturity = state.tenant.config.max_maturity
