"""Editorial: tenant-boosted items first, then the newest items."""

from __future__ import annotations

import numpy as np

from server.pipeline.sources.base import CandidateSource, SourceResult
from server.pipeline.state import SOURCE_EDITORIAL


class EditorialSource(CandidateSource):
    name, bit, signal = "editorial", SOURCE_EDITORIAL, None

    def retrieve(self, state) -> SourceResult | None:
        boosted = state.tenant.boosted_idx
        newest = state.snap.item_list(state.tenant.tenant_id, "new")[: max(self.k - len(boosted), 0)]
        items = np.concatenate([boosted, newest.astype(np.int64)])
        return SourceResult(items, np.ones(items.shape[0], dtype=np.float32))
