"""Erasure of one user (``Admin.DeleteUser``) and consent opt-out (``Admin.SetConsent``).

:meth:`UserEraser.erase` removes a user in this order, so that no event of theirs
survives anywhere this node can reach:

1. purge the user's subject (:func:`server.events.nats_server.subject_for`) from the
   JetStream stream, and the same user hash from the decision log stream
   (:mod:`server.decisions.stream`; a response served while the erasure runs may still
   be logged after it), then read the stream's last sequence. NATS unreachable: nothing
   is changed and :class:`EventsUnavailable` says so (the caller retries);
2. ONE LMDB write transaction: delete the user row and session, delete the user's events from
   this node's outbox, write the user's tombstone;
3. the ingest worker asks :func:`erased_event` before applying an event and skips
   (counts ``erased``) every event the tombstone covers.

Tombstones, db ``erased``: key tenant, sha256(user_id)[:16] (the erased id itself is
not kept), value JSON ``{"seq", "stream", "at_ms", "txn"}``. An event of the user is
never applied when

* it is at or below stream sequence ``seq`` of stream ``stream`` (its identity, as the
  worker keeps it): purged, or published while the erasure ran, or fetched by the
  worker before the purge and applied after it; or
* it happened (``timestamp_ms``) at or before ``at_ms``, whatever its sequence: an
  event older than the erasure is erased data even when it reaches the stream late
  (spooled in another node's outbox, in the hands of a forwarder or of a concurrent
  Ingest). A client whose clock is d behind loses the user's new events of the first d.

Later events apply normally: the user starts again as a new user. Opting out
(:func:`set_consent`) stores a row with USER_CONSENT 0 and nothing else (features,
seen ring and CF embedding are dropped: opted-out data is not kept); while opted out
the worker counts the user's events ``no_consent``. Opting out and opting back in
both move the tombstone's ``at_ms`` and ``txn`` (not ``seq``), so after an opt-in
only events that happen after it count.

Cache invalidation across serving processes: ``txn`` is the id of the LMDB write
transaction that erased (or cleared) the user, and LMDB transaction ids grow with
every commit across all processes of the environment. A cached ranking
(:class:`server.pipeline.funnel.RecentRankings`) remembers the id of the read snapshot
it was computed from; when it is about to be served, one lookup here tells whether
an erasure committed after that snapshot (``txn`` > the entry's id): then the entry
is dropped. Only that fallback path pays the lookup; caching a ranking costs nothing.
Per-user entries of the CF source's ANN cache need none: they are only looked up for
a row with a trained embedding, which neither an erased user's new row nor an
opted-out row has, and they age out of the LRU.

The offline history (``tenants/<tenant>/interactions.npz``) is filtered through the
tombstones wherever it is read (:func:`without_erased`: ``funnel load``, ``funnel
train``, ``funnel segments build``), so no builder brings an erased user back, and the
next ``funnel load`` rewrites the file without their rows; until then the file still
holds them. Not reached from here: other replicas' stores and outboxes (the erasure is
not an event on the stream). Cursors handed out before the
erasure carry the rest of a ranking; GetFeed refuses them (INVALID_ARGUMENT) once the
tombstone is newer than the cursor (server/cursor.py). Subjects hash user
ids to 16 hex digits (64 bits), so the purge also takes the stream messages of any user
whose id shares the hash (counted in ``events_purged``). Tombstones are kept for good
(~100 bytes per erased user): the ``at_ms`` rule must still hold for an old event that
reaches the stream late from another node's outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass

import numpy as np

from kernels.layout import USER_CONSENT
from protos import funnel_pb2
from server.events.nats_server import STREAM, subject_for, tenant_of
from server.events.outbox import decode
from server.store import empty_user_value, user_row_view
from server.store.lmdb_store import SEP

log = logging.getLogger("funnel.events")

ERASED_DB = "erased"


@dataclass(frozen=True)
class Tombstone:
    seq: int       # no event of the user at or below this sequence of ``stream`` is applied
    stream: str    # the stream's identity (creation time) when ``seq`` was read; "" = none
    at_ms: int     # no event of the user that happened at or before this time is applied
    txn: int       # the LMDB write transaction that erased or cleared the user's data

    def covers(self, stream_id: str, seq: int, timestamp_ms: int) -> bool:
        return (stream_id == self.stream and seq <= self.seq) or timestamp_ms <= self.at_ms


@dataclass(frozen=True)
class Erasure:
    """What :meth:`UserEraser.erase` removed."""

    had_features: bool
    events_purged: int
    outbox_removed: int
    tombstone: Tombstone
    decisions_purged: int = 0  # the user's logged responses (server.decisions) removed from FUNNEL_DECISIONS


class EventsUnavailable(RuntimeError):
    """The event stream could not be purged: nothing was erased. ``configured`` is
    False when this process has no NATS at all (a retry cannot help)."""

    def __init__(self, message: str, configured: bool = True):
        super().__init__(message)
        self.configured = configured


def _key(tenant: str, user_id: str) -> bytes:
    return tenant.encode() + SEP + hashlib.sha256(user_id.encode()).digest()[:16]


def tombstone(txn, store, tenant: str, user_id: str) -> Tombstone | None:
    """The user's tombstone in ``txn`` (read or write), None when never erased. A
    read-only store opened on a data directory older than db ``erased`` has none."""
    db = store.db.get(ERASED_DB)
    raw = txn.get(_key(tenant, user_id), db=db) if db is not None else None
    if raw is None:
        return None
    doc = json.loads(bytes(raw))
    return Tombstone(int(doc["seq"]), doc["stream"], int(doc["at_ms"]), int(doc["txn"]))


def without_erased(txn, store, tenant: str, history):
    """``history`` (ops.interactions.Interactions) less the rows that the tenant's
    tombstones cover -- ``ts`` at or before the user's ``at_ms``, the rule the worker
    applies to late events; every row of a user who is opted out now -- and less the
    users left without rows, so ``funnel load``,
    ``funnel train`` and ``funnel segments build`` never rebuild erased data from an
    offline history (or from re-imported source files). Returns ``history`` itself
    when no tombstone applies."""
    db = store.db.get(ERASED_DB)
    if db is None or len(history) == 0 or txn.stat(db)["entries"] == 0:
        return history
    cutoff_ms = np.full(history.n_users, -1, dtype=np.int64)
    for k, user_id in enumerate(history.user_ids.tolist()):
        stone = tombstone(txn, store, tenant, user_id)
        if stone is not None:
            value = store.get_user_copy(txn, tenant, user_id)
            opted_out = value is not None and user_row_view(value)[USER_CONSENT] != 1.0
            cutoff_ms[k] = np.iinfo(np.int64).max // 2 if opted_out else stone.at_ms
    drop = history.ts.astype(np.int64) * 1000 <= cutoff_ms[history.user]
    return history.without(drop) if drop.any() else history


def erased_event(txn, store, tenant: str, user_id: str, stream_id: str, seq: int, timestamp_ms: int) -> bool:
    """True when the user's tombstone covers this event: the worker must not apply it."""
    found = tombstone(txn, store, tenant, user_id)
    return found is not None and found.covers(stream_id, seq, timestamp_ms)


