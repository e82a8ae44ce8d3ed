"""Prometheus metrics. Each worker process exposes its own /metrics on
``metrics_port + worker_index`` (no shared multiprocess directory to manage)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram("funnel_request_seconds", "Server time per call", ["method"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("funnel_stage_seconds", "Time per funnel stage", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.degradation = Counter("funnel_degradation_level_total", "Responses per degradation level",
                                   ["tenant", "level"], registry=r)
        self.filter_removed = Counter("funnel_filter_removed_total", "Candidates removed per hard filter",
                                      ["filter"], registry=r)
        self.source_failures = Counter("funnel_source_failures_total", "Candidate sources that failed or ran late",
                                       ["source"], registry=r)
        self.unavailable = Counter("funnel_ranking_unavailable_total", "Requests that fell back from ranking",
                                   ["tenant", "reason"], registry=r)
        # Events.Ingest, per event: accepted (PubAck; duplicates are also accepted), spooled, rejected
        self.ingest_events = Counter("funnel_ingest_events_total", "Ingested events per outcome",
                                     ["tenant", "outcome"], registry=r)
        self.canary_rollbacks = Counter("funnel_canary_rollbacks_total",
                                        "Canary models rolled back by this process for breaking a guardrail",
                                        ["tenant", "kind"], registry=r)
        self.config_load_failures = Counter("funnel_config_load_failures_total",
                                            "Config refreshes that could not load the stored tenant config "
                                            "(the last known good version kept serving)", ["tenant"], registry=r)
        self.outbox_depth = Gauge("funnel_outbox_depth", "Events in the local outbox waiting for NATS", registry=r)
        from server.models.runtime import nonfinite_total

        Gauge("funnel_nonfinite_scores", "NaN/inf model scores replaced by the score floor (since start)",
              registry=r).set_function(nonfinite_total)

    def observe_request(self, method: str, tenant: str, level: int, seconds: float, state) -> None:
        self.request_seconds.labels(method).observe(seconds)
        self.degradation.labels(tenant, str(level)).inc()
        for stage, took in state.stage_seconds.items():
            self.stage_seconds.labels(stage).observe(took)
        for name, count in state.filtered.items():
            self.filter_removed.labels(name).inc(count)
        for name in state.sources_failed:
            self.source_failures.labels(name).inc()

    def observe_ingest(self, tenant: str, accepted: int, duplicates: int, spooled: int, rejected: int) -> None:
        for outcome, n in (("accepted", accepted), ("duplicate", duplicates), ("spooled", spooled),
                           ("rejected", rejected)):
            if n:
                self.ingest_events.labels(tenant, outcome).inc(n)

    def canary_rolled_back(self, tenant: str, kind: str) -> None:
        self.canary_rollbacks.labels(tenant, kind).inc()

    def config_load_failed(self, tenant: str) -> None:
        self.config_load_failures.labels(tenant).inc()

    def ranking_unavailable(self, tenant: str, reason: str) -> None:
        self.unavailable.labels(tenant, reason).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
