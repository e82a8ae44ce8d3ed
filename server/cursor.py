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

Version 3 also carries what page 1 reported about the ranking -- experiment, variant,
model version, canary -- so every page of it reports the same (an experiment stopped or
re-salted between pages does not re-attribute the rest of the ranking). Versions 1 and
2 are still read (they report none).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from dataclasses import dataclass

import numpy as np

VERSION = 3
# version, degradation level, issued at (unix ms), next position, n items; version 1
# (issued at in unix seconds, "<BBIIH") is still read, so an upgrade breaks no pagination.
# Version 3 (same header as 2) appends after the arrays: uint8 canary, then experiment,
# variant and model version, each as uint8 length + UTF-8 bytes.
_HEADER = struct.Struct("<BBQIH")
_HEADER_V1 = struct.Struct("<BBIIH")
_READ = (1, 2, 3)
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
    experiment: str = ""      # what page 1 reported (carried by the cursor, version 3)
    variant: str = ""
    model_version: str = ""
    canary: bool = False
    labelled: bool = False    # decoded from a cursor that carries the four above (version 3)


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
            bytes((int(tail.canary),)),
            *(_short(text) for text in (tail.experiment, tail.variant, tail.model_version)),
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
        header = _HEADER_V1 if body[0] == 1 else _HEADER
        if body[0] not in _READ or len(body) < header.size:
            raise CursorError("cursor: unsupported cursor version")
        version, level, issued_at, position, n = header.unpack_from(body)
        issued_at_ms = issued_at if version > 1 else issued_at * 1000
        end = header.size + n * 10
        labels = _labels(body, end) if version == 3 else ((False, "", "", ""), end)
        if labels is None or len(body) != labels[1]:
            raise CursorError("cursor: unsupported cursor version")
        if (now if now is not None else time.time()) * 1000 - issued_at_ms > self.ttl_s * 1000:
            raise CursorError("cursor: expired; request the first page again")
        off = header.size
        items = np.frombuffer(body, "<i4", n, off); off += 4 * n
        scores = np.frombuffer(body, "<f4", n, off); off += 4 * n
        reasons = np.frombuffer(body, np.uint8, n, off); off += n
        bits = np.frombuffer(body, np.uint8, n, off)
        (canary, experiment, variant, model_version), _ = labels
        return RankingTail(position, level, items, scores, reasons, bits & 0x7F, (bits >> 7).astype(bool),
                           issued_at_ms, experiment, variant, model_version, canary, labelled=version == 3)


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"cursor label longer than 255 bytes: {text[:40]!r}...")
    return bytes((len(raw),)) + raw


def _labels(body: bytes, at: int):
    """((canary, experiment, variant, model version), end offset) of a version 3 body; None if malformed."""
    if at >= len(body):
        return None
    canary, at, texts = bool(body[at]), at + 1, []
    for _ in range(3):
        if at >= len(body) or at + 1 + body[at] > len(body):
            return None
        texts.append(body[at + 1:at + 1 + body[at]].decode(errors="replace"))
        at += 1 + body[at]
    return (canary, *texts), at