def invalidated_after(txn, store, tenant: str, user_id: str) -> int:
    """The id of the last write transaction that erased or cleared the user's data
    (0: never). A cache entry computed from a snapshot with a lower id is stale."""
    found = tombstone(txn, store, tenant, user_id)
    return found.txn if found is not None else 0


def _put_tombstone(txn, store, tenant: str, user_id: str, seq: int, stream: str, at_ms: int) -> Tombstone:
    stone = Tombstone(seq, stream, at_ms, txn.id())
    txn.put(_key(tenant, user_id), json.dumps({"seq": seq, "stream": stream, "at_ms": at_ms, "txn": stone.txn},
                                              separators=(",", ":")).encode(), db=store.db[ERASED_DB])
    return stone


def _delete_outbox_entries(txn, store, tenant: str, user_id: str) -> int:
    """Removes the user's spooled events (the subject narrows, the payload decides:
    subjects hash user ids, so another user may share one)."""
    db, subject = store.db["outbox"], subject_for(tenant, user_id)
    doomed = []
    for key, value in txn.cursor(db=db):
        message = decode(bytes(value))
        if message.subject != subject or tenant_of(message.subject) != tenant:
            continue
        try:
            owner = funnel_pb2.Event.FromString(message.payload).user_id
        except Exception:  # not an event the worker could apply either; not this user's to remove
            continue
        if owner == user_id:
            doomed.append(bytes(key))
    for key in doomed:
        txn.delete(key, db=db)
    return len(doomed)


