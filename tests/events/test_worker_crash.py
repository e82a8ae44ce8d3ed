"""kill -9 of the ingest worker in the middle of a large stream: exactly once anyway."""

from __future__ import annotations

import asyncio
import math
import random
import signal

import numpy as np
import pytest

from kernels.layout import (
    MAX_CATEGORIES,
    SEEN_CAP,
    STAT_COUNT,
    STAT_EVENTS,
    STAT_SKIPS,
    USER_ACTIVITY,
    USER_AFFINITY,
    USER_LAST_ACTIVE_DAYS,
    USER_SKIP_RATE,
)
from ops.features import AFFINITY_HALF_LIFE_DAYS, DAY_SECONDS
from protos import funnel_pb2
from server.events.validate import to_message, validate_event
from server.events.worker import LOCKED_EXIT
from server.store import user_recent_items, user_row_view
from tests.events.conftest import N_ITEMS
from tests.events.helpers import (
    applied_seq,
    counters,
    item_category,
    item_index,
    item_list,
    item_stats,
    user_values,
    wait_until,
)

pytestmark = pytest.mark.integration

N_EVENTS = 20_000
N_USERS = 40
WEIGHTS = {funnel_pb2.VIEW: 0.5, funnel_pb2.CLICK: 0.6, funnel_pb2.LIKE: 0.9, funnel_pb2.SKIP: 0.1,
           funnel_pb2.SHARE: 0.9, funnel_pb2.PURCHASE: 1.0}


def make_stream(seed: int = 7):
    """N_EVENTS events, time-ordered: mostly interactions, some impressions and unknown items."""
    rng = random.Random(seed)
    types = list(WEIGHTS) + [funnel_pb2.DWELL, funnel_pb2.IMPRESSION]
    base = 1_750_000_000_000
    events = []
    for j in range(N_EVENTS):
        etype = rng.choice(types)
        item = f"i{rng.randrange(N_ITEMS)}" if rng.random() > 0.02 else "unknown"
        events.append(funnel_pb2.Event(user_id=f"k{rng.randrange(N_USERS)}", item_id=item, type=etype,
                                       timestamp_ms=base + j * 1000,
                                       watch_time_ms=rng.randrange(90_000) if etype == funnel_pb2.DWELL else 0))
    return events


async def publish_all(nats_url: str, messages) -> None:
    import nats

    from server.events.nats_server import ensure_stream

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(js)
    for at in range(0, len(messages), 1000):
        acks = await asyncio.gather(*(js.publish(m.subject, m.payload, headers={"Nats-Msg-Id": m.msg_id})
                                      for m in messages[at:at + 1000]))
        assert not any(a.duplicate for a in acks)
    await nc.close()


def expected_users(events, data_dir):
    """Per user: count, skips, last ts (s), affinity (float64), seen order -- from what was sent."""
    cats, index = {}, {}
    out = {}
    for ev in events:
        if ev.type == funnel_pb2.IMPRESSION or ev.item_id == "unknown":
            continue
        if ev.item_id not in cats:
            cats[ev.item_id] = item_category(data_dir, "shop", ev.item_id)
            index[ev.item_id] = item_index(data_dir, "shop", ev.item_id)
        w = min(ev.watch_time_ms / 60_000, 1.0) if ev.type == funnel_pb2.DWELL else WEIGHTS[ev.type]
        u = out.setdefault(ev.user_id, {"count": 0, "skips": 0, "events": [], "seen": {}})
        u["count"] += 1
        u["skips"] += w < 0.5
        u["events"].append((ev.timestamp_ms / 1000, cats[ev.item_id], w))
        u["seen"].pop(index[ev.item_id], None)
        u["seen"][index[ev.item_id]] = True
    half_life = AFFINITY_HALF_LIFE_DAYS * DAY_SECONDS
    for u in out.values():
        last = u["events"][-1][0]
        u["last"] = last
        u["affinity"] = np.zeros(MAX_CATEGORIES)
        for t, c, w in u["events"]:
            u["affinity"][c] += w * 2.0 ** (-(last - t) / half_life)
        u["seen"] = list(u["seen"])[-SEEN_CAP:]
    return out


