"""The ingest worker: JetStream ``FUNNEL_EVENTS`` -> the users db, exactly once.

One process per data directory (an exclusive lock on ``<data_dir>/ingest.lock``)
pulls up to :data:`FETCH_MAX` messages at a time from the durable consumer
``funnel-ingest`` and applies them in ONE LMDB write transaction together with
the last applied stream sequence (db ``progress``, key ``b"events"``); only
after the commit does it ack (AckAll on the batch's last message). Events at or
below the stored sequence are skipped, so a redelivery after a crash changes
nothing. LMDB owns the position: whenever the worker (re)connects it recreates
the consumer to start at stored sequence + 1, so delivery is always in stream
order and nothing is waited for (ack_wait) or skipped. The stored position is
tied to the stream's creation time; a recreated stream is applied from its start.

Per event: an event of an erased user that the user's tombstone covers
(server.events.erasure), an item unknown to the tenant's catalog, or a user whose
USER_CONSENT is not 1, skips it (counted; nothing of it is stored). Otherwise
the item's counters (db ``item_stats``) take it (server.events.rollup:
exact count, weight sum and skips, trending weight and per-type counts decayed
with the trending half-life), and a :class:`server.events.rollup.RollUp`
every ``rollup_s`` turns the counters that changed into item rows and the
trending/popular lists. Impressions stop there (no user row is created for
them). For the other types (user value created with ``empty_user_value`` if
missing):

* weight = ``ops.catalog.EVENT_WEIGHTS`` by type, dwell = min(watch s / 60, 1);
  a weight below 0.5 is a skip, as offline (``ops.features``);
* USER_EVENT_COUNT / USER_SKIP_COUNT += 1 / skip (exact; on a row built
  offline they start from round(expm1(USER_ACTIVITY)) and round(rate * count)),
  USER_ACTIVITY = log1p(count), USER_SKIP_RATE = skips / count,
  USER_LAST_ACTIVE_DAYS = max(itself, t / 86400);
* USER_AFFINITY is referenced at r = max(last active time, the tenant's
  ``now_ts``) -- offline rows are decayed to ``now_ts`` -- so an event at t > r
  first decays every category by 2**(-(t - r) / half_life) and adds its weight
  to the item's category; an older event adds weight * 2**(-(r - t) / half_life);
* the item becomes the newest entry of the seen ring (moved there if present).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field, fields

import numpy as np

from kernels.layout import (
    CHUNK_ROWS,
    CHUNK_ROWS_LOG2,
    ITEM_CATEGORY,
    ITEM_WIDTH,
    MAX_CATEGORIES,
    SEEN_CAP,
    STAT_WIDTH,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_CONSENT,
    USER_EVENT_COUNT,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_COUNT,
    USER_SKIP_RATE,
    USER_WIDTH,
)
from ops.catalog import DWELL_FULL_SECONDS, EVENT_WEIGHTS
from ops.features import AFFINITY_HALF_LIFE_DAYS, DAY_SECONDS, SKIP_BELOW, TRENDING_HALF_LIFE_DAYS
from protos import funnel_pb2
from server.events.erasure import erased_event
from server.events.nats_server import STREAM, SUBJECT_PREFIX, ensure_stream, tenant_of
from server.events.rollup import ItemCounters, RollUp, update_item_stats
from server.store import (
    LmdbStore,
    empty_impressions,
    empty_user_value,
    push_impression,
    user_row_view,
)
from server.store.lmdb_store import idx_key

log = logging.getLogger("funnel.ingest")

DURABLE = "funnel-ingest"
PROGRESS_KEY = b"events"
FETCH_MAX = 500
LAG_POLL_S = 2.0  # how often the consumer lag gauge asks JetStream
LOCKED_EXIT = 3  # process exit status: another worker owns this data directory
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)
_WEIGHTS = {getattr(funnel_pb2, name.upper()): w for name, w in EVENT_WEIGHTS.items()}


@dataclass
class ApplyStats:
    """What one batch did, per event."""

    applied: int = 0
    impressions: int = 0
    unknown_item: int = 0
    no_consent: int = 0
    erased: int = 0  # the user was erased after it (server.events.erasure)
    malformed: int = 0
    already_applied: int = 0
    last_seq: int = 0

    def add(self, other: "ApplyStats") -> None:
        for f in fields(self):
            if f.name != "last_seq":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.last_seq = max(self.last_seq, other.last_seq)

    def outcomes(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "last_seq"}


def event_weight(event) -> float | None:
    """The interaction weight of a non-impression event (None for an unknown type)."""
    if event.type == funnel_pb2.DWELL:
        return min(event.watch_time_ms / 1000.0 / DWELL_FULL_SECONDS, 1.0)
    return _WEIGHTS.get(event.type)


def touch_seen(value: bytearray, index: int) -> None:
    """Makes ``index`` the newest entry of the seen ring, moving it if present
    (the ring then holds distinct items, as the offline builder leaves it)."""
    tail = np.frombuffer(value, dtype=np.int32, count=2 + SEEN_CAP, offset=USER_WIDTH * 4)
    head, count, ring = int(tail[0]), int(tail[1]), tail[2:]
    if count < SEEN_CAP:  # not wrapped yet: ring[:count] is oldest .. newest and head == count
        hits = np.flatnonzero(ring[:count] == index)
        if hits.size:
            k = int(hits[0])
            ring[k:count - 1] = ring[k + 1:count].copy()
            ring[count - 1] = index
        else:
            ring[count] = index
            tail[0], tail[1] = (count + 1) % SEEN_CAP, count + 1
        return
    hits = np.flatnonzero(ring == index)
    if not hits.size:  # full: the oldest (at head) makes room
        ring[head] = index
        tail[0] = (head + 1) % SEEN_CAP
        return
    ordered = np.concatenate([ring[head:], ring[:head]])
    ring[:] = np.append(ordered[ordered != index], np.int32(index))
    tail[0] = 0


@dataclass
class _Batch:
    """What one batch changed so far (written at its end) and its lookup caches."""

    users: dict = field(default_factory=dict)        # (tenant, user_id) -> user value
    impressions: dict = field(default_factory=dict)  # (tenant, user_id) -> impression log
    item_stats: dict = field(default_factory=dict)   # (tenant, index) -> float64 counters
    items: dict = field(default_factory=dict)        # (tenant, item_id) -> (index, category) | None
    chunks: dict = field(default_factory=dict)       # (tenant, chunk) -> rows | None
    clocks: dict = field(default_factory=dict)       # tenant -> now_ts


class Applier:
    """The LMDB side of the worker: :meth:`apply` one batch of stream messages."""

    def __init__(self, store: LmdbStore, half_life_days: float = AFFINITY_HALF_LIFE_DAYS,
                 item_half_life_days: float = TRENDING_HALF_LIFE_DAYS):
        self.store = store
        self.half_life_s = half_life_days * DAY_SECONDS
        self.item_half_life_s = item_half_life_days * DAY_SECONDS
        self.counters = ItemCounters(store)

    def progress(self) -> dict:
        """{"seq": last applied stream sequence, "stream": stream identity} ({} before the first batch)."""
        with self.store.env.begin() as txn:
            raw = txn.get(PROGRESS_KEY, db=self.store.db["progress"])
        return json.loads(bytes(raw)) if raw is not None else {}

    def last_applied(self, stream_id: str) -> int:
        p = self.progress()
        return int(p.get("seq", 0)) if p.get("stream") == stream_id else 0

    def apply(self, batch, stream_id: str, lag=None) -> ApplyStats:
        """``batch``: (stream sequence, subject, payload, stored_at_s) in stream
        order. One write transaction: the user updates and the new position.
        ``lag``, if given, observes now - stored_at_s per applied event."""
        stats = ApplyStats()
        b = _Batch()
        progress_db = self.store.db["progress"]
        with self.store.write() as txn:
            raw = txn.get(PROGRESS_KEY, db=progress_db)
            p = json.loads(bytes(raw)) if raw is not None else {}
            last = int(p.get("seq", 0)) if p.get("stream") == stream_id else 0
            now = time.time()
            for seq, subject, payload, stored_at in batch:
                if seq <= last:
                    stats.already_applied += 1
                    continue
                last = seq
                outcome = self._apply_one(txn, stream_id, seq, subject, payload, b)
                setattr(stats, outcome, getattr(stats, outcome) + 1)
                if outcome == "applied" and lag is not None:
                    lag.observe(max(now - stored_at, 0.0))
            for (tenant, user_id), value in b.users.items():
                self.store.put_user(txn, tenant, user_id, value)
            for (tenant, user_id), value in b.impressions.items():
                self.store.put_impressions(txn, tenant, user_id, value)
            for (tenant, index), counters in b.item_stats.items():
                self.store.put_item_stats(txn, tenant, index, counters)
            txn.put(PROGRESS_KEY, json.dumps({"seq": last, "stream": stream_id}).encode(), db=progress_db)
        self.counters.commit(b.item_stats)  # only what is committed reaches the roll-up
        stats.last_seq = last
        return stats

    def _apply_one(self, txn, stream_id, seq, subject, payload, b: "_Batch") -> str:
        tenant = tenant_of(subject)
        try:
            event = funnel_pb2.Event.FromString(payload)
        except Exception:
            return "malformed"
        if not tenant or not event.user_id:
            return "malformed"
        if erased_event(txn, self.store, tenant, event.user_id, stream_id, seq, event.timestamp_ms):
            return "erased"
        impression = event.type == funnel_pb2.IMPRESSION
        weight = None if impression else event_weight(event)
        if weight is None and not impression:
            return "malformed"
        item = self._item(txn, tenant, event.item_id, b.items, b.chunks)
        if item is None:
            return "unknown_item"
        key = (tenant, event.user_id)
        value = b.users.get(key)
        if value is None:
            value = self.store.get_user_copy(txn, tenant, event.user_id)
        if value is not None and user_row_view(value)[USER_CONSENT] != 1.0:
            return "no_consent"
        t = event.timestamp_ms / 1000.0
        ikey = (tenant, item[0])
        counters = b.item_stats.get(ikey)
        if counters is None:
            counters = self.store.get_item_stats(txn, tenant, item[0])
            if counters is None:
                counters = np.zeros(STAT_WIDTH, dtype=np.float64)
            b.item_stats[ikey] = counters
        update_item_stats(counters, event.type, weight, t, self.item_half_life_s)
        if impression:
            log_value = b.impressions.get(key)
            if log_value is None:
                log_value = self.store.get_impressions_copy(txn, tenant, event.user_id) or empty_impressions()
                b.impressions[key] = log_value
            push_impression(log_value, item[0], t)
            return "impressions"
        if value is None:
            value = empty_user_value()
        b.users[key] = value
        if tenant not in b.clocks:
            b.clocks[tenant] = float(self.store.get_state(txn, tenant, "now_ts", 0) or 0)
        self._update(value, user_row_view(value), item, weight, t, b.clocks[tenant])
        return "applied"

    def _update(self, value: bytearray, row: np.ndarray, item: tuple[int, int], weight: float, t: float,
                clock: float) -> None:
        index, category = item
        count, skips = float(row[USER_EVENT_COUNT]), float(row[USER_SKIP_COUNT])
        if count == 0.0 and row[USER_ACTIVITY] > 0:  # a row built offline: recover the exact counts
            count = float(round(math.expm1(float(row[USER_ACTIVITY]))))
            skips = float(round(float(row[USER_SKIP_RATE]) * count))
        count += 1.0
        skips += 1.0 if weight < SKIP_BELOW else 0.0
        row[USER_EVENT_COUNT], row[USER_SKIP_COUNT] = count, skips
        row[USER_ACTIVITY] = math.log1p(count)
        row[USER_SKIP_RATE] = skips / count
        affinity = row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES]
        ref = max(float(row[USER_LAST_ACTIVE_DAYS]) * DAY_SECONDS, clock)
        if t > ref:
            affinity *= np.float32(2.0 ** (-(t - ref) / self.half_life_s))
            ref = t
        if category >= 0:
            affinity[category] += np.float32(weight * 2.0 ** (-(ref - t) / self.half_life_s))
        row[USER_LAST_ACTIVE_DAYS] = max(float(row[USER_LAST_ACTIVE_DAYS]), t / DAY_SECONDS)
        touch_seen(value, index)

    def _item(self, txn, tenant, item_id, items, chunks) -> tuple[int, int] | None:
        """(dense index, category or -1) of a catalog item; None if unknown."""
        key = (tenant, item_id)
        if key in items:
            return items[key]
        index = self.store.lookup_item(txn, tenant, item_id)
        found = None
        if index is not None:
            ckey = (tenant, index >> CHUNK_ROWS_LOG2)
            if ckey not in chunks:
                raw = txn.get(idx_key(tenant, ckey[1]), db=self.store.db["item_rows"])
                chunks[ckey] = (np.frombuffer(raw, dtype=np.float32).reshape(CHUNK_ROWS, ITEM_WIDTH)
                                if raw is not None else None)
            block = chunks[ckey]
            if block is not None:
                c = float(block[index & (CHUNK_ROWS - 1), ITEM_CATEGORY])
                found = (index, int(c) if 0 <= c < MAX_CATEGORIES and c == int(c) else -1)
        items[key] = found
        return found


class WorkerMetrics:
    """The worker's own Prometheus registry (it imports nothing of the serving stack)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.events = Counter("funnel_ingest_applied_total", "Stream events processed by the ingest worker",
                              ["outcome"], registry=self.registry)
        self.lag = Histogram("funnel_ingest_apply_lag_seconds", "JetStream store time -> LMDB commit",
                             buckets=LAG_BUCKETS, registry=self.registry)
        self.sequence = Gauge("funnel_ingest_last_sequence", "Last applied FUNNEL_EVENTS sequence",
                              registry=self.registry)
        self.pending = Gauge("funnel_ingest_consumer_pending", "Events in the stream not yet applied and acked "
                             "(consumer lag, polled every few seconds)", registry=self.registry)
        self.rollup = Histogram("funnel_ingest_rollup_seconds", "One tenant's roll-up of item counters into rows "
                                "and lists", buckets=LAG_BUCKETS, registry=self.registry)

    def observe(self, stats: ApplyStats) -> None:
        for outcome, n in stats.outcomes().items():
            if n:
                self.events.labels(outcome).inc(n)
        self.sequence.set(stats.last_seq)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)


