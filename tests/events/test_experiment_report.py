"""`funnel experiments report` on a real nats-server: events published to the
FUNNEL_EVENTS stream exactly as Events.Ingest publishes them, attributed to variants
by their request ids, counted exactly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from ops.experiments.stats import two_proportion_z_test, wilson_interval
from protos import funnel_pb2
from server.events.validate import to_message, validate_event
from server.store import LmdbStore
from server.tenancy import Experiment, TenantRegistry, Variant
from tests.conftest import ROOT
from tests.events.helpers import now_ms, probe_connect

pytestmark = pytest.mark.integration


def publish(nats_url: str, tenant_events: list[tuple[str, funnel_pb2.Event]]) -> None:
    async def run():
        from server.events.nats_server import ensure_stream

        nc = await probe_connect(nats_url)
        try:
            js = nc.jetstream()
            await ensure_stream(js)
            t = now_ms()
            for tenant, event in tenant_events:
                fields = validate_event(tenant, event, t)
                assert isinstance(fields, dict), fields
                message = to_message(tenant, fields)
                await js.publish(message.subject, message.payload, headers={"Nats-Msg-Id": message.msg_id})
        finally:
            await nc.close()

    asyncio.run(run())


def set_experiments(data_dir: str, *experiments: Experiment) -> None:
    store = LmdbStore.open(data_dir)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            current = registry.get(snap.txn, "shop")
        registry.put(replace(current, experiments=experiments))
    finally:
        store.close()


def report(data_dir: str, nats_url: str, experiment: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", "experiments", "report", "--data-dir", data_dir,
                           "--tenant", "shop", "--experiment", experiment, "--nats", nats_url, *extra],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=60)


def events_for(variant_rid: str, impressions: int, clicks: int, dwell_ms: list[int], tag: str):
    t = now_ms() - 60_000
    out = []
    for k in range(impressions):
        out.append(funnel_pb2.Event(user_id=f"{tag}-u{k % 17}", item_id=f"i{k % 50}", type=funnel_pb2.IMPRESSION,
                                    timestamp_ms=t + k, request_id=variant_rid, position=k % 10))
    for k in range(clicks):
        out.append(funnel_pb2.Event(user_id=f"{tag}-u{k % 17}", item_id=f"i{k % 50}", type=funnel_pb2.CLICK,
                                    timestamp_ms=t + 10_000 + k, request_id=variant_rid))
    for k, ms in enumerate(dwell_ms):
        out.append(funnel_pb2.Event(user_id=f"{tag}-u{k}", item_id=f"i{k}", type=funnel_pb2.DWELL,
                                    timestamp_ms=t + 20_000 + k, request_id=variant_rid, watch_time_ms=ms))
    return out


def test_report_counts_each_variant_exactly(nats_server, small_copy):
    data_dir, _ = small_copy
    ab = Experiment("ab", "home", "ab-salt", "running", (Variant("control", 50), Variant("bold", 50)))
    set_experiments(data_dir, ab)
    control_rid, bold_rid = "a" * 32 + ".ab.control", "b" * 32 + ".ab.bold"
    shop = (events_for(control_rid, 200, 20, [1000, 2000, 6000], "c")
            + events_for(bold_rid, 200, 36, [500], "b")
            + events_for("c" * 32 + ".other.control", 0, 5, [], "o")   # another experiment
            + events_for("d" * 32, 5, 0, [], "n"))                     # served outside any experiment
    elsewhere = events_for(control_rid, 10, 10, [], "x")              # another tenant's stream subjects
    publish(nats_server.url, [("shop", e) for e in shop] + [("other", e) for e in elsewhere])
    publish(nats_server.url, [("shop", e) for e in shop[:30]])  # a retried batch: JetStream dedupes it

    text = report(data_dir, nats_server.url, "ab")
    assert text.returncode == 0, text.stderr
    assert "control" in text.stdout and "10.00%" in text.stdout and "18.00%" in text.stdout

    set_experiments(data_dir)  # the experiment ended: its variants now come from the config history
    done = report(data_dir, nats_server.url, "ab", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["events_read"] == len(shop) and result["events_attributed"] == 200 + 20 + 3 + 200 + 36 + 1
    control, bold = result["variants"]
    assert (control["variant"], control["impressions"], control["clicks"]) == ("control", 200, 20)
    assert (bold["variant"], bold["impressions"], bold["clicks"]) == ("bold", 200, 36)
    assert control["ctr"] == pytest.approx(0.10) and bold["ctr"] == pytest.approx(0.18)
    assert control["ctr_ci95"] == pytest.approx(list(wilson_interval(20, 200)))
    assert bold["ctr_ci95"] == pytest.approx(list(wilson_interval(36, 200)))
    # pooled 0.14, se = sqrt(0.14 * 0.86 * 0.01) = 0.0346987, z = 0.08 / se = 2.30555
    assert bold["z"] == pytest.approx(2.30555, abs=1e-4) and bold["p_value"] == pytest.approx(0.021134, abs=1e-4)
    assert bold["p_value"] == pytest.approx(two_proportion_z_test(20, 200, 36, 200)[1])
    assert control["p_value"] is None
    assert (control["dwell_events"], control["watch_time_ms_total"], control["watch_time_ms_mean"]) == (3, 9000, 3000)
    assert (bold["dwell_events"], bold["watch_time_ms_total"]) == (1, 500)

    missing = report(data_dir, nats_server.url, "nope")
    assert missing.returncode == 1 and "'nope' is not in tenant 'shop'" in missing.stderr
    unreachable = report(data_dir, "nats://127.0.0.1:1", "ab")
    assert unreachable.returncode == 1 and "cannot reach NATS" in unreachable.stderr
