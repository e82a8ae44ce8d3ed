import numpy as np
import pytest

from server.cursor import CursorCodec, CursorError, RankingTail


def tail(n=5, position=10, level=0):
    return RankingTail(position, level, np.arange(n, dtype=np.int32) * 7, np.linspace(1, 0, n).astype(np.float32),
                       np.arange(n, dtype=np.uint8), np.full(n, 3, dtype=np.uint8), np.arange(n) % 2 == 0)


def test_round_trip_keeps_every_field():
    codec = CursorCodec(b"k" * 32)
    t = tail(level=3)
    back = codec.decode(b"scope", codec.encode(b"scope", t))
    assert back.position == 10 and back.level == 3
    for name in ("items", "scores", "reasons", "sources", "sponsored"):
        np.testing.assert_array_equal(getattr(back, name), getattr(t, name))


def test_empty_tail_gives_no_cursor():
    assert CursorCodec(b"k").encode(b"s", tail(n=0)) == ""


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c[:-6] + ("AB" if c[-6:-4] != "AB" else "CD") + c[-4:], "signature"),  # a body byte
    (lambda c: c[:30] + ("x" if c[30] != "x" else "y") + c[31:], "signature"),
    (lambda c: "garbage", "not a cursor"),
    (lambda c: "", "not a cursor"),
])
def test_tampered_cursors_are_rejected(mutate, message):
    codec = CursorCodec(b"k" * 32)
    with pytest.raises(CursorError, match=message):
        codec.decode(b"scope", mutate(codec.encode(b"scope", tail())))


def test_cursor_is_bound_to_scope_secret_and_time():
    codec = CursorCodec(b"k" * 32, ttl_s=60)
    c = codec.encode(b"tenant\x00alice", tail(), now=1000)
    with pytest.raises(CursorError, match="signature"):
        codec.decode(b"tenant\x00bob", c, now=1001)
    with pytest.raises(CursorError, match="signature"):
        CursorCodec(b"other" * 8).decode(b"tenant\x00alice", c, now=1001)
    with pytest.raises(CursorError, match="expired"):
        codec.decode(b"tenant\x00alice", c, now=1061)
    assert codec.decode(b"tenant\x00alice", c, now=1059).items.shape[0] == 5


def test_issue_time_is_kept_to_the_millisecond_and_version_1_cursors_still_decode():
    import base64

    from server.cursor import _HEADER_V1

    codec = CursorCodec(b"k" * 32, ttl_s=60)
    assert codec.decode(b"s", codec.encode(b"s", tail(), now=1000.1234), now=1001).issued_at_ms == 1000123
    t = tail(n=3, position=4, level=2)
    body = b"".join((_HEADER_V1.pack(1, t.level, 1000, t.position, 3), t.items.astype("<i4").tobytes(),
                     t.scores.astype("<f4").tobytes(), t.reasons.tobytes(),
                     (t.sources | (t.sponsored.astype(np.uint8) << 7)).tobytes()))
    v1 = base64.urlsafe_b64encode(codec._mac(b"s", body) + body).decode().rstrip("=")
    back = codec.decode(b"s", v1, now=1030)
    assert (back.issued_at_ms, back.level, back.position) == (1_000_000, 2, 4)
    np.testing.assert_array_equal(back.items, t.items)
    with pytest.raises(CursorError, match="expired"):
        codec.decode(b"s", v1, now=1061)


def test_version_3_carries_what_page_1_reported_and_older_cursors_still_decode():
    import dataclasses
    import struct

    codec = CursorCodec(b"k" * 32)
    labelled = dataclasses.replace(tail(), experiment="ranker-test", variant="treatment", model_version="ab" * 32,
                                   canary=True)
    back = codec.decode(b"scope", codec.encode(b"scope", labelled))
    assert (back.experiment, back.variant, back.model_version, back.canary, back.labelled) == (
        "ranker-test", "treatment", "ab" * 32, True, True)
    np.testing.assert_array_equal(back.items, labelled.items)
    # a version 2 cursor (no labels) as the previous release wrote it
    import base64
    import time

    t = tail()
    body = struct.pack("<BBQIH", 2, t.level, int(time.time() * 1000), t.position, 5) + b"".join((
        t.items.astype("<i4").tobytes(), t.scores.astype("<f4").tobytes(), t.reasons.astype(np.uint8).tobytes(),
        (t.sources.astype(np.uint8) | (t.sponsored.astype(np.uint8) << 7)).tobytes()))
    v2 = base64.urlsafe_b64encode(codec._mac(b"scope", body) + body).decode().rstrip("=")
    old = codec.decode(b"scope", v2)
    assert not old.labelled and old.experiment == "" and old.position == t.position
    np.testing.assert_array_equal(old.items, t.items)
    with pytest.raises(ValueError, match="255"):
        codec.encode(b"scope", dataclasses.replace(t, variant="v" * 256))
