"""``funnel experiments report``: per-variant outcomes of one experiment.

Reads the tenant's events from the JetStream stream FUNNEL_EVENTS with an
ephemeral pull consumer filtered to ``funnel.events.<tenant>.>`` (no ack, deleted
afterwards, so it leaves no trace), attributes each event to a variant by the
experiment and variant encoded in its ``request_id`` (server.experiments), and
per variant counts impressions (IMPRESSION), clicks (CLICK), DWELL events and
their watch time. CTR = clicks / impressions with a 95% Wilson interval, and a
two-sided two-proportion z-test of each variant's CTR against the first
(control) variant. Events are counted once per event id. The variant order comes
from the tenant config (the current one, else the newest version in the config
history that holds the experiment).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Iterable

from ops.experiments.stats import two_proportion_z_test, wilson_interval
from protos import funnel_pb2
from server.experiments import parse_request_id


class ReportError(RuntimeError):
    """The report cannot be made (unknown tenant or experiment, NATS unreachable)."""


@dataclass
class VariantTally:
    impressions: int = 0
    clicks: int = 0
    dwell_events: int = 0
    watch_time_ms: int = 0


class ExperimentTally:
    """Counts of one experiment's events per variant, each event id once."""

    def __init__(self, experiment: str):
        self.experiment = experiment
        self.variants: dict[str, VariantTally] = {}
        self.events_read = 0
        self.events_attributed = 0
        self._seen_ids: set[str] = set()

    def add(self, event: funnel_pb2.Event) -> None:
        self.events_read += 1
        assigned = parse_request_id(event.request_id)
        if assigned is None or assigned[0] != self.experiment:
            return
        if event.event_id:
            if event.event_id in self._seen_ids:
                return
            self._seen_ids.add(event.event_id)
        self.events_attributed += 1
        tally = self.variants.setdefault(assigned[1], VariantTally())
        if event.type == funnel_pb2.IMPRESSION:
            tally.impressions += 1
        elif event.type == funnel_pb2.CLICK:
            tally.clicks += 1
        elif event.type == funnel_pb2.DWELL:
            tally.dwell_events += 1
            tally.watch_time_ms += max(int(event.watch_time_ms), 0)

    def add_all(self, events: Iterable[funnel_pb2.Event]) -> "ExperimentTally":
        for event in events:
            self.add(event)
        return self


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


def summarize(tally: ExperimentTally, variant_order: list[str]) -> dict:
    """The report as a dict (what ``--json`` prints): one row per variant, configured
    variants first in config order (the first is the control), then any other variant
    the events name."""
    names = list(variant_order) + sorted(set(tally.variants) - set(variant_order))
    rows = []
    control = None
    for name in names:
        t = tally.variants.get(name, VariantTally())
        valid = t.clicks <= t.impressions  # more clicks than impressions: impressions were not reported
        row = {"variant": name, "in_config": name in variant_order, "impressions": t.impressions,
               "clicks": t.clicks, "ctr": (t.clicks / t.impressions) if t.impressions and valid else None,
               "ctr_ci95": list(wilson_interval(t.clicks, t.impressions)) if t.impressions and valid else None,
               "dwell_events": t.dwell_events, "watch_time_ms_total": t.watch_time_ms,
               "watch_time_ms_mean": (t.watch_time_ms / t.dwell_events) if t.dwell_events else None,
               "z": None, "p_value": None}
        if not valid:
            row["note"] = "more clicks than impressions: CTR undefined"
        if control is None:
            control = (t, valid)
        elif valid and control[1]:
            z, p = two_proportion_z_test(control[0].clicks, control[0].impressions, t.clicks, t.impressions)
            row["z"], row["p_value"] = _finite(z), _finite(p)
        rows.append(row)
    return {"experiment": tally.experiment, "control": names[0] if names else None,
            "events_read": tally.events_read, "events_attributed": tally.events_attributed, "variants": rows}