def erase_stored(store, tenant: str, user_id: str, seq: int, stream: str,
                 now_ms: int | None = None) -> tuple[bool, int, Tombstone]:
    """Step 2 of an erasure, in one write transaction: (had a user row, outbox
    entries removed, the tombstone written)."""
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with store.write() as txn:
        had_features = store.delete_user(txn, tenant, user_id)
        had_features = store.delete_impressions(txn, tenant, user_id) or had_features
        removed = _delete_outbox_entries(txn, store, tenant, user_id)
        stone = _put_tombstone(txn, store, tenant, user_id, seq, stream, at_ms)
    return had_features, removed, stone


def set_consent(store, tenant: str, user_id: str, personalized: bool, now_ms: int | None = None) -> None:
    """In one write transaction. Opt-out: the user's row becomes an empty row with
    USER_CONSENT 0 (created if missing). Opt-in of an opted-out user: USER_CONSENT 1
    (a user without a row, or one who never opted out, is left as is). Both move the
    tombstone's ``at_ms`` and ``txn``, so only events that happen after an opt-in
    count: none from before the opt-out, none from while it lasted."""
    at_ms = int(time.time() * 1000) if now_ms is None else now_ms
    with store.write() as txn:
        value = store.get_user_copy(txn, tenant, user_id)
        if personalized:
            if value is None or user_row_view(value)[USER_CONSENT] == 1.0:
                return
            user_row_view(value)[USER_CONSENT] = 1.0
        else:
            value = empty_user_value()
            user_row_view(value)[USER_CONSENT] = 0.0
            store.delete_impressions(txn, tenant, user_id)  # frequency-cap history is theirs too
            store.delete_session(txn, tenant, user_id)
        store.put_user(txn, tenant, user_id, value)
        previous = tombstone(txn, store, tenant, user_id)
        _put_tombstone(txn, store, tenant, user_id, previous.seq if previous else 0,
                       previous.stream if previous else "", at_ms)


async def purge_subject(nc, subject: str, timeout_s: float) -> int:
    """Removes every message on ``subject`` from the stream; returns how many
    (nats-py's ``purge_stream`` does not report the count)."""
    from nats.js.api import DEFAULT_PREFIX
    from nats.js.errors import APIError

    reply = await nc.request(f"{DEFAULT_PREFIX}.STREAM.PURGE.{STREAM}", json.dumps({"filter": subject}).encode(),
                             timeout=timeout_s)
    answer = json.loads(reply.data)
    if "error" in answer and "code" in answer["error"]:
        APIError.from_error(answer["error"])  # raises the typed error
    return int(answer.get("purged", 0))


class UserEraser:
    """Erases users through this process's :class:`server.events.publisher.EventPublisher`
    connection (None: no NATS configured, every erasure is refused)."""

    def __init__(self, store, publisher, timeout_s: float = 5.0):
        self.store, self.publisher, self.timeout_s = store, publisher, timeout_s

    async def erase(self, tenant: str, user_id: str) -> Erasure:
        """Steps 1 and 2 (module docstring). A failure after the purge leaves the LMDB
        side unchanged; a retry completes the erasure."""
        from nats.errors import Error as NatsError

        from server.decisions.stream import purge_user_decisions

        publisher = self.publisher
        if publisher is None or not publisher.nats_url:
            raise EventsUnavailable("no NATS configured: the user's events cannot be purged", configured=False)
        if not publisher.connected:
            raise EventsUnavailable("NATS is unreachable: nothing was erased; retry")
        try:
            purged = await purge_subject(publisher.nc, subject_for(tenant, user_id), self.timeout_s)
            decisions = await purge_user_decisions(publisher.nc, tenant, user_id, self.timeout_s)
            info = await publisher.js.stream_info(STREAM)
        except (NatsError, asyncio.TimeoutError) as exc:
            raise EventsUnavailable(f"NATS could not purge the user's events ({type(exc).__name__}): "
                                    "nothing was erased; retry") from exc
        stream = info.created.isoformat() if info.created else ""
        had_features, removed, stone = await asyncio.to_thread(
            erase_stored, self.store, tenant, user_id, int(info.state.last_seq), stream)
        log.info("erased a user of tenant %s: row %s, %d stream events, %d outbox entries, through sequence %d",
                 tenant, "deleted" if had_features else "absent", purged, removed, stone.seq)
        return Erasure(had_features, purged, removed, stone, decisions)
