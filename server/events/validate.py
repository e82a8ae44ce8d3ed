"""Validation of one ``funnel.v1.Event`` and its JetStream message.

:func:`validate_event` returns a compact dict of the event's fields (with the
event id filled in) or one reason string ``"<field>: <problem>"``;
:func:`event_message` goes straight to the JetStream :class:`Message` (what
Events.Ingest uses). Rules:

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
import re
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


# what ord(c) < 0x20 or ord(c) == 0x7F selects, as one C-level scan instead of a Python loop per character
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def rejection(event, now_ms: int) -> str | None:
    """Why ``event`` is rejected (the first rule it breaks, in the order of the module
    docstring), or None when it is valid."""
    # each field is read from the message once (a protobuf attribute read is not free)
    user_id, item_id = event.user_id, event.item_id
    for name, value in (("user_id", user_id), ("item_id", item_id)):
        if not value:
            return f"{name}: required"
        if len(value) > MAX_ID_LEN:
            return _too_long(name, value)
    event_id = event.event_id
    for name, value in (("event_id", event_id), ("surface", event.surface), ("session_id", event.session_id),
                        ("request_id", event.request_id)):
        if len(value) > MAX_ID_LEN:
            return _too_long(name, value)
    if _CONTROL.search(event_id):
        return "event_id: contains control characters"
    etype, timestamp_ms = event.type, event.timestamp_ms
    if etype == funnel_pb2.EVENT_TYPE_UNSPECIFIED:
        return "type: unspecified event type"
    if etype not in EVENT_TYPES:
        return f"type: unknown event type {etype}"
    if timestamp_ms <= 0:
        return "timestamp_ms: must be positive (milliseconds since the epoch)"
    if timestamp_ms > now_ms + MAX_FUTURE_MS:
        return f"timestamp_ms: more than {MAX_FUTURE_MS // 1000} s in the future"
    if event.watch_time_ms < 0:
        return "watch_time_ms: negative"
    return None


def _event_id(tenant: str, event) -> str:
    return event.event_id or derive_event_id(tenant, event.user_id, event.item_id, event.type, event.timestamp_ms,
                                             event.request_id, event.session_id)


def validate_event(tenant: str, event, now_ms: int) -> dict | str:
    """The event as a dict with the fields of ``funnel.v1.Event`` (``event_id``
    filled in), or the reason it is rejected."""
    if reason := rejection(event, now_ms):
        return reason
    return {"event_id": _event_id(tenant, event), "user_id": event.user_id, "item_id": event.item_id,
            "type": event.type, "timestamp_ms": event.timestamp_ms, "watch_time_ms": event.watch_time_ms,
            "request_id": event.request_id, "position": event.position, "surface": event.surface,
            "session_id": event.session_id}


def to_message(tenant: str, event: dict) -> Message:
    """The JetStream message of a validated event. The msg id is scoped by tenant
    (tenant ids hold no ':'), so two tenants' event ids never deduplicate each other."""
    payload = funnel_pb2.Event(**event).SerializeToString(deterministic=True)
    return Message(subject_for(tenant, event["user_id"]), f"{tenant}:{event['event_id']}", payload)


def event_message(tenant: str, event, now_ms: int) -> Message | str:
    """``to_message(tenant, validate_event(tenant, event, now_ms))`` for the Ingest
    hot path: the same Message, byte for byte, or the same reason, without building
    a dict and a second Event. It changes ``event`` itself: the derived id is filled
    in and unknown fields are dropped (a rebuilt Event has none either)."""
    if reason := rejection(event, now_ms):
        return reason
    if not event.event_id:
        event.event_id = _event_id(tenant, event)
    event.DiscardUnknownFields()
    return Message(subject_for(tenant, event.user_id), f"{tenant}:{event.event_id}",
                   event.SerializeToString(deterministic=True))
