import numpy as np

from server.store.sessions import (
    SESSION_CAP,
    SESSION_IDLE_S,
    active_session_items,
    add_session_item,
    session_hash,
    session_items,
)

T = 1_700_000_000.0
A, B = session_hash("a"), session_hash("b")


def items(value) -> list[int]:
    return session_items(value)[2].tolist()


def test_items_are_distinct_newest_last_and_capped():
    value = None
    for k, index in enumerate([5, 6, 7, 6]):
        value = add_session_item(value, A, T + k, index)
    assert items(value) == [5, 7, 6]
    assert session_items(value)[:2] == (A, T + 3)
    for k in range(SESSION_CAP + 10):
        value = add_session_item(value, A, T + 10 + k, 100 + k)
    assert items(value) == list(range(110, 110 + SESSION_CAP))


def test_an_out_of_order_event_of_the_session_joins_it_without_moving_its_clock():
    value = add_session_item(add_session_item(None, A, T + 10, 1), A, T + 5, 2)
    assert items(value) == [1, 2] and session_items(value)[1] == T + 10


def test_a_newer_session_replaces_the_current_one_an_older_one_leaves_it_alone():
    value = add_session_item(add_session_item(None, A, T, 1), A, T + 1, 2)
    assert add_session_item(value, B, T - 60, 9) is None  # a late event of an earlier session
    value = add_session_item(value, B, T + 2, 3)
    assert items(value) == [3] and session_items(value)[0] == B


def test_the_same_session_after_the_idle_gap_starts_afresh():
    value = add_session_item(None, A, T, 1)
    again = add_session_item(value, A, T + SESSION_IDLE_S + 1, 2)
    assert items(again) == [2]
    assert items(add_session_item(value, A, T + SESSION_IDLE_S, 2)) == [1, 2]


def test_serving_uses_an_active_session_and_only_the_named_one():
    value = add_session_item(add_session_item(None, A, T, 4), A, T + 1, 8)
    np.testing.assert_array_equal(active_session_items(value, T + 60), [4, 8])
    np.testing.assert_array_equal(active_session_items(value, T + 60, A), [4, 8])
    assert active_session_items(value, T + 60, B).size == 0
    assert active_session_items(value, T + 1 + SESSION_IDLE_S + 1).size == 0
    assert active_session_items(None, T).size == 0
