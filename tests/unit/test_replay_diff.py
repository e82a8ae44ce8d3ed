"""server.decisions.replay.diff: what a replay reports as different (the end-to-end
replay runs against a real server in tests/events/test_decisions.py)."""

from protos import funnel_pb2
from server.decisions.replay import Replay, diff


def decision(**fields) -> funnel_pb2.Decision:
    d = funnel_pb2.Decision(request_id="r", tenant_id="demo", degradation_level=0, model_version="m1",
                            config_version=3, segment="heavy", experiment="div", variant="tight", **fields)
    for k, item_id in enumerate(("a", "b", "c")):
        d.items.add(item_id=item_id, score=1.0 - k / 10, position=k, reason="r")
    return d


def replayed(order=("a", "b", "c"), **fields) -> Replay:
    response = funnel_pb2.FeedResponse(degradation_level=0, model_version="m1", segment="heavy",
                                       experiment="div", variant="tight")
    for name, value in fields.items():
        setattr(response, name, value)
    scores = {"a": 1.0, "b": 0.9, "c": 0.8}
    items = [funnel_pb2.FeedItem(item_id=i, score=scores[i], position=k, reason="r") for k, i in enumerate(order)]
    response.items.extend(items)
    return Replay(decision(), response, items, 3)


def test_the_same_items_versions_segment_and_variant_are_identical():
    assert diff(replayed()).identical


def test_a_changed_segment_or_variant_is_reported_even_with_the_same_items():
    result = diff(replayed(segment=""))
    assert result.differences == ["segment heavy -> (none)"]
    result = diff(replayed(experiment="", variant=""))
    assert result.differences == ["experiment div/tight -> (none)/-"]


def test_moved_items_and_a_new_model_are_reported():
    result = diff(replayed(order=("b", "a", "c"), model_version="m2"))
    assert "2 item(s) moved" in result.differences and "model version m1 -> m2" in result.differences
