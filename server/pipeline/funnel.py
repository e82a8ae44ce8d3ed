"""The funnel: retrieve -> hard filters -> assemble -> score -> re-rank, with the
degradation stack when a stage cannot finish in budget.

| level | served                                   | when                               |
|-------|------------------------------------------|------------------------------------|
| 0     | full ranking (pre-ranker + ranker)       | normal                             |
| 1     | pre-ranker only over fewer candidates    | budget too tight for the ranker    |
| 2     | this user's cached recent ranking        | ranking unavailable or late        |
| 3     | the user's segment list: named segment's | no cache for the user              |
|       | list, else their top category's          |                                    |
| 4     | tenant popular                           | everything else; non-personalised  |

Every level's items pass the same FilterPlan, and any level that comes up short
is topped up from the popular list (which holds every active item), so a known
tenant with any eligible item never gets an empty list.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from kernels.features import assemble_features
from kernels.layout import ITEM_WIDTH, N_FEATURES, N_SOURCE_SIGNALS
from server.events.erasure import invalidated_after
from server.models.runtime import ModelError
from server.pipeline.filters import FilterPlan, count_removals
from server.pipeline.rerankers import Ranking
from server.pipeline.rerankers.reasons import fallback_reason
from server.pipeline.scorers import RankingUnavailable
from server.pipeline.state import SOURCE_CACHE, SOURCE_POPULAR, SOURCE_SEGMENT, RequestState
from server.segments import SEGMENT_LIST_PREFIX

log = logging.getLogger("funnel.pipeline")

LEVEL_FULL, LEVEL_REDUCED, LEVEL_CACHED, LEVEL_SEGMENT, LEVEL_POPULAR = range(5)
ALREADY_RANKED = 0xFF  # deny-list code for top-up: not a filter removal, never counted


class DeadlineExceeded(RuntimeError):
    pass


@dataclass
class FunnelResult:
    ranking: Ranking
    level: int
    personalized: bool
    model_version: str
    canary: bool = False             # a canary model scored it (server.models.deploy)


class RecentRankings:
    """Per-process LRU of each user's latest full ranking (degradation level 2).
    The hot path never writes the store (only the ingest worker writes features),
    so the cache lives in memory.

    Erasure and consent opt-out reach every process through the store, not through
    this object: an entry remembers the LMDB snapshot (transaction id) it was
    computed from, and :meth:`get` drops it when the user's tombstone says their
    data was erased or cleared by a later transaction (server.events.erasure)."""

    def __init__(self, capacity: int = 100_000, keep: int = 100):
        self.capacity, self.keep = capacity, keep
        self._entries: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()

    def put(self, tenant: str, user: str, items: np.ndarray, as_of: int) -> None:
        """``as_of``: the id of the read snapshot the ranking was computed from."""
        key = (tenant, user)
        self._entries[key] = (items[: self.keep].astype(np.int32), as_of)  # int32: half the memory per user
        self._entries.move_to_end(key)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, tenant: str, user: str, snap) -> np.ndarray | None:
        """The cached ranking, unless the user was erased or opted out after it was
        computed (one tombstone lookup in ``snap``, on this fallback path only)."""
        entry = self._entries.get((tenant, user))
        if entry is None:
            return None
        if invalidated_after(snap.txn, snap.store, tenant, user) > entry[1]:
            self.forget(tenant, user)
            return None
        return entry[0]

    def forget(self, tenant: str, user: str) -> None:
        self._entries.pop((tenant, user), None)


class Funnel:
    def __init__(self, sources, filters, prerank, ranker, rerankers, *, snapshot_size: int = 300,
                 reduced_candidates: int = 300, ranker_reserve: float = 0.35, cache: RecentRankings | None = None,
                 metrics=None):
        self.sources = sources            # run in order; an error skips a source (fail open), overrunning
                                          # its budget is counted; the request deadline bounds them all
        self.filters = filters            # fail closed: a filter error fails the request
        self.prerank = prerank
        self.ranker = ranker
        self.rerankers = rerankers        # order matters: freshness sorts, diversity pages, slots, reasons
        # fallback lists keep their own order and reasons but still obey diversity and sponsored slots
        self.fallback_rerankers = [r for r in rerankers if r.name in ("diversity", "sponsored")]
        self.snapshot_size = snapshot_size
        self.reduced_candidates = reduced_candidates
        self.ranker_reserve = ranker_reserve  # share of the budget the ranker needs left, else level 1
        self.cache = cache or RecentRankings()
        self.metrics = metrics

    # ------------------------------------------------------------------ entry
    def filter_plan(self, state: RequestState) -> FilterPlan:
        """The request's hard filters (fail closed), with the item chunks they read resolved."""
        plan = FilterPlan()
        for stage in self.filters:
            stage.contribute(state, plan)
        state.chunk_addrs, state.n_items = state.snap.chunks(state.tenant.tenant_id)
        return plan

    def run(self, state: RequestState) -> FunnelResult:
        plan = self.filter_plan(state)
        budget = max(state.remaining(), 1e-6)
        ranking, level = None, LEVEL_POPULAR
        if state.personalized:
            try:
                ranking, level = self._rank(state, plan, budget)
                if len(ranking) and state.known_user:
                    self.cache.put(state.tenant.tenant_id, state.user_id, ranking.items, state.snap.txn.id())
            except (RankingUnavailable, DeadlineExceeded, ModelError) as exc:
                log.debug("ranking unavailable for %s/%s: %s", state.tenant.tenant_id, state.user_id, exc)
                if self.metrics:
                    self.metrics.ranking_unavailable(state.tenant.tenant_id, type(exc).__name__)
                ranking = None
            if ranking is None or len(ranking) == 0:
                ranking, level = self._fallback(state, plan, LEVEL_CACHED)
        else:
            ranking, level = self._fallback(state, plan, LEVEL_POPULAR)
        ranking = self._top_up(state, plan, ranking)
        # what actually scored: both models at level 0, the pre-ranker alone at level 1
        models, model_version, canary = state.models, "", False
        if level == LEVEL_FULL and models is not None:
            model_version, canary = models.version, models.canary
        elif level == LEVEL_REDUCED and models is not None:
            model_version, canary = models.prerank_version, models.prerank_canary
        return FunnelResult(ranking, level, state.personalized and level <= LEVEL_CACHED, model_version, canary)

    # ---------------------------------------------------------------- level 0/1
    def _retrieve(self, state: RequestState):
        parts, started = [], time.perf_counter()
        for source in self.sources:
            if state.remaining() <= 0:
                state.sources_failed.append(f"{source.name}:skipped")
                continue
            t0 = time.perf_counter()
            try:
                result = source.retrieve(state)
            except Exception:  # a source fails open
                log.exception("source %s failed", source.name)
                state.sources_failed.append(source.name)
                continue
            if (time.perf_counter() - t0) * 1000.0 > source.budget_ms:
                # counted; the answer is kept: sources run in-line, so the time is spent either way
                state.sources_failed.append(f"{source.name}:late")
            if result is not None and result.items.shape[0]:
                parts.append((source, result))
        state.stage_seconds["retrieve"] = time.perf_counter() - started
        if not parts:
            raise RankingUnavailable("no candidate source returned anything")
        items = np.concatenate([r.items for _, r in parts])
        unique, inverse = np.unique(items, return_inverse=True)
        signals = np.zeros((unique.shape[0], N_SOURCE_SIGNALS), dtype=np.float32)
        bits = np.zeros(unique.shape[0], dtype=np.uint8)
        offset = 0
        for source, result in parts:
            where = inverse[offset:offset + result.items.shape[0]]
            offset += result.items.shape[0]
            bits[where] |= source.bit
            if source.signal is not None:
                np.maximum.at(signals[:, source.signal], where, result.strength)
        state.candidates_retrieved = int(unique.shape[0])
        return unique, signals, bits

    def _rank(self, state: RequestState, plan: FilterPlan, budget: float) -> tuple[Ranking, int]:
        candidates, signals, bits = self._retrieve(state)
        t0 = time.perf_counter()
        outcome = plan.apply(candidates, state)
        count_removals(outcome, state.filtered)
        candidates, signals, bits = outcome.kept, signals[outcome.mask], bits[outcome.mask]
        if candidates.shape[0] == 0:
            raise RankingUnavailable("every candidate was filtered")
        if state.remaining() <= 0:
            raise DeadlineExceeded("after retrieval and filtering")
        level = LEVEL_FULL
        if state.remaining() < self.ranker_reserve * budget and candidates.shape[0] > self.reduced_candidates:
            level = LEVEL_REDUCED  # cheaper: fewer candidates, pre-ranker only
            best = np.argsort(-signals.max(axis=1), kind="stable")[: self.reduced_candidates]
            candidates, signals, bits = candidates[best], signals[best], bits[best]
        features = np.empty((candidates.shape[0], N_FEATURES), dtype=np.float32)
        categories = np.empty(candidates.shape[0], dtype=np.int32)
        assemble_features(candidates, state.chunk_addrs, ITEM_WIDTH, state.user_row, state.affinity(),
                          np.ascontiguousarray(signals), float(state.tenant.now_days()),
                          state.tenant.recency_half_life_days, features, categories)
        t1 = time.perf_counter()
        state.stage_seconds["filter_assemble"] = t1 - t0
        state.models = state.tenant.models_for(state.surface, state.user_id, state.model_override)
        scores = self.prerank.score(state, features)
        keep = self.prerank.keep
        if scores.shape[0] > keep:
            best = np.argpartition(-scores, keep - 1)[:keep]
            candidates, features, categories, bits, scores = (
                candidates[best], features[best], categories[best], bits[best], scores[best])
        if level == LEVEL_FULL and state.remaining() < self.ranker_reserve * budget:
            level = LEVEL_REDUCED
        if level == LEVEL_FULL:
            scores = self.ranker.score(state, np.ascontiguousarray(features))
        if state.remaining() <= 0:
            raise DeadlineExceeded("after scoring")
        state.candidates_scored = int(candidates.shape[0])
        t2 = time.perf_counter()
        state.stage_seconds["score"] = t2 - t1
        n = candidates.shape[0]
        ranking = Ranking(candidates, scores, features, categories, bits,
                          np.zeros(n, dtype=bool), np.zeros(n, dtype=np.uint8))
        for stage in self.rerankers:
            ranking = stage.rerank(state, ranking)
        state.stage_seconds["rerank"] = time.perf_counter() - t2
        return ranking.take(np.arange(min(len(ranking), self.snapshot_size))), level

    # ------------------------------------------------------------- level 2/3/4
    def _list_ranking(self, state, plan, items: np.ndarray, source_bit: int, want: int) -> Ranking:
        """Filter a precomputed list (best first), scanning it in growing slices
        until ``want`` items pass or the list ends."""
        kept, start, step = [], 0, max(want * 2, 64)
        total = 0
        while start < items.shape[0] and total < want:
            outcome = plan.apply(items[start:start + step], state)
            count_removals(outcome, state.filtered)
            kept.append(outcome.kept)
            total += outcome.kept.shape[0]
            start += step
            step *= 4
        chosen = np.concatenate(kept)[:want] if kept else np.empty(0, dtype=np.int64)
        n = chosen.shape[0]
        # features only for the categories (diversity) and recency (freshness); scores stay list order
        features = np.empty((n, N_FEATURES), dtype=np.float32)
        categories = np.empty(n, dtype=np.int32)
        assemble_features(chosen, state.chunk_addrs, ITEM_WIDTH, state.user_row, state.affinity(),
                          np.zeros((n, N_SOURCE_SIGNALS), dtype=np.float32), float(state.tenant.now_days()),
                          state.tenant.recency_half_life_days, features, categories)
        return Ranking(chosen, (1.0 / (1.0 + np.arange(n))).astype(np.float32), features, categories,
                       np.full(n, source_bit, dtype=np.uint8), np.zeros(n, dtype=bool),
                       np.full(n, fallback_reason(source_bit), dtype=np.uint8))

    def _diversified(self, state, ranking: Ranking) -> Ranking:
        for stage in self.fallback_rerankers:
            ranking = stage.rerank(state, ranking)
        return ranking

    def _fallback(self, state, plan, first_level: int) -> tuple[Ranking, int]:
        want = max(state.limit, min(self.snapshot_size, state.limit * 5))
        tenant = state.tenant.tenant_id
        if first_level <= LEVEL_CACHED and state.known_user:
            cached = self.cache.get(tenant, state.user_id, state.snap)
            if cached is not None:
                ranking = self._list_ranking(state, plan, cached, SOURCE_CACHE, want)
                if len(ranking):
                    return self._diversified(state, ranking), LEVEL_CACHED
        if first_level <= LEVEL_SEGMENT:
            # the named segment's list (`funnel segments build`), else the top-category list
            if state.segment:
                named = state.snap.item_list(tenant, SEGMENT_LIST_PREFIX + state.segment)
                ranking = self._list_ranking(state, plan, named, SOURCE_SEGMENT, want)
                if len(ranking):
                    return self._diversified(state, ranking), LEVEL_SEGMENT
            affinity = state.affinity()
            if affinity.any():
                segment = state.snap.item_list(tenant, f"segment:{int(np.argmax(affinity))}")
                ranking = self._list_ranking(state, plan, segment, SOURCE_SEGMENT, want)
                if len(ranking):
                    return self._diversified(state, ranking), LEVEL_SEGMENT
        popular = self._list_ranking(state, plan, state.snap.item_list(tenant, "popular"), SOURCE_POPULAR, want)
        return self._diversified(state, popular), LEVEL_POPULAR

    def _top_up(self, state, plan, ranking: Ranking) -> Ranking:
        """Fill a short ranking from the popular list (the never-empty guarantee);
        the extra items score below everything already ranked."""
        if len(ranking) >= state.limit:
            return ranking
        plan.deny(ranking.items, ALREADY_RANKED)
        extra = self._list_ranking(state, plan, state.snap.item_list(state.tenant.tenant_id, "popular"),
                                   SOURCE_POPULAR, state.limit - len(ranking))
        if not len(extra):
            return ranking
        if len(ranking):
            extra.scores = float(ranking.scores.min()) - np.arange(1, len(extra) + 1, dtype=np.float32)
        return Ranking(*(np.concatenate([a, b]) for a, b in (
            (ranking.items, extra.items), (ranking.scores, extra.scores), (ranking.features, extra.features),
            (ranking.categories, extra.categories), (ranking.sources, extra.sources),
            (ranking.sponsored, extra.sponsored), (ranking.reasons, extra.reasons))))
