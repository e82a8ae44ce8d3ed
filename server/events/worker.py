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

Deliveries come through :class:`EventPuller`: pull requests on the consumer
answered into one inbox subscription whose callback only appends the message;
the stream sequence and store time are read off the ack subject, and a gap in
the consumer's delivery sequence (a delivery lost between NATS and the worker)
re-positions from LMDB like a reconnect does.

Per event: an event of an erased user that the user's tombstone covers
(server.events.erasure), an item unknown to the tenant's catalog, or a user whose
USER_CONSENT is not 1, skips it (counted; nothing of it is stored). Otherwise
the item's counters (db ``item_stats``) take it (server.events.rollup:
exact count, weight sum and skips, trending weight and per-type counts decayed
with the tenant's trending half-life), and a :class:`server.events.rollup.RollUp`
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
  to the item's category; an older event adds weight * 2**(-(r - t) / half_life),
  half_life being the tenant's affinity half-life;
* the item becomes the newest entry of the seen ring (moved there if present);
* an engaged event (weight >= SKIP_BELOW) with a ``session_id`` joins the user's
  current session (db ``sessions``, rules in :mod:`server.store.sessions`).

Both half-lives come from the tenant config (``affinity_half_life_days``,
``trending_half_life_days``; defaults 30 and 7 days), read once per batch per
tenant through :class:`server.events.half_lives.TenantHalfLives`, which parses the
config again only when it changed. A change applies to the events applied after
it: the decayed sums already stored are not recomputed.

The per-event arithmetic of the user row and the item counters is
:mod:`kernels.ingest` (compiled; its NumPy reference under FUNNEL_PURE_PYTHON=1).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import struct
import time
from bisect import bisect_left
from dataclasses import dataclass, field, fields

import numpy as np

from kernels.ingest import apply_user_event, update_item_stats
from kernels.layout import (
    CHUNK_ROWS,
    CHUNK_ROWS_LOG2,
    ITEM_CATEGORY,
    ITEM_WIDTH,
    MAX_CATEGORIES,
    STAT_WIDTH,
    USER_CONSENT,
)
from ops.catalog import DWELL_FULL_SECONDS, EVENT_WEIGHTS
from ops.features import AFFINITY_HALF_LIFE_DAYS, DAY_SECONDS, SKIP_BELOW, TRENDING_HALF_LIFE_DAYS
from protos import funnel_pb2
from server.events.erasure import ERASED_DB, tombstone
from server.events.half_lives import TenantHalfLives
from server.events.nats_server import EVENTS_MAX_AGE_DAYS, STREAM, SUBJECT_PREFIX, ensure_event_stream, tenant_of
from server.events.rollup import ItemCounters, RollUp
from server.store import LmdbStore, empty_impressions, empty_user_value, push_impression
from server.store.lmdb_store import idx_key, tkey
from server.store.sessions import add_session_item, session_hash

log = logging.getLogger("funnel.ingest")

DURABLE = "funnel-ingest"
PROGRESS_KEY = b"events"
# Events per pull request and most per transaction (``funnel ingest --batch``). The synced
# commit costs about the same for 500 events as for 4000 (the item_stats pages a batch dirties,
# the fsync): draining a backlog alone, 4000 per transaction took ~39 us of CPU per event,
# 500 ~50 (bench/README.md, "Per-event cost, second pass"). Without a backlog a batch is
# what has arrived, so it stays small and visibility does not change.
FETCH_MAX = 4000
PULL_EXPIRES_S = 5.0  # an unanswered pull request ends (status 408) after this long; the next one follows
LAG_POLL_S = 2.0  # how often the consumer lag gauge asks JetStream
LOCKED_EXIT = 3  # process exit status: another worker owns this data directory
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0)
_WEIGHTS = {getattr(funnel_pb2, name.upper()): w for name, w in EVENT_WEIGHTS.items()}
_CONSENT = struct.Struct("<f")  # USER_CONSENT of a stored user value, read in place
_CONSENT_OFFSET = USER_CONSENT * 4
_IMPRESSION = funnel_pb2.IMPRESSION
_EMPTY_USER = bytes(empty_user_value())
_UNSEEN = object()
_OUTCOMES = ("applied", "impressions", "unknown_item", "no_consent", "erased", "malformed")


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


