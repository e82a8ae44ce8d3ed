"""Opaque, signed pagination cursors.

Pagination is a snapshot: the cursor carries the rest of the ranking computed
for page 1 (item indices, scores, reason codes, source bits), so page 2 comes from
the same ranking whichever worker serves it, with no duplicates or gaps. It is
bound to tenant, user and surface, expires after ``ttl_s`` and is HMAC-signed
with the data directory's secret: a forged, tampered, foreign or expired cursor
is rejected (the servicer maps CursorError to INVALID_ARGUMENT). The servicer also
rejects a cursor issued (to the millisecond) at or before the user's erasure or consent
change (server.events.erasure tombstone): the rest of a ranking computed from data
that is gone is not served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from dataclasses import dataclass

import numpy as np

VERSION = 2
# version, degradation level, issued at (unix ms), next position, n items; version 1
# (issued at in unix seconds, "<BBIIH") is still read, so an upgrade breaks no pagination
_HEADER = struct.Struct("<BBQIH")
_HEADER_V1 = struct.Struct("<BBIIH")
_MAC_BYTES = 16


class CursorError(ValueError):
    pass


@dataclass
class RankingTail:
    """The part of a ranking not yet served."""

    position: int             # ranking position of items[0]
    level: int                # degradation level that produced the ranking
    items: np.ndarray         # int32 item indices
    scores: np.ndarray        # float32
    reasons: np.ndarray       # uint8 reason codes
    sources: np.ndarray       # uint8 source bits
    sponsored: np.ndarray     # bool
    issued_at_ms: int = 0     # when the cursor was issued, unix ms (set by decode)


class CursorCodec:
    def __init__(self, secret: bytes, ttl_s: int = 1800):
        self.secret = secret
        self.ttl_s = ttl_s

    def _mac(self, scope: bytes, body: bytes) -> bytes:
        return hmac.new(self.secret, scope + b"\x00" + body, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, scope: bytes, tail: RankingTail, now: float | None = None) -> str:
        n = int(tail.items.shape[0])
        if n == 0:
            return ""
        body = b"".join((
            _HEADER.pack(VERSION, tail.level, int((now if now is not None else time.time()) * 1000), tail.position,
                         n),
            tail.items.astype("<i4").tobytes(),
            tail.scores.astype("<f4").tobytes(),
            tail.reasons.astype(np.uint8).tobytes(),
            (tail.sources.astype(np.uint8) | (tail.sponsored.astype(np.uint8) << 7)).tobytes(),
        ))
        return base64.urlsafe_b64encode(self._mac(scope, body) + body).decode().rstrip("=")

    def decode(self, scope: bytes, cursor: str, now: float | None = None) -> RankingTail:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (ValueError, TypeError):
            raise CursorError("cursor: not a cursor issued by this service") from None
        if len(raw) < _MAC_BYTES + _HEADER_V1.size:
            raise CursorError("cursor: not a cursor issued by this service")
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise CursorError("cursor: signature does not match (forged, or issued for another user/surface)")
        header = _HEADER if body[0] == VERSION else _HEADER_V1
        if body[0] not in (1, VERSION) or len(body) < header.size:
            raise CursorError("cursor: unsupported cursor version")
        version, level, issued_at, position, n = header.unpack_from(body)
        issued_at_ms = issued_at if version == VERSION else issued_at * 1000
        if len(body) != header.size + n * 10:
            raise CursorError("cursor: unsupported cursor version")
        if (now if now is not None else time.time()) * 1000 - issued_at_ms > self.ttl_s * 1000:
            raise CursorError("cursor: expired; request the first page again")
        off = header.size
        items = np.frombuffer(body, "<i4", n, off); off += 4 * n
        scores = np.frombuffer(body, "<f4", n, off); off += 4 * n
        reasons = np.frombuffer(body, np.uint8, n, off); off += n
        bits = np.frombuffer(body, np.uint8, n, off)
        return RankingTail(position, level, items, scores, reasons, bits & 0x7F, (bits >> 7).astype(bool),
                           issued_at_ms)