def format_report(report: dict, tenant: str) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    lines = [f"experiment {report['experiment']} of tenant {tenant}: {report['events_attributed']} of "
             f"{report['events_read']} events attributed; control = {report['control'] or '-'}",
             f"{'variant':20s} {'impressions':>11s} {'clicks':>7s} {'CTR':>7s} {'95% CI':>17s} "
             f"{'watch total s':>13s} {'mean s':>8s} {'p vs control':>12s}"]
    for row in report["variants"]:
        ci, mean, p_value = row["ctr_ci95"], row["watch_time_ms_mean"], row["p_value"]
        interval = "-" if ci is None else f"{pct(ci[0])}..{pct(ci[1])}"
        mean_s = "-" if mean is None else f"{mean / 1000:.1f}"
        p_text = "-" if p_value is None else f"{p_value:.4f}"
        line = (f"{row['variant'][:20]:20s} {row['impressions']:11d} {row['clicks']:7d} {pct(row['ctr']):>7s} "
                f"{interval:>17s} {row['watch_time_ms_total'] / 1000:13.1f} {mean_s:>8s} {p_text:>12s}")
        if not row["in_config"]:
            line += "  (not in the config)"
        if "note" in row:
            line += f"  ({row['note']})"
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------ inputs
def experiment_variants(data_dir: str, tenant: str, experiment: str) -> list[str]:
    """The experiment's variant names in config order: from the current config, else
    from the newest stored config version that holds the experiment."""
    from server.store import LmdbStore
    from server.tenancy import TenantRegistry

    store = LmdbStore.open(data_dir, readonly=True)
    try:
        registry = TenantRegistry(store)
        with store.snapshot() as snap:
            current = registry.get(snap.txn, tenant)
            if current is None:
                raise ReportError(f"tenant {tenant!r} does not exist in {data_dir}")
            for exp in current.experiments:
                if exp.name == experiment:
                    return [v.name for v in exp.variants]
            before = 0
            while True:  # older versions, a page at a time, raw JSON (no validation of old fields)
                page = registry.history(snap.txn, tenant, 100, before)
                for version, doc in page:
                    for exp in doc.get("experiments") or ():
                        if exp.get("name") == experiment:
                            return [v.get("name", "") for v in exp.get("variants") or ()]
                if len(page) < 100:
                    break
                before = page[-1][0]
    finally:
        store.close()
    raise ReportError(f"experiment {experiment!r} is not in tenant {tenant!r}'s config or its history")


async def read_tenant_events(nats_url: str, tenant: str, tally: ExperimentTally, fetch_timeout_s: float = 5.0,
                             batch: int = 1000, connect_timeout_s: float = 5.0) -> None:
    """Feeds every event of ``tenant`` now in the stream to ``tally`` (stream order)."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    from server.events.nats_server import STREAM, SUBJECT_PREFIX

    async def quiet(exc):  # connection errors are reported once, below
        pass

    try:  # nats-py can keep retrying a refused first connection: bound it
        nc = await asyncio.wait_for(nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0,
                                                 error_cb=quiet), timeout=connect_timeout_s)
    except Exception as exc:
        raise ReportError(f"cannot reach NATS at {nats_url}: {exc or type(exc).__name__}") from None
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(STREAM)
        except NotFoundError:
            raise ReportError(f"NATS at {nats_url} has no stream {STREAM}") from None
        sub = await js.pull_subscribe(f"{SUBJECT_PREFIX}.{tenant}.>", stream=STREAM, config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0, mem_storage=True))
        info = await sub.consumer_info()
        try:
            pending = info.num_pending
            while pending > 0:
                try:
                    messages = await sub.fetch(min(pending, batch), timeout=fetch_timeout_s)
                except nats.errors.TimeoutError:
                    raise ReportError(f"the stream stopped delivering with {pending} events pending") from None
                for message in messages:
                    event = funnel_pb2.Event()
                    event.ParseFromString(message.data)
                    tally.add(event)
                pending = messages[-1].metadata.num_pending
        finally:
            await sub.unsubscribe()
            try:
                await js.delete_consumer(STREAM, info.name)
            except Exception:  # the inactive threshold removes it anyway
                pass
    finally:
        await nc.close()


def experiment_report(data_dir: str, tenant: str, experiment: str, nats_url: str) -> dict:
    variants = experiment_variants(data_dir, tenant, experiment)
    tally = ExperimentTally(experiment)
    asyncio.run(read_tenant_events(nats_url, tenant, tally))
    return dict(summarize(tally, variants), tenant=tenant)