def _tenant_prefix(subject) -> tuple[str, bytes]:
    """(tenant of an event subject, "" when it is not one; the tenant's key prefix in the users db)."""
    tenant = tenant_of(subject.decode() if isinstance(subject, bytes) else subject)
    return tenant, tkey(tenant, b"")


def observe_each(histogram, amounts) -> None:
    """``histogram.observe(a)`` for every a in ``amounts``: the same bucket counts, and the
    same sum up to the order of the float additions, with one increment per bucket that
    got any (prometheus_client's Histogram internals; per amount where they are not there)."""
    if not amounts:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        for a in amounts:
            histogram.observe(a)
        return
    histogram._raise_if_not_observable()
    counts = [0] * len(bounds)
    s = 0.0
    for a in amounts:
        s += a
        k = bisect_left(bounds, a)  # the first bound >= a, as observe's ``a <= bound``
        if k < len(counts) and a == a:  # NaN: no bucket
            counts[k] += 1
    total.inc(s)
    for k, n in enumerate(counts):
        if n:
            buckets[k].inc(n)


@dataclass
class _TenantItems:
    """A tenant's catalog lookups and committed item counters, kept across batches while
    its ``catalog_gen`` stays: every catalog change bumps it, and so does ``funnel load``,
    the only other writer of the counters. Counters go in only after their commit and are
    never changed in place (a batch works on copies)."""

    catalog_gen: int
    items: dict = field(default_factory=dict)  # item_id -> (index, category) | None
    stats: dict = field(default_factory=dict)  # index -> float64 counters as committed
    # the tenant's half-lives in seconds, set from its config once per batch (Applier._items_of)
    affinity_half_life_s: float = AFFINITY_HALF_LIFE_DAYS * DAY_SECONDS
    trending_half_life_s: float = TRENDING_HALF_LIFE_DAYS * DAY_SECONDS

    MAX_ENTRIES = 1 << 18  # per dict; past it the dict starts over (memory stays bounded)


@dataclass
class _Batch:
    """What one batch changed so far (written at its end) and its lookup caches."""

    # user keys are the users db's, tkey(tenant, user_id)
    users: dict = field(default_factory=dict)        # user key -> user value to write
    impressions: dict = field(default_factory=dict)  # user key -> impression log
    sessions: dict = field(default_factory=dict)     # user key -> session value (server.store.sessions)
    item_stats: dict = field(default_factory=dict)   # (tenant, index) -> float64 counters
    tenant_items: dict = field(default_factory=dict)  # tenant -> _TenantItems, checked this batch
    chunks: dict = field(default_factory=dict)       # (tenant, chunk) -> rows | None
    clocks: dict = field(default_factory=dict)       # tenant -> now_ts
    stored: dict = field(default_factory=dict)       # user key -> stored user value | None
    tombstones: dict = field(default_factory=dict)   # user key -> Tombstone | None


