"""Frequency caps: items (and sponsored campaigns) the user was shown too often.

Per surface (``SurfaceRules``): an item with ``frequency_cap`` or more recorded
impressions for this user within ``frequency_window_s`` is removed, and so is
every item of a campaign whose items together reached ``campaign_frequency_cap``
impressions. Impressions come from Events.Ingest (type IMPRESSION) through the
ingest worker into the user's impression log (db ``impressions``, the last
IMPRESSION_CAP of them); a campaign's items are the list ``campaign:<id>``.
"""

from __future__ import annotations

import time

import numpy as np

from kernels.layout import ITEM_CAMPAIGN, REMOVED_CAPPED
from server.pipeline.filters.base import FilterPlan, HardFilter
from server.store import impressions_since


class FrequencyCapFilter(HardFilter):
    name = "capped"

    def contribute(self, state, plan: FilterPlan) -> None:
        rules = state.rules
        if not (rules.frequency_cap or rules.campaign_frequency_cap) or not state.user_id:
            return
        raw = state.snap.impressions(state.tenant.tenant_id, state.user_id)
        if raw is None:
            return
        shown = impressions_since(raw, time.time() - rules.frequency_window_s)
        if not len(shown):
            return
        items, counts = np.unique(shown, return_counts=True)
        if rules.frequency_cap:
            plan.deny(items[counts >= rules.frequency_cap], REMOVED_CAPPED)
        if rules.campaign_frequency_cap:
            campaigns = np.zeros(len(items), dtype=np.int64)
            for k, index in enumerate(items.tolist()):
                try:
                    campaigns[k] = int(state.snap.item_row(state.tenant.tenant_id, index)[ITEM_CAMPAIGN])
                except IndexError:  # no longer in the catalog
                    pass
            per_campaign = np.bincount(campaigns, weights=counts)
            for campaign in np.flatnonzero(per_campaign >= rules.campaign_frequency_cap):
                if campaign:  # 0: no campaign
                    plan.deny(state.snap.item_list(state.tenant.tenant_id, f"campaign:{campaign}"), REMOVED_CAPPED)
