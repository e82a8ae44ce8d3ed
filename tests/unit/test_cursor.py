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