class Applier:
    """The LMDB side of the worker: :meth:`apply` one batch of stream messages, each event
    with its tenant's half-lives (``half_lives``, shared with the RollUp)."""

    def __init__(self, store: LmdbStore, half_lives: TenantHalfLives | None = None):
        self.store = store
        self.half_lives = half_lives or TenantHalfLives(store)
        self.counters = ItemCounters(store)
        self._tenant_items: dict[str, _TenantItems] = {}
        # subject (str or bytes) -> (tenant or "" when not an event's, its key prefix); bounded like _TenantItems
        self._subjects: dict = {}

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
        ``lag``, if given, observes now - stored_at_s per applied event
        (:func:`observe_each`: what one ``observe`` per event would record)."""
        counts = dict.fromkeys(_OUTCOMES, 0)
        already = 0
        b = _Batch()
        store = self.store
        progress_db = store.db["progress"]
        users_db = store.db["users"]
        subjects = self._subjects
        if len(subjects) >= _TenantItems.MAX_ENTRIES:
            subjects.clear()
        stored_ats = []
        with store.write() as txn:
            raw = txn.get(PROGRESS_KEY, db=progress_db)
            p = json.loads(bytes(raw)) if raw is not None else {}
            last = int(p.get("seq", 0)) if p.get("stream") == stream_id else 0
            erased_db = store.db.get(ERASED_DB)
            any_erased = erased_db is not None and txn.stat(erased_db)["entries"] > 0
            now = time.time()
            from_string = funnel_pb2.Event.FromString
            users, stored, item_stats, tenant_items = b.users, b.stored, b.item_stats, b.tenant_items
            for seq, subject, payload, stored_at in batch:
                if seq <= last:
                    already += 1
                    continue
                last = seq
                # --- the event and its user (outcome "malformed" / "erased")
                tenant = subjects.get(subject)
                if tenant is None:
                    tenant = subjects[subject] = _tenant_prefix(subject)
                try:
                    event = from_string(payload)
                except Exception:
                    counts["malformed"] += 1
                    continue
                user_id = event.user_id
                if not tenant[0] or not user_id:
                    counts["malformed"] += 1
                    continue
                tenant, key = tenant[0], tenant[1] + user_id.encode()
                if any_erased:
                    stone = b.tombstones.get(key, _UNSEEN)
                    if stone is _UNSEEN:
                        stone = b.tombstones[key] = tombstone(txn, store, tenant, user_id)
                    if stone is not None and stone.covers(stream_id, seq, event.timestamp_ms):
                        counts["erased"] += 1
                        continue
                etype = event.type
                impression = etype == _IMPRESSION
                if impression:
                    weight = None
                else:
                    weight = event_weight(event)
                    if weight is None:
                        counts["malformed"] += 1
                        continue
                # --- the item ("unknown_item") and the user's consent ("no_consent")
                items = tenant_items.get(tenant) or self._items_of(txn, tenant, b)
                item = items.items.get(event.item_id, _UNSEEN)
                if item is _UNSEEN:
                    item = self._item(txn, tenant, event.item_id, items, b.chunks)
                if item is None:
                    counts["unknown_item"] += 1
                    continue
                value = users.get(key)
                if value is None:
                    value = stored.get(key, _UNSEEN)
                    if value is _UNSEEN:
                        raw = txn.get(key, db=users_db)
                        value = stored[key] = None if raw is None else bytearray(raw)
                if value is not None and _CONSENT.unpack_from(value, _CONSENT_OFFSET)[0] != 1.0:
                    counts["no_consent"] += 1
                    continue
                # --- applied: the item's counters, then the impression log or the user row
                t = event.timestamp_ms / 1000.0
                index = item[0]
                ikey = (tenant, index)
                counters = item_stats.get(ikey)
                if counters is None:
                    counters = item_stats[ikey] = self._item_counters(txn, tenant, index, items)
                update_item_stats(counters, etype, weight, t, items.trending_half_life_s)
                if impression:
                    log_value = b.impressions.get(key)
                    if log_value is None:
                        raw = txn.get(key, db=store.db["impressions"])
                        log_value = b.impressions[key] = bytearray(raw) if raw else empty_impressions()
                    push_impression(log_value, index, t)
                    counts["impressions"] += 1
                    continue
                if value is None:
                    value = bytearray(_EMPTY_USER)
                users[key] = value
                clock = b.clocks.get(tenant)
                if clock is None:
                    clock = b.clocks[tenant] = float(store.get_state(txn, tenant, "now_ts", 0) or 0)
                apply_user_event(value, index, item[1], weight, t, clock, items.affinity_half_life_s)
                if weight >= SKIP_BELOW:
                    session_id = event.session_id
                    if session_id:
                        self._session_event(txn, key, session_id, t, index, b)
                counts["applied"] += 1
                if lag is not None:
                    stored_ats.append(stored_at)
            if lag is not None:
                observe_each(lag, [max(now - stored_at, 0.0) for stored_at in stored_ats])
            # in key order: neighbouring keys share the pages already copied in this transaction
            txn.cursor(db=users_db).putmulti(sorted(b.users.items()))
            txn.cursor(db=store.db["impressions"]).putmulti(sorted(b.impressions.items()))
            if b.sessions:
                txn.cursor(db=store.db["sessions"]).putmulti(sorted(b.sessions.items()))
            txn.cursor(db=store.db["item_stats"]).putmulti(
                sorted((idx_key(tenant, index), counters.tobytes())
                       for (tenant, index), counters in b.item_stats.items()))
            txn.put(PROGRESS_KEY, json.dumps({"seq": last, "stream": stream_id}).encode(), db=progress_db)
        # only what is committed reaches the roll-up and the cache
        self.counters.commit(b.item_stats)
        for (tenant, index), counters in b.item_stats.items():
            cached = b.tenant_items[tenant].stats
            if len(cached) >= _TenantItems.MAX_ENTRIES:
                cached.clear()
            cached[index] = counters
        return ApplyStats(already_applied=already, last_seq=last, **counts)

    def _item_counters(self, txn, tenant: str, index: int, items: "_TenantItems") -> np.ndarray:
        """A copy of the item's counters (committed cache, else the store, else zeros) for this batch."""
        committed = items.stats.get(index)
        if committed is not None:
            return committed.copy()
        counters = self.store.get_item_stats(txn, tenant, index)
        return counters if counters is not None else np.zeros(STAT_WIDTH, dtype=np.float64)

    def _session_event(self, txn, key: bytes, session_id: str, t: float, index: int, b: _Batch) -> None:
        """An engaged event of ``session_id`` joins (or starts) the user's current session
        (``key``: the user's key, tkey(tenant, user_id))."""
        current = b.sessions.get(key)
        if current is None:
            current = txn.get(key, db=self.store.db["sessions"])
        changed = add_session_item(current, session_hash(session_id), t, index)
        if changed is not None:
            b.sessions[key] = changed

    def _items_of(self, txn, tenant: str, b: _Batch) -> _TenantItems:
        """The tenant's cross-batch item cache, started over when its catalog_gen moved, with
        the half-lives of the tenant's config as of this batch. Once per batch per tenant."""
        gen = int(self.store.get_state(txn, tenant, "catalog_gen", 0) or 0)
        items = self._tenant_items.get(tenant)
        if items is None or items.catalog_gen != gen:
            items = self._tenant_items[tenant] = _TenantItems(gen)
        items.affinity_half_life_s, items.trending_half_life_s = self.half_lives.seconds(txn, tenant)
        b.tenant_items[tenant] = items
        return items

    def _item(self, txn, tenant, item_id, items: _TenantItems, chunks) -> tuple[int, int] | None:
        """(dense index, category or -1) of a catalog item; None if unknown."""
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
        if len(items.items) >= _TenantItems.MAX_ENTRIES:
            items.items.clear()
        items.items[item_id] = found
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
        self.missing = Counter("funnel_ingest_missing_total", "Stream sequences gone before the worker applied "
                               "them: purged by an erasure, or removed by the stream's retention (max age / "
                               "max bytes) while the worker was behind", registry=self.registry)
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


