"""The JetStream stream of served decisions: names, subjects, set-up, purge and lookup.

Stream ``FUNNEL_DECISIONS`` takes ``funnel.decisions.>``; one decision's subject is
``funnel.decisions.<tenant>.<user_hash>`` with the same 64-bit user hash as the event
stream (:func:`server.events.nats_server.subject_for`), so erasing a user purges their
decisions by subject exactly like their events. File storage, bounded by age
(:data:`MAX_AGE_S`, 7 days) and size (:data:`MAX_BYTES`, 2 GiB): the oldest decisions go
first. Each message carries ``Nats-Msg-Id`` = the response's request_id.

Lookup by request id (:func:`find_decision`, used by ``funnel replay``) is a linear scan
with an ordered consumer over the tenant's subjects (or all of them): there is no index
by request id, so it reads every stored decision of the tenant in the worst case. It
checks the ``Nats-Msg-Id`` header first and parses only the message that matches.
"""

from __future__ import annotations

import asyncio
import json

from protos import funnel_pb2
from server.events.nats_server import SUBJECT_PREFIX as EVENT_SUBJECT_PREFIX
from server.events.nats_server import ensure_stream
from server.events.nats_server import subject_for as event_subject_for

STREAM = "FUNNEL_DECISIONS"
SUBJECT_PREFIX = "funnel.decisions"
MAX_AGE_S = 7 * 86400.0
MAX_BYTES = 2 << 30
DUPLICATE_WINDOW_S = 60.0      # a request id is unique anyway; a short window keeps the server's memory small
_STREAM_NOT_FOUND = 10059


def decision_subject(tenant: str, user_id: str) -> str:
    """``funnel.decisions.<tenant>.<user_hash>``: the event subject's user hash, by construction."""
    return SUBJECT_PREFIX + event_subject_for(tenant, user_id)[len(EVENT_SUBJECT_PREFIX):]


def tenant_filter(tenant: str = "") -> str:
    return f"{SUBJECT_PREFIX}.{tenant}.>" if tenant else f"{SUBJECT_PREFIX}.>"


def stream_config():
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    return StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], storage=StorageType.FILE,
                        max_age=MAX_AGE_S, max_bytes=MAX_BYTES, discard=DiscardPolicy.OLD,
                        duplicate_window=DUPLICATE_WINDOW_S, allow_direct=True)


async def ensure_decision_stream(js, timeout_s: float = 10.0):
    """StreamInfo of FUNNEL_DECISIONS, creating it when missing (retries while JetStream starts)."""
    return await ensure_stream(js, timeout_s, stream_config())


async def purge_user_decisions(nc, tenant: str, user_id: str, timeout_s: float) -> int:
    """Removes the user's subject from FUNNEL_DECISIONS; returns how many messages went.
    0 when the stream does not exist (the decision log never ran against this NATS)."""
    from nats.js.api import DEFAULT_PREFIX
    from nats.js.errors import APIError

    reply = await nc.request(f"{DEFAULT_PREFIX}.STREAM.PURGE.{STREAM}",
                             json.dumps({"filter": decision_subject(tenant, user_id)}).encode(), timeout=timeout_s)
    answer = json.loads(reply.data)
    error = answer.get("error")
    if isinstance(error, dict) and "code" in error:
        if error.get("err_code") == _STREAM_NOT_FOUND:
            return 0
        APIError.from_error(error)  # raises the typed error
    return int(answer.get("purged", 0))


class DecisionScan:
    """What :func:`find_decision` found: the decision (None = not found) and how many
    messages it read."""

    def __init__(self, decision: funnel_pb2.Decision | None, scanned: int, seq: int = 0):
        self.decision, self.scanned, self.seq = decision, scanned, seq


async def find_decision(js, request_id: str, tenant: str = "", idle_timeout_s: float = 5.0) -> DecisionScan:
    """Scans FUNNEL_DECISIONS (the tenant's subjects only when ``tenant`` is given) from the
    oldest message for the decision with ``request_id``. Linear in the decisions stored.
    Raises nats.js.errors.NotFoundError when the stream does not exist."""
    from nats.js.api import DeliverPolicy

    if not (await js.stream_info(STREAM)).state.messages:
        return DecisionScan(None, 0)
    sub = await js.subscribe(tenant_filter(tenant), stream=STREAM, ordered_consumer=True,
                             deliver_policy=DeliverPolicy.ALL, idle_heartbeat=1.0)
    scanned = 0
    try:
        consumer = await sub.consumer_info()
        if consumer.num_pending == 0 and not consumer.delivered.stream_seq:
            return DecisionScan(None, 0)  # nothing on the filter (e.g. a tenant without decisions)
        while True:
            try:
                msg = await sub.next_msg(timeout=idle_timeout_s)
            except asyncio.TimeoutError:  # nothing more arrived: the stream ended (or shrank meanwhile)
                return DecisionScan(None, scanned)
            scanned += 1
            meta = msg.metadata
            header = (msg.headers or {}).get("Nats-Msg-Id")
            if header == request_id or header is None:
                decision = funnel_pb2.Decision.FromString(msg.data)
                if decision.request_id == request_id:
                    return DecisionScan(decision, scanned, meta.sequence.stream)
            if meta.num_pending == 0:
                return DecisionScan(None, scanned)
    finally:
        await sub.unsubscribe()