class IngestWorker:
    """Consumes FUNNEL_EVENTS into ``data_dir``'s store until ``stop`` is set.
    Raises SystemExit(LOCKED_EXIT) when another worker holds the data directory's lock."""

    def __init__(self, data_dir: str, nats_url: str, batch: int = FETCH_MAX,
                 metrics: WorkerMetrics | None = None, log_every_s: float = 10.0, rollup_s: float = 1.0):
        self.data_dir, self.nats_url, self.batch = data_dir, nats_url, batch
        self.metrics = metrics or WorkerMetrics()
        self.rollup_s = rollup_s
        self.rollup: RollUp | None = None
        self.log_every_s = log_every_s
        self._resubscribe = False
        self._sub = None

    async def run(self, stop: asyncio.Event) -> None:
        lock_fd = self._lock()
        store = LmdbStore.open(self.data_dir)
        nc = None
        try:
            applier = Applier(store)
            self.rollup = RollUp(store, applier.counters, self.rollup_s, metrics=self.metrics)
            self.rollup.start()  # whatever a crash left un-rolled-up, before anything else
            self._roll_up()
            nc = await self._connect(stop)
            if nc is None:
                return
            js = nc.jetstream()
            failures = 0
            while not stop.is_set():
                try:
                    stream_id = await self._subscribe(js, applier)
                    failures = 0
                    await self._consume(applier, stream_id, stop)
                except Exception as exc:  # NATS trouble or a failed batch: re-position from LMDB
                    failures += 1
                    (log.warning if failures == 1 else log.debug)(
                        "ingest: %s: %s; re-subscribing from the last applied sequence", type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
        finally:
            if nc is not None:
                await nc.close()
            if self.rollup is not None and self.rollup.due(float("inf")):
                self._roll_up()
            store.close()
            os.close(lock_fd)

    def _lock(self) -> int:
        os.makedirs(self.data_dir, exist_ok=True)
        path = os.path.join(self.data_dir, "ingest.lock")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.error("another ingest worker is running for %s (%s is locked)", self.data_dir, path)
            raise SystemExit(LOCKED_EXIT) from None
        return fd

    async def _connect(self, stop: asyncio.Event):
        import nats

        async def on_error(exc):
            log.debug("nats: %s", exc)

        async def on_reconnect():
            self._resubscribe = True  # deliveries in flight may be lost: restart at the stored position

        connecting = asyncio.ensure_future(nats.connect(
            self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
            error_cb=on_error, reconnected_cb=on_reconnect))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((connecting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            return None
        return connecting.result()

    async def _subscribe(self, js, applier: Applier) -> str:
        """(Re)creates the durable consumer at the stored position; returns the stream identity."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        self._resubscribe = False
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # the old inbox may already be gone with the old connection
                pass
        info = await ensure_stream(js)
        stream_id = info.created.isoformat() if info.created else ""
        progress = applier.progress()
        if progress and progress.get("stream") != stream_id:
            log.warning("stream %s was recreated (%s, was %s): applying it from its start",
                        STREAM, stream_id, progress.get("stream"))
        last = applier.last_applied(stream_id)
        if info.state.first_seq > last + 1 and info.state.messages:
            log.warning("stream %s starts at %d but %d is the last applied: %d events expired unapplied",
                        STREAM, info.state.first_seq, last, info.state.first_seq - last - 1)
        try:
            await js.delete_consumer(STREAM, DURABLE)
        except NotFoundError:
            pass
        config = ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.ALL, ack_wait=30.0,
                                max_ack_pending=4 * self.batch, filter_subject=f"{SUBJECT_PREFIX}.>")
        if last:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, last + 1
        await js.add_consumer(STREAM, config)
        self._sub = await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)
        log.info("consuming %s from sequence %d", STREAM, last + 1)
        return stream_id

    async def _consume(self, applier: Applier, stream_id: str, stop: asyncio.Event) -> None:
        logged, window = time.monotonic(), ApplyStats()
        polled = 0.0
        while not stop.is_set() and not self._resubscribe:
            if time.monotonic() - polled >= LAG_POLL_S:
                polled = time.monotonic()
                info = await self._sub.consumer_info()
                self.metrics.pending.set(info.num_pending + info.num_ack_pending)
            msgs = await self._next_batch()
            if msgs:
                batch, newest, newest_seq = [], msgs[0], 0
                for m in msgs:
                    meta = m.metadata
                    batch.append((meta.sequence.stream, m.subject, m.data, meta.timestamp.timestamp()))
                    if meta.sequence.consumer > newest_seq:
                        newest, newest_seq = m, meta.sequence.consumer
                stats = applier.apply(batch, stream_id, self.metrics.lag)
                await newest.ack()  # AckAll: acknowledges the whole batch, after the commit
                self.metrics.observe(stats)
                window.add(stats)
            if self.rollup.due():
                self._roll_up()
            if time.monotonic() - logged >= self.log_every_s and window.last_seq:
                log.info("ingest: %s, last sequence %d",
                         ", ".join(f"{k}={v}" for k, v in window.outcomes().items() if v), window.last_seq)
                logged, window = time.monotonic(), ApplyStats()

    def _roll_up(self) -> None:
        for tenant, (rows, lists) in self.rollup.run().items():
            if rows or lists:
                log.debug("roll-up of %s: %d item rows, %d lists rewritten", tenant, rows, lists)

    async def _next_batch(self) -> list:
        """What is available now (up to ``batch``); when nothing is, waits up to
        1 s for one message and takes what arrived with it."""
        from nats.errors import TimeoutError as NatsTimeout

        try:
            return await self._sub.fetch(self.batch, timeout=0.05)
        except (NatsTimeout, asyncio.TimeoutError):
            pass
        try:
            first = await self._sub.fetch(1, timeout=1.0)
        except (NatsTimeout, asyncio.TimeoutError):
            return []
        try:
            return first + await self._sub.fetch(self.batch - 1, timeout=0.05)
        except (NatsTimeout, asyncio.TimeoutError):
            return first


def run_ingest(data_dir: str, nats_url: str, metrics_port: int = 0, host: str = "127.0.0.1",
               batch: int = FETCH_MAX, rollup_s: float = 1.0) -> None:
    """Process entry point (``funnel ingest``, and the worker ``funnel serve`` starts):
    runs until SIGTERM/SIGINT, finishing the batch in hand."""
    logging.basicConfig(level=os.environ.get("FUNNEL_LOG_LEVEL", "INFO"),
                        format="%(asctime)s ingest %(levelname)s %(name)s: %(message)s")
    metrics = WorkerMetrics()
    if metrics_port:
        metrics.serve(metrics_port, host)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await IngestWorker(data_dir, nats_url, batch=batch, metrics=metrics, rollup_s=rollup_s).run(stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # uvloop is not available on Windows
        asyncio.run(main())