def delivery_of(reply: bytes) -> tuple[int, int, float]:
    """(stream sequence, consumer delivery sequence, stored at s) of a JetStream
    delivery, from its ack subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream
    seq>.<consumer seq>.<ns>.<pending>``, or with ``<domain>.<account>`` after ``ACK``."""
    tokens = reply.split(b".")
    k = 5 if len(tokens) == 9 else 7
    if len(tokens) < 9 or tokens[0] != b"$JS" or tokens[1] != b"ACK":
        raise ValueError(f"not a JetStream delivery: {reply!r}")
    return int(tokens[k]), int(tokens[k + 1]), int(tokens[k + 2]) / 1e9


def raw_delivery_client():
    """A nats-py client (``await client.connect(...)`` as for ``nats.connect``) that hands
    the deliveries of the subscriptions in its ``raw_inboxes`` ({sid: callback}) to the
    callback as ``(subject, reply, payload, headers)`` bytes instead of parsing headers,
    building a Msg and queueing it for a task per subscription, which costs more than the
    worker's whole apply per event. Relies on nats-py's ``Client._process_msg(sid, subject,
    reply, data, headers)`` and its protocol ``Parser`` (``buf``, ``state``; 2.x): plain
    ``MSG`` frames of a raw inbox at the start of what was read are taken off the buffer
    by :func:`_take_raw_msgs` (one ``find`` and ``split`` per frame instead of the
    parser's regex and coroutine); everything else goes through nats-py's parser."""
    from nats.aio.client import Client
    from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

    class RawParser(Parser):
        async def parse(self, data: bytes = b""):
            raw = self.nc.raw_inboxes
            if self.state != AWAITING_CONTROL_LINE or not raw:
                return await super().parse(data)
            buf = self.buf
            buf.extend(data)
            if _take_raw_msgs(buf, raw) and buf:  # another frame (a status, PING, INFO, ...): nats-py's turn
                await super().parse(b"")

    class RawDeliveryClient(Client):
        def __init__(self):
            super().__init__()
            self.raw_inboxes = {}
            self._ps = RawParser(self)

        async def _process_msg(self, sid, subject, reply, data, headers):
            take = self.raw_inboxes.get(sid)
            if take is None:
                return await super()._process_msg(sid, subject, reply, data, headers)
            take(subject, reply, data, headers)

    return RawDeliveryClient()