def test_kill9_mid_stream_then_restart_applies_every_event_exactly_once(small_copy, nats_server, start_proc):
    data_dir, _ = small_copy
    events = make_stream()
    messages = []
    for ev in events:
        checked = validate_event("shop", ev, now_ms=ev.timestamp_ms)
        assert isinstance(checked, dict), checked
        messages.append(to_message("shop", checked))
    asyncio.run(publish_all(nats_server.url, messages))

    args = ["ingest", "--data-dir", data_dir, "--nats", nats_server.url, "--batch", "100"]
    worker = start_proc("ingest-1", args)
    wait_until(lambda: applied_seq(data_dir) >= N_EVENTS // 4, 30, interval=0.005, what="some commits")
    worker.stop(signal.SIGKILL)
    killed_at = applied_seq(data_dir)
    assert 0 < killed_at < N_EVENTS, f"the worker was killed at sequence {killed_at}: not mid-stream"

    worker = start_proc("ingest-2", args)
    resumed = "consuming FUNNEL_EVENTS from sequence %d" % (killed_at + 1)
    wait_until(lambda: resumed in worker.log(), 30, interval=0.05, what="the restarted worker")
    # a second worker on the same data directory refuses to run
    rival = start_proc("ingest-rival", args)
    assert rival.proc.wait(30) == LOCKED_EXIT
    wait_until(lambda: applied_seq(data_dir) >= N_EVENTS, 60, interval=0.05, what="the whole stream")
    assert worker.stop() == 0, worker.log()
    assert applied_seq(data_dir) == N_EVENTS

    expected = expected_users(events, data_dir)
    values = {u: v for u, v in user_values(data_dir, "shop").items() if u.startswith("k")}
    assert set(values) == set(expected)
    for user, want in expected.items():
        value = values[user]
        row = user_row_view(value)
        assert counters(value) == (want["count"], want["skips"]), user
        assert row[USER_ACTIVITY] == np.float32(math.log1p(want["count"]))
        assert row[USER_SKIP_RATE] == np.float32(want["skips"] / want["count"])
        assert row[USER_LAST_ACTIVE_DAYS] == np.float32(want["last"] / DAY_SECONDS)
        np.testing.assert_allclose(row[USER_AFFINITY:USER_AFFINITY + MAX_CATEGORIES], want["affinity"],
                                   rtol=2e-3, atol=1e-3, err_msg=user)
        assert user_recent_items(value, SEEN_CAP).tolist() == want["seen"], user

    # the item counters went through the same crash: exact per item, and rolled up on the clean stop
    want_items: dict[str, list] = {}
    for ev in events:
        if ev.item_id == "unknown":
            continue
        c = want_items.setdefault(ev.item_id, [0, 0, 0])
        c[2] += 1 if ev.type == funnel_pb2.IMPRESSION else 0
        if ev.type != funnel_pb2.IMPRESSION:
            w = min(ev.watch_time_ms / 60_000, 1.0) if ev.type == funnel_pb2.DWELL else WEIGHTS[ev.type]
            c[0] += 1
            c[1] += w < 0.5
    got = item_stats(data_dir, "shop")
    for item_id, (count, skips, impressions) in want_items.items():
        stats = got[item_index(data_dir, "shop", item_id)]
        assert (stats[STAT_COUNT], stats[STAT_SKIPS]) == (count, skips), item_id
        assert (stats[STAT_EVENTS + funnel_pb2.IMPRESSION] > 0) == (impressions > 0), item_id
    top = max(want_items, key=lambda i: (want_items[i][0], -item_index(data_dir, "shop", i)))
    assert item_list(data_dir, "shop", "popular")[0] == item_index(data_dir, "shop", top)
