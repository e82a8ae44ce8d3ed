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
    (lambda c: c[:-2] + ("AB" if not c.endswith("AB") else "CD"), "signature"),
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