def _take_raw_msgs(buf: bytearray, raw: dict) -> bool:
    """Hands the complete ``MSG <subject> <sid> [<reply>] <size>\\r\\n<payload>\\r\\n`` frames
    at the start of ``buf`` whose sid is in ``raw`` to their callback, as nats-py's parser
    would (``(subject, reply or b"", payload, None)``), and removes them from ``buf`` (each
    before its callback runs, as nats-py does). False when it stopped at an incomplete frame
    of a raw inbox (wait for more bytes), True when at another frame or at the end."""
    pos, n = 0, len(buf)
    try:
        while pos < n:
            if not buf.startswith(b"MSG ", pos):
                return True
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            args = bytes(buf[pos + 4:eol]).split(b" ")
            if len(args) == 4:
                subject, sid, reply, size = args
            elif len(args) == 3:
                (subject, sid, size), reply = args, b""
            else:  # not the server's single spaces: nats-py's parser reads it
                return True
            if not (sid.isdigit() and size.isdigit()):
                return True
            take = raw.get(int(sid))
            if take is None:
                return True
            start = eol + 2
            end = start + int(size)
            if end + 2 > n:
                return False
            pos = end + 2
            take(subject, reply, bytes(buf[start:end]), None)
        return True
    finally:
        if pos:
            del buf[:pos]


class EventPuller:
    """Pulls the durable consumer into one inbox: pull requests for ``batch`` messages
    (``expires`` :data:`PULL_EXPIRES_S`) are answered into a raw inbox
    (:func:`raw_delivery_client`) whose callback only appends each delivery as
    ``(subject, reply, payload)`` bytes; nats-py's ``fetch`` instead awaits every message
    with its own timeout. A new request goes out when at most half a batch is still owed,
    so deliveries continue while a batch is applied (the consumer's max_ack_pending bounds
    what is in flight)."""

    def __init__(self, nc, batch: int, expires_s: float = PULL_EXPIRES_S):
        self.nc, self.batch, self.expires_s = nc, batch, expires_s
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}"
        self.inbox = ""
        self._sub = None
        self._pending: list = []
        self._arrived = asyncio.Event()
        self._owed = 0          # messages the outstanding requests may still deliver
        self._requested = 0.0   # monotonic time of the last request

    async def start(self) -> None:
        self.inbox = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(self.inbox)
        self.nc.raw_inboxes[self._sub._id] = self._on_delivery

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self.nc.raw_inboxes.pop(sub._id, None)
            try:
                await sub.unsubscribe()
            except Exception:  # the old inbox may already be gone with the old connection
                pass

    def _on_delivery(self, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None) -> None:
        if not payload and headers and headers[8:9] == b" ":  # "NATS/1.0 408 ...": a status, no message
            self._owed = 0  # 404/408/409: a request ended (or none is left): ask again
        else:
            self._pending.append((subject, reply, payload))
            self._owed -= 1
        self._arrived.set()

    async def next_batch(self, wait_s: float = 1.0) -> list:
        """The deliveries that arrived (in delivery order), waiting up to ``wait_s`` for
        the first; ``[]`` when none came."""
        now = time.monotonic()
        if self._owed <= self.batch // 2 or now - self._requested > self.expires_s + 1.0:
            self._owed = self.batch if now - self._requested > self.expires_s + 1.0 else self._owed + self.batch
            self._requested = now
            await self.nc.publish(self.subject, json.dumps(
                {"batch": self.batch, "expires": int(self.expires_s * 1e9)}).encode(), reply=self.inbox)
        if not self._pending:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait_s)
            except asyncio.TimeoutError:
                return []
        # what the socket already holds is delivered within a few loop turns: take it too
        for _ in range(8):
            if len(self._pending) >= self.batch:
                break
            n = len(self._pending)
            await asyncio.sleep(0)
            if len(self._pending) == n:
                break
        taken, self._pending = self._pending, []
        return taken

    async def ack_through(self, delivery) -> None:
        """AckAll: acknowledges ``delivery`` and every one before it."""
        await self.nc.publish(delivery[1].decode(), b"+ACK")


