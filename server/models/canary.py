"""Canary guardrails and auto-rollback, per serving process.

Each process keeps, for every canary it serves, a sliding window of the canary's
last requests: whether its model failed, how many rows it scored, how many scores
were NaN/inf, and the request's server time. Once the window holds
``min_requests`` requests, a broken guardrail (server.models.deploy.Guardrails)
rolls the canary back in the store (Deployer.auto_rollback: only if that canary
is still deployed, so several processes tripping at once write one rollback), with
the measured values in the deploy history, and counts
``funnel_canary_rollbacks_total``. Every process drops the canary at its next
runtime refresh. The write runs on a short-lived thread, off the request.

Per request this is O(1): counters are running sums over ring buffers; the p99 is
recomputed every CHECK_EVERY requests, and only when max_p99_ms is set.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger("funnel.canary")
MIN_WINDOW = 200
MAX_WINDOW = 100_000
CHECK_EVERY = 8


class CanaryWatch:
    """The window of one canary (tenant, kind, surface, version, salt) in this process."""

    def __init__(self, monitor: "CanaryMonitor", tenant: str, kind: str, surface: str, version: str, guardrails):
        self.monitor = monitor
        self.tenant, self.kind, self.surface, self.version = tenant, kind, surface, version
        self.guardrails = guardrails
        size = min(max(guardrails.min_requests, MIN_WINDOW), MAX_WINDOW)
        self.errors = np.zeros(size, dtype=np.int8)
        self.rows = np.zeros(size, dtype=np.int64)
        self.nonfinite = np.zeros(size, dtype=np.int64)
        self.seconds = np.zeros(size, dtype=np.float64)
        self.count = 0                  # requests recorded so far (the window holds min(count, size))
        self.sums = [0, 0, 0]           # errors, rows, nonfinite over the window
        self.tripped = False
        self._lock = threading.Lock()

    def record(self, error: bool, rows: int, nonfinite: int, seconds: float) -> None:
        if self.tripped:
            return
        with self._lock:
            i = self.count % self.errors.shape[0]
            self.sums[0] += int(error) - int(self.errors[i])
            self.sums[1] += rows - int(self.rows[i])
            self.sums[2] += nonfinite - int(self.nonfinite[i])
            self.errors[i], self.rows[i], self.nonfinite[i], self.seconds[i] = error, rows, nonfinite, seconds
            self.count += 1
            n = min(self.count, self.errors.shape[0])
            if n < self.guardrails.min_requests:
                return
            broken = self._broken(n)
            if broken is None:
                return
            self.tripped = True
        self.monitor.trip(self, *broken)

    def measured(self, n: int | None = None) -> dict:
        n = n if n is not None else min(self.count, self.errors.shape[0])
        out = {"requests": n, "error_rate": self.sums[0] / n if n else 0.0,
               "nan_rate": self.sums[2] / self.sums[1] if self.sums[1] else 0.0, "scored_rows": self.sums[1],
               "nonfinite_scores": self.sums[2], "scorer_errors": self.sums[0]}
        if n:
            out["p99_ms"] = float(np.percentile(self.seconds[:n], 99)) * 1000.0
        return out

    def _broken(self, n: int) -> tuple[str, dict] | None:
        g = self.guardrails
        error_rate = self.sums[0] / n
        if g.max_error_rate is not None and error_rate > g.max_error_rate:
            return f"error rate {error_rate:.4f} > max_error_rate {g.max_error_rate}", self.measured(n)
        nan_rate = self.sums[2] / self.sums[1] if self.sums[1] else 0.0
        if g.max_nan_rate is not None and nan_rate > g.max_nan_rate:
            return f"NaN/inf score rate {nan_rate:.4f} > max_nan_rate {g.max_nan_rate}", self.measured(n)
        if g.max_p99_ms is not None and self.count % CHECK_EVERY == 0:
            p99_ms = float(np.percentile(self.seconds[:n], 99)) * 1000.0
            if p99_ms > g.max_p99_ms:
                return f"p99 {p99_ms:.2f} ms > max_p99_ms {g.max_p99_ms}", self.measured(n)
        return None


class CanaryMonitor:
    """This process's canary windows, kept across runtime rebuilds (a config change
    that leaves the canary alone does not reset its window)."""

    def __init__(self, store, data_dir: str, metrics=None):
        self.store = store
        self.data_dir = data_dir
        self.metrics = metrics
        self._watches: dict[tuple, CanaryWatch] = {}
        self._lock = threading.Lock()
        self.rollbacks: list[threading.Thread] = []

    def watch(self, tenant: str, kind: str, surface: str, version: str, salt: str, guardrails) -> CanaryWatch:
        key = (tenant, kind, surface, version, salt, guardrails)
        with self._lock:
            found = self._watches.get(key)
            if found is None:
                found = self._watches[key] = CanaryWatch(self, tenant, kind, surface, version, guardrails)
            return found

    def retain(self, tenant: str, keep: list[CanaryWatch]) -> None:
        """Forget the tenant's windows of canaries no longer deployed."""
        keep_ids = {id(w) for w in keep}
        with self._lock:
            for key in [k for k, w in self._watches.items() if k[0] == tenant and id(w) not in keep_ids]:
                del self._watches[key]

    def trip(self, watch: CanaryWatch, why: str, measured: dict) -> None:
        log.warning("tenant %s: %s canary %s on surface %r broke a guardrail: %s (%s)", watch.tenant, watch.kind,
                    watch.version[:12], watch.surface, why, measured)
        thread = threading.Thread(target=self._roll_back, args=(watch, why, measured), daemon=True,
                                  name="canary-rollback")
        self.rollbacks.append(thread)
        thread.start()

    def _roll_back(self, watch: CanaryWatch, why: str, measured: dict) -> None:
        import os

        from server.models.deploy import Deployer
        from server.models.registry import ModelRegistry

        try:
            done = Deployer(self.store, ModelRegistry(self.store, self.data_dir)).auto_rollback(
                watch.tenant, watch.kind, watch.surface, watch.version, measured, why,
                actor=f"auto-rollback (pid {os.getpid()})")
        except Exception:
            log.exception("auto-rollback of %s canary %s failed", watch.kind, watch.version[:12])
            watch.tripped = False  # try again on a later request
            return
        if done and self.metrics is not None:
            self.metrics.canary_rolled_back(watch.tenant, watch.kind)


def record_outcomes(state, seconds: float) -> None:
    """After a response: each canary model the request used gets one window entry.
    ``state.canary_outcomes`` holds [watch, error, rows, nonfinite] per use."""
    merged: dict[int, list] = {}
    for watch, error, rows, nonfinite in state.canary_outcomes:
        entry = merged.setdefault(id(watch), [watch, False, 0, 0])
        entry[1] |= error
        entry[2] += rows
        entry[3] += nonfinite
    for watch, error, rows, nonfinite in merged.values():
        watch.record(error, rows, nonfinite, seconds)
