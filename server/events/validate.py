"""Validation of one ``funnel.v1.Event`` and its JetStream message.

:func:`validate_event` returns a compact dict of the event's fields (with the
event id filled in) or one reason string ``"<field>: <problem>"``. Rules:

* ``user_id``, ``item_id``: required, at most 256 characters;
* ``type``: a defined EventType other than EVENT_TYPE_UNSPECIFIED;
* ``timestamp_ms``: > 0 and at most 60 s ahead of the server clock;
* ``watch_time_ms``: >= 0;
* ``event_id``, ``surface``, ``session_id``, ``request_id``: at most 256
  characters; ``event_id`` without control characters (it travels in a header).

An empty ``event_id`` becomes :func:`derive_event_id`, so a client retrying the
same interaction without an id is still deduplicated. A batch holds at most
:data:`MAX_BATCH` events (more: RESOURCE_EXHAUSTED for the whole call).
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from protos import funnel_pb2
from server.events.nats_server import subject_for

MAX_BATCH = 1000
MAX_ID_LEN = 256
MAX_FUTURE_MS = 60_000
EVENT_TYPES = frozenset(v.number for v in funnel_pb2.EventType.DESCRIPTOR.values) - {funnel_pb2.EVENT_TYPE_UNSPECIFIED}


class Message(NamedTuple):
    """One event as published: subject, ``Nats-Msg-Id`` and the serialized Event."""

    subject: str
    msg_id: str
    payload: bytes


def derive_event_id(tenant: str, user_id: str, item_id: str, etype: int, timestamp_ms: int,
                    request_id: str, session_id: str) -> str:
    """sha256 over the JSON list of these fields (unambiguous for any strings), hex[:32]."""
    key = json.dumps([tenant, user_id, item_id, etype, timestamp_ms, request_id, session_id],
                     ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _too_long(name: str, value: str) -> str | None:
    return f"{name}: longer than {MAX_ID_LEN} characters" if len(value) > MAX_ID_LEN else None


def validate_event(tenant: str, event, now_ms: int) -> dict | str:
    """The event as a dict with the fields of ``funnel.v1.Event`` (``event_id``
    filled in), or the reason it is rejected."""
    for name in ("user_id", "item_id"):
        value = getattr(event, name)
        if not value:
            return f"{name}: required"
        if reason := _too_long(name, value):
            return reason
    for name in ("event_id", "surface", "session_id", "request_id"):
        if reason := _too_long(name, getattr(event, name)):
            return reason
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in event.event_id):
        return "event_id: contains control characters"
    if event.type == funnel_pb2.EVENT_TYPE_UNSPECIFIED:
        return "type: unspecified event type"
    if event.type not in EVENT_TYPES:
        return f"type: unknown event type {event.type}"
    if event.timestamp_ms <= 0:
        return "timestamp_ms: must be positive (milliseconds since the epoch)"
    if event.timestamp_ms > now_ms + MAX_FUTURE_MS:
        return f"timestamp_ms: more than {MAX_FUTURE_MS // 1000} s in the future"
    if event.watch_time_ms < 0:
        return "watch_time_ms: negative"
    event_id = event.event_id or derive_event_id(tenant, event.user_id, event.item_id, event.type,
                                                 event.timestamp_ms, event.request_id, event.session_id)
    return {"event_id": event_id, "user_id": event.user_id, "item_id": event.item_id, "type": event.type,
            "timestamp_ms": event.timestamp_ms, "watch_time_ms": event.watch_time_ms,
            "request_id": event.request_id, "position": event.position, "surface": event.surface,
            "session_id": event.session_id}


def to_message(tenant: str, event: dict) -> Message:
    """The JetStream message of a validated event. The msg id is scoped by tenant
    (tenant ids hold no ':'), so two tenants' event ids never deduplicate each other."""
    payload = funnel_pb2.Event(**event).SerializeToString(deterministic=True)
    return Message(subject_for(tenant, event["user_id"]), f"{tenant}:{event['event_id']}", payload)