class IngestWorker:
    """Consumes FUNNEL_EVENTS into ``data_dir``'s store until ``stop`` is set.
    Raises SystemExit(LOCKED_EXIT) when another worker holds the data directory's lock."""

    def __init__(self, data_dir: str, nats_url: str, batch: int = FETCH_MAX,
                 metrics: WorkerMetrics | None = None, log_every_s: float = 10.0, rollup_s: float = 1.0,
                 max_age_days: float = EVENTS_MAX_AGE_DAYS, max_bytes: int = 0):
        self.data_dir, self.nats_url, self.batch = data_dir, nats_url, batch
        self.max_age_days, self.max_bytes = max_age_days, max_bytes
        self.metrics = metrics or WorkerMetrics()
        self.rollup_s = rollup_s
        self.rollup: RollUp | None = None
        self.log_every_s = log_every_s
        self._resubscribe = False
        self._puller: EventPuller | None = None
        self._delivered = 0  # the consumer's last delivery sequence (0: none since (re)creating it)
        self._seen_seq = 0   # the last stream sequence delivered (0: none since (re)creating the consumer)

    async def run(self, stop: asyncio.Event) -> None:
        lock_fd = self._lock()
        store = LmdbStore.open(self.data_dir)
        nc = None
        try:
            applier = Applier(store)
            self.rollup = RollUp(store, applier.counters, self.rollup_s, half_lives=applier.half_lives,
                                 metrics=self.metrics)
            self.rollup.start()  # whatever a crash left un-rolled-up, before anything else
            self._roll_up()
            nc = await self._connect(stop)
            if nc is None:
                return
            js = nc.jetstream()
            failures = 0
            while not stop.is_set():
                try:
                    stream_id = await self._subscribe(nc, js, applier)
                    failures = 0
                    await self._consume(js, applier, stream_id, stop)
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
        async def on_error(exc):
            log.debug("nats: %s", exc)

        async def on_reconnect():
            self._resubscribe = True  # deliveries in flight may be lost: restart at the stored position

        nc = raw_delivery_client()
        connecting = asyncio.ensure_future(nc.connect(
            self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
            error_cb=on_error, reconnected_cb=on_reconnect))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait((connecting, stopping), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            return None
        connecting.result()  # raises what the connect raised
        return nc

    async def _subscribe(self, nc, js, applier: Applier) -> str:
        """(Re)creates the durable consumer at the stored position; returns the stream identity."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        self._resubscribe = False
        if self._puller is not None:
            puller, self._puller = self._puller, None
            await puller.stop()
        info = await ensure_event_stream(js, self.max_age_days, self.max_bytes)
        stream_id = info.created.isoformat() if info.created else ""
        progress = applier.progress()
        if progress and progress.get("stream") != stream_id:
            log.warning("stream %s was recreated (%s, was %s): applying it from its start",
                        STREAM, stream_id, progress.get("stream"))
        last = applier.last_applied(stream_id)
        if last and info.state.first_seq > last + 1:  # (an empty stream's first_seq is its last_seq + 1)
            log.warning("stream %s starts at %d but %d is the last applied: %d events were removed unapplied "
                        "(retention or erasure)", STREAM, info.state.first_seq, last, info.state.first_seq - last - 1)
            self.metrics.missing.inc(info.state.first_seq - last - 1)
        try:
            await js.delete_consumer(STREAM, DURABLE)
        except NotFoundError:
            pass
        config = ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.ALL, ack_wait=30.0,
                                max_ack_pending=4 * self.batch, filter_subject=f"{SUBJECT_PREFIX}.>")
        if last:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, last + 1
        await js.add_consumer(STREAM, config)
        self._puller = EventPuller(nc, self.batch)
        await self._puller.start()
        self._delivered, self._seen_seq = 0, last
        log.info("consuming %s from sequence %d", STREAM, last + 1)
        return stream_id

    async def _consume(self, js, applier: Applier, stream_id: str, stop: asyncio.Event) -> None:
        logged, window = time.monotonic(), ApplyStats()
        polled = 0.0
        while not stop.is_set() and not self._resubscribe:
            if time.monotonic() - polled >= LAG_POLL_S:
                polled = time.monotonic()
                info = await js.consumer_info(STREAM, DURABLE)
                self.metrics.pending.set(info.num_pending + info.num_ack_pending)
            msgs = await self._next_batch()
            if msgs:
                stats = applier.apply(self._stream_entries(msgs), stream_id, self.metrics.lag)
                await self._puller.ack_through(msgs[-1])  # after the commit
                self.metrics.observe(stats)
                window.add(stats)
            if self.rollup.due():
                self._roll_up()
            if time.monotonic() - logged >= self.log_every_s and window.last_seq:
                log.info("ingest: %s, last sequence %d",
                         ", ".join(f"{k}={v}" for k, v in window.outcomes().items() if v), window.last_seq)
                logged, window = time.monotonic(), ApplyStats()

    def _stream_entries(self, msgs) -> list:
        """(stream sequence, subject, payload, stored at s) per delivery, for Applier.apply.
        Deliveries come in consumer order, one after the other; a gap means one was lost on
        the way (not applied, yet the AckAll would cover it): raise to re-position from LMDB.
        Stream sequences may jump: what lies between was purged by an erasure or removed by
        retention before it was delivered (counted in ``funnel_ingest_missing_total``)."""
        entries, delivered, seen, missing = [], self._delivered, self._seen_seq, 0
        for subject, reply, payload in msgs:
            seq, consumer_seq, stored_at = delivery_of(reply)
            if delivered and consumer_seq != delivered + 1:
                raise RuntimeError(f"consumer delivery {consumer_seq} followed {delivered}: a delivery was lost")
            if seen and seq > seen + 1:  # purged (erasure) or removed by retention before it was applied
                missing += seq - seen - 1
            delivered, seen = consumer_seq, seq
            entries.append((seq, subject, payload, stored_at))
        self._delivered, self._seen_seq = delivered, seen
        if missing:
            self.metrics.missing.inc(missing)
        return entries

    def _roll_up(self) -> None:
        for tenant, (rows, lists) in self.rollup.run().items():
            if rows or lists:
                log.debug("roll-up of %s: %d item rows, %d lists rewritten", tenant, rows, lists)

    async def _next_batch(self) -> list:
        """What has arrived (up to about ``batch``); when nothing has, waits up to 1 s
        for the first delivery and returns what came with it."""
        return await self._puller.next_batch(1.0)


def run_ingest(data_dir: str, nats_url: str, metrics_port: int = 0, host: str = "127.0.0.1",
               batch: int = FETCH_MAX, rollup_s: float = 1.0, max_age_days: float = EVENTS_MAX_AGE_DAYS,
               max_bytes: int = 0) -> None:
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
        await IngestWorker(data_dir, nats_url, batch=batch, metrics=metrics, rollup_s=rollup_s,
                           max_age_days=max_age_days, max_bytes=max_bytes).run(stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # uvloop is not available on Windows
        asyncio.run(main())
