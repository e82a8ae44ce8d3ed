"""Item-side counters and their periodic roll-up into rows and lists (the per-event
update itself is kernels.ingest.update_item_stats, called by the worker).

The ingest worker updates an item's counters (db ``item_stats``, layout
``kernels.layout.STAT_*``) in the same write transaction as the user features
and the stream position, so they are exact under redelivery and crashes like
everything else it applies. Serving does not read them directly: every
``interval_s`` the :class:`RollUp` turns the counters that changed into

* the item rows' ITEM_POPULARITY, ITEM_QUALITY and ITEM_SKIP_RATE, with the
  formulas of ``ops.features`` (one definition offline and online), rewriting
  only the rows whose value moved (chunk-local writes);
* the lists "trending", "trending:<c>" (weight decayed to the roll-up's time with
  the tenant's trending half-life, server.events.half_lives) and "popular"
  (interaction count), each rewritten only when it changed,

in one write transaction per tenant. POPULARITY keeps the scale ``funnel load``
set (``popularity_max_count``) so the model sees the feature it was trained on;
only when an item's live count passes twice that scale does the scale move to
the new maximum and every row with counters get rescaled (a few times over a
tenant's life, not per event). The skip prior stays the one ``funnel load``
computed. On start the worker rolls everything up once, so a crash between a
batch and its roll-up loses nothing.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from kernels.layout import (
    CHUNK_ROWS,
    CHUNK_ROWS_LOG2,
    ITEM_ACTIVE,
    ITEM_CATEGORY,
    ITEM_POPULARITY,
    ITEM_QUALITY,
    ITEM_SKIP_RATE,
    ITEM_WIDTH,
    STAT_COUNT,
    STAT_SKIPS,
    STAT_T_REF,
    STAT_TREND,
    STAT_WEIGHT_SUM,
)
from ops.features import (
    valid_category_ids,
    popular_list,
    popularity,
    quality,
    skip_rate,
    trending_lists,
)
from server.events.half_lives import TenantHalfLives
from server.store import LmdbStore
from server.store.lmdb_store import idx_key, tkey

log = logging.getLogger("funnel.ingest")

_CORE = (STAT_T_REF, STAT_COUNT, STAT_WEIGHT_SUM, STAT_SKIPS, STAT_TREND)
_CORE_IDX = np.array(_CORE)


class TenantCounters:
    """The committed core counters of one tenant's items as dense arrays (index ->
    T_REF, COUNT, WEIGHT_SUM, SKIPS, TREND), plus the indices changed since the
    last roll-up. Only committed values go in (see :meth:`ItemCounters.commit`)."""

    def __init__(self, n: int = 0):
        self.core = np.zeros((n, len(_CORE)), dtype=np.float64)
        self.dirty: set[int] = set()

    def ensure(self, n: int) -> None:
        if n > self.core.shape[0]:
            grown = np.zeros((max(n, 2 * self.core.shape[0]), len(_CORE)), dtype=np.float64)
            grown[:self.core.shape[0]] = self.core
            self.core = grown

    def set(self, index: int, stats: np.ndarray) -> None:
        self.ensure(index + 1)
        self.core[index] = stats[_CORE_IDX]
        self.dirty.add(index)

    def set_many(self, indices: list[int], stats: np.ndarray) -> None:
        """:meth:`set` of ``stats[k]`` at ``indices[k]`` for every k (distinct indices)."""
        self.ensure(max(indices) + 1)
        self.core[indices] = stats[:, _CORE_IDX]
        self.dirty.update(indices)

    def column(self, stat: int, n: int) -> np.ndarray:
        self.ensure(n)
        return self.core[:n, _CORE.index(stat)]


class ItemCounters:
    """Per tenant :class:`TenantCounters`, loaded from the store on first use."""

    def __init__(self, store: LmdbStore):
        self.store = store
        self.tenants: dict[str, TenantCounters] = {}

    def tenant(self, tenant: str) -> TenantCounters:
        counters = self.tenants.get(tenant)
        if counters is None:
            counters = self.tenants[tenant] = TenantCounters()
            with self.store.env.begin() as txn:
                for index, stats in self.store.iter_item_stats(txn, tenant):
                    counters.set(index, stats)
        return counters

    def commit(self, changed: dict[tuple[str, int], np.ndarray]) -> None:
        """Takes the item counters a batch wrote, after its commit (per tenant, as one
        array operation: a batch changes hundreds of items)."""
        by_tenant: dict[str, tuple[list, list]] = {}
        for (tenant, index), stats in changed.items():
            got = by_tenant.get(tenant)
            if got is None:
                got = by_tenant[tenant] = ([], [])
            got[0].append(index)
            got[1].append(stats)
        for tenant, (indices, stats) in by_tenant.items():
            self.tenant(tenant).set_many(indices, np.stack(stats))

    def mark_all_dirty(self, tenants) -> None:
        for tenant in tenants:
            counters = self.tenant(tenant)
            counters.dirty.update(np.flatnonzero(counters.core[:, _CORE.index(STAT_COUNT)] > 0).tolist())


class RollUp:
    """Writes the counters that changed into item rows and lists (module docstring).
    ``half_lives``: the worker's (its Applier's), so a changed config is parsed once for both."""

    def __init__(self, store: LmdbStore, counters: ItemCounters, interval_s: float = 1.0,
                 half_lives: TenantHalfLives | None = None, metrics=None):
        self.store, self.counters, self.interval_s = store, counters, interval_s
        self.half_lives = half_lives or TenantHalfLives(store)
        self.metrics = metrics
        self.last = 0.0
        self.forced: set[str] = set()

    def start(self) -> None:
        """Marks every tenant's counters for the first roll-up (run it with :meth:`run`)."""
        with self.store.env.begin() as txn:
            tenants = self.store.tenants_with_items(txn)
        self.counters.mark_all_dirty(tenants)
        self.forced.update(tenants)

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.last >= self.interval_s and (
            bool(self.forced) or any(c.dirty for c in self.counters.tenants.values()))

    def run(self, now_s: float | None = None) -> dict[str, tuple[int, int]]:
        """Rolls up every tenant with changes; returns {tenant: (rows written, lists written)}."""
        self.last = time.monotonic()
        now_s = time.time() if now_s is None else now_s
        done = {}
        for tenant, counters in list(self.counters.tenants.items()):
            if counters.dirty or tenant in self.forced:
                started = time.perf_counter()
                done[tenant] = self._tenant(tenant, counters, now_s)
                if self.metrics is not None:
                    self.metrics.rollup.observe(time.perf_counter() - started)
        self.forced.clear()
        return done

    def _tenant(self, tenant: str, counters: TenantCounters, now_s: float) -> tuple[int, int]:
        store = self.store
        with store.env.begin(write=True, buffers=True) as txn:
            n = int(store.get_state(txn, tenant, "n_items", 0))
            if n == 0:
                counters.dirty.clear()
                return 0, 0
            active, cats = self._columns(txn, tenant, n)
            t_ref, count = counters.column(STAT_T_REF, n), counters.column(STAT_COUNT, n)
            weight_sum, skips = counters.column(STAT_WEIGHT_SUM, n), counters.column(STAT_SKIPS, n)
            scale = float(store.get_state(txn, tenant, "popularity_max_count", 0.0) or 0.0)
            prior = float(store.get_state(txn, tenant, "skip_prior", 0.0) or 0.0)
            top = float(count.max())
            dirty = np.array(sorted(i for i in counters.dirty if i < n), dtype=np.int64)
            if top > 2.0 * scale:  # the scale moves rarely; every row with counters follows it
                scale = top
                store.set_state(txn, tenant, "popularity_max_count", scale)
                dirty = np.flatnonzero(count > 0)
            rows_written = self._rows(txn, tenant, dirty, count[dirty], weight_sum[dirty], skips[dirty],
                                      scale, prior)
            _, trending_half_life_s = self.half_lives.seconds(txn, tenant)
            age = np.maximum(now_s - t_ref, 0.0)
            trend = np.where(count > 0, counters.column(STAT_TREND, n) * np.exp2(-age / trending_half_life_s), 0.0)
            lists = {"popular": popular_list(active, count), **trending_lists(active, cats, trend)}
            lists_written = 0
            for name, indices in lists.items():
                current = txn.get(tkey(tenant, name), db=store.db["lists"])
                if current is None or not np.array_equal(np.frombuffer(current, dtype=np.int32), indices):
                    store.put_list(txn, tenant, name, indices)
                    lists_written += 1
        counters.dirty.clear()
        return rows_written, lists_written

    def _columns(self, txn, tenant: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """ACTIVE == 1 and the category id (-1 when invalid) of items 0..n-1, read chunk by chunk."""
        rows = np.zeros((n, 2), dtype=np.float32)
        db = self.store.db["item_rows"]
        for chunk in range((n + CHUNK_ROWS - 1) >> CHUNK_ROWS_LOG2):
            raw = txn.get(idx_key(tenant, chunk), db=db)
            if raw is None:
                continue
            block = np.frombuffer(raw, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH)
            lo, hi = chunk * CHUNK_ROWS, min((chunk + 1) * CHUNK_ROWS, n)
            rows[lo:hi, 0] = block[:hi - lo, ITEM_ACTIVE]
            rows[lo:hi, 1] = block[:hi - lo, ITEM_CATEGORY]
        return rows[:, 0] == 1.0, valid_category_ids(rows[:, 1])

    def _rows(self, txn, tenant, indices, count, weight_sum, skips, scale, prior) -> int:
        """Writes POPULARITY, QUALITY, SKIP_RATE of ``indices`` where they changed."""
        if not len(indices):
            return 0
        rows = self.store.read_rows_at(txn, tenant, indices)
        new = np.stack([popularity(count, scale), quality(weight_sum, count), skip_rate(skips, count, prior)],
                       axis=1).astype(np.float32)
        cols = [ITEM_POPULARITY, ITEM_QUALITY, ITEM_SKIP_RATE]
        moved = (rows[:, cols] != new).any(axis=1)
        if moved.any():
            rows[np.ix_(moved, cols)] = new[moved]
            self.store.put_rows_at(txn, tenant, indices[moved], rows[moved])
        return int(moved.sum())
