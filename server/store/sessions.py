"""A user's current session, kept by the ingest worker from the events' ``session_id``.

DB ``sessions``, key tenant + user id, value ``<QdI`` (the session: first 8 bytes of
sha256(session_id), little-endian; the newest event time in it, unix seconds; n) then
int32[n] item indices, oldest first, distinct, at most :data:`SESSION_CAP`.

Which events count: the engaged ones (not impressions, not skips) of known items that
carry a ``session_id``. An event of the current session moves its item to the newest
place. An event of another session starts a new one when it is not older than the
current session's newest event; an older one (a late event of a previous session) leaves
the current session alone. A session is over when its newest event is more than
:data:`SESSION_IDLE_S` old: an event in the same session id after that starts afresh, and
serving no longer uses it.

Serving: a GetFeed without ``context.session_item_ids`` uses the stored session's items
(when it is still active, and when the request names a ``context.session_id``, only if it
is that session) to seed the content source and, with the seen filter, to leave out what
the user just engaged with.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

SESSION_CAP = 32
SESSION_IDLE_S = 1800.0
_HEAD = struct.Struct("<QdI")
_EMPTY = np.empty(0, dtype=np.int32)


def session_hash(session_id: str) -> int:
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "little")


def session_items(value) -> tuple[int, float, np.ndarray]:
    """(session hash, newest event time s, int32 items oldest first; a view of ``value``)."""
    session, last, n = _HEAD.unpack_from(value)
    return session, last, np.frombuffer(value, dtype=np.int32, count=n, offset=_HEAD.size)


def add_session_item(value, session: int, t: float, index: int) -> bytes | None:
    """The session value after an engaged event at ``t`` (s) on item ``index`` in session
    ``session``; None when the event belongs to an older session (nothing changes)."""
    if value is not None:
        current, last, items = session_items(value)
        if current == session and t - last <= SESSION_IDLE_S:
            kept = items[items != index][-(SESSION_CAP - 1):]
            return _HEAD.pack(session, max(last, t), kept.size + 1) + kept.tobytes() + struct.pack("<i", index)
        if t < last:
            return None
    return _HEAD.pack(session, t, 1) + struct.pack("<i", index)


def active_session_items(value, now: float, session: int | None = None) -> np.ndarray:
    """The stored session's items if it is active at ``now`` (s) and, with ``session``
    given, is that session; else an empty array. Zero-copy."""
    if value is None:
        return _EMPTY
    current, last, items = session_items(value)
    if now - last > SESSION_IDLE_S or (session is not None and current != session):
        return _EMPTY
    return items
