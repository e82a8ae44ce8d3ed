"""``funnel segments build``: the precomputed lists behind degradation level 3 for
named segments.

For each named segment s of the tenant (server.tenancy.Segment), list
"segment:name:<s>" holds the top SEGMENT_SIZE active items by

    score(i) = sum of weight * 2 ** (-(now - ts) / affinity half-life)

with the tenant config's ``affinity_half_life_days`` (server.tenancy), over the saved
history's interactions (``DataDir.interactions``, written by ``funnel load``) of
the users whose segment is s NOW: the segment is evaluated on
each user's CURRENT stored row, exactly as GetFeed evaluates it (server.segments),
against the tenant clock. Ties go by item index, as for the "segment:<c>" lists of
ops.features.item_lists. Users without a stored row (erased) and users who opted
out of personalisation contribute nothing. Lists of segments no longer configured
are deleted, in the same transaction.

The lists are not pre-filtered by the segments' eligibility (it is per surface):
serving applies every hard filter to them, and tops a short answer up from "popular".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from kernels.layout import ITEM_ACTIVE, USER_CONSENT
from ops.features import AFFINITY_HALF_LIFE_DAYS, SEGMENT_SIZE, _as_of, _decay, _ranked_per_group
from ops.interactions import Interactions
from server.events.erasure import without_erased
from server.segments import SEGMENT_LIST_PREFIX, SegmentPlan, user_facts
from server.store import DataDir, LmdbStore, user_row_view
from server.store.lmdb_store import SEP
from server.tenancy import TenantRegistry


class SegmentBuildError(RuntimeError):
    """The lists cannot be built (unknown tenant, no saved history)."""


@dataclass(frozen=True)
class SegmentBuildReport:
    tenant: str
    users: dict[str, int]            # segment -> users of the history in it now
    items: dict[str, int]            # segment -> items in its list
    removed: int                     # lists of segments no longer configured
    seconds: float

    def summary(self) -> str:
        if not self.users:
            return f"tenant {self.tenant}: no named segments" + (
                f" ({self.removed} stale lists removed)" if self.removed else "")
        rows = [f"  {name:24s} users={self.users[name]:<8d} items={self.items[name]}" for name in self.users]
        return (f"tenant {self.tenant}: {len(self.users)} segment lists written"
                f"{f', {self.removed} stale removed' if self.removed else ''} in {self.seconds:.2f}s\n"
                + "\n".join(rows))


def segment_lists(history: Interactions, item_rows: np.ndarray, user_segment: np.ndarray, n_segments: int,
                  now_ts: int, half_life_days: float = AFFINITY_HALF_LIFE_DAYS) -> list[np.ndarray]:
    """int32 list per segment 0..n_segments-1 (module docstring); ``user_segment``:
    segment index per history user, -1 = none."""
    h = _as_of(history, now_ts)
    n = item_rows.shape[0]
    active = item_rows[:, ITEM_ACTIVE] == 1.0
    item_ok = (h.item >= 0) & (h.item < n)
    segment = np.where(item_ok, user_segment[h.user], -1)
    sel = (segment >= 0) & active[np.where(item_ok, h.item, 0)]
    key = segment[sel].astype(np.int64) * max(n, 1) + h.item[sel]
    pairs, inverse = np.unique(key, return_inverse=True)
    score = np.bincount(inverse, weights=(h.weight * _decay(h.ts, now_ts, half_life_days))[sel],
                        minlength=len(pairs))
    ranked = _ranked_per_group(pairs // max(n, 1), pairs % max(n, 1), score, SEGMENT_SIZE)
    empty = np.empty(0, dtype=np.int32)
    return [ranked.get(s, empty) for s in range(n_segments)]


def build_segment_lists(data_dir: str, tenant: str) -> SegmentBuildReport:
    """Writes "segment:name:<s>" for every named segment of ``tenant`` (module docstring)."""
    started = time.perf_counter()
    store = LmdbStore.open(data_dir)
    try:
        with store.snapshot() as snap:
            config = TenantRegistry(store).get(snap.txn, tenant)
            if config is None:
                raise SegmentBuildError(f"tenant: {tenant!r} does not exist")
            names = [s.name for s in config.segments]
            lists, users = [], {}
            if names:
                path = DataDir(data_dir).interactions(tenant)
                if not os.path.exists(path):
                    raise SegmentBuildError(f"tenant {tenant!r} has no saved history ({path}); run `funnel load` first")
                history = without_erased(snap.txn, store, tenant, Interactions.load(path))
                clock = snap.state(tenant, "now_ts")
                now_ts = int(clock) if clock is not None else int(time.time())
                plan = SegmentPlan(config, snap.state(tenant, "categories", []) or [])
                index_of = {name: k for k, name in enumerate(names)}
                user_segment = np.full(history.n_users, -1, dtype=np.int64)
                for u, user_id in enumerate(history.user_ids.tolist()):
                    value = snap.user(tenant, user_id)
                    if value is None:
                        continue  # erased: nothing of theirs is used
                    row = user_row_view(value)
                    if row[USER_CONSENT] != 1.0:
                        continue  # opted out: nothing of theirs is used
                    name = plan.classify(user_facts(row, True, now_ts / 86400.0))
                    if name:
                        user_segment[u] = index_of[name]
                n_items = int(snap.state(tenant, "n_items", 0) or 0)
                item_rows = store.read_item_rows(snap.txn, tenant, n_items)
                lists = segment_lists(history, item_rows, user_segment, len(names), now_ts,
                                      config.half_lives().affinity_days)
                counts = np.bincount(user_segment[user_segment >= 0], minlength=len(names))
                users = {name: int(counts[k]) for k, name in enumerate(names)}
        removed = 0
        with store.write() as txn:
            for name, items in zip(names, lists):
                store.put_list(txn, tenant, SEGMENT_LIST_PREFIX + name, items)
            prefix = (SEGMENT_LIST_PREFIX).encode()
            stale = [key for key, _ in store.iter_tenant(txn, "lists", tenant)
                     if key.startswith(prefix) and key[len(prefix):].decode() not in names]
            for key in stale:
                txn.delete(tenant.encode() + SEP + key, db=store.db["lists"])
            removed = len(stale)
    finally:
        store.close()
    return SegmentBuildReport(tenant, users, {n: int(len(items)) for n, items in zip(names, lists)}, removed,
                              time.perf_counter() - started)
