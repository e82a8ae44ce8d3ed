"""A bounded per-process LRU of ANN results.

ANN search is the largest single cost of a request, and its answer depends only on
the query (a user's or anchor's trained embedding, or a set of seed items) and the
index version: repeated requests (refreshes, page 1 again, hot users) reuse it. Keys
include the index object, so a swapped index never serves old answers. Items are
stored as int32 and strengths as float32 (exactly what a miss computes, so a hit and
a miss rank identically and replays reproduce scores): 10k entries of 500 candidates
are about 40 MB."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from server.pipeline.sources.base import SourceResult


class SourceCache:
    def __init__(self, capacity: int = 10_000):
        self.capacity = capacity
        self._entries: OrderedDict = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key) -> SourceResult | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return SourceResult(entry[0].astype(np.int64), entry[1].astype(np.float32))

    def put(self, key, result: SourceResult) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = (result.items.astype(np.int32), result.strength.astype(np.float32))
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
