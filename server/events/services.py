"""What ``funnel serve`` runs once, in the parent, beside the serving workers.

* NATS: ``settings.nats_url`` when given; otherwise, with ``embedded_nats``,
  an :class:`EmbeddedNats` on 127.0.0.1:``nats_port`` storing under
  ``<data_dir>/nats``. If it cannot start (port taken, binary missing) serving
  goes on without NATS: Ingest spools every event to the outbox, which the
  next start with NATS forwards.
* With NATS and ``settings.ingest``: one ingest worker process, exactly
  ``funnel ingest`` (a child in the same process group, output inherited),
  restarted after a crash; a clean exit (e.g. on SIGTERM) is final, and so is
  finding another worker on the data dir. Its metrics, when ``metrics_port``
  is set, are on ``metrics_port + workers``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading

from server.events.nats_server import EmbeddedNats, NatsStartError

log = logging.getLogger("funnel.events")


class EventServices:
    """Context manager; ``settings`` (after enter) carries the NATS URL the
    serving workers must use ("" = none: spool only)."""

    def __init__(self, settings):
        self.settings = settings
        self.nats: EmbeddedNats | None = None
        self._proc = None
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def __enter__(self) -> "EventServices":
        s = self.settings
        url = s.nats_url
        if not url and s.embedded_nats:
            try:
                self.nats = EmbeddedNats(os.path.join(s.data_dir, "nats"), s.nats_port).start()
                url = self.nats.url
            except NatsStartError as exc:
                log.error("embedded nats-server: %s. Serving without NATS: Ingest spools events to the "
                          "outbox until a restart with NATS", exc)
        elif not url:
            log.warning("no NATS configured (--nats URL or the embedded server): Ingest keeps events in the outbox")
        self.settings = dataclasses.replace(s, nats_url=url)
        if url and s.ingest:
            self._proc = self._spawn()
            self._supervisor = threading.Thread(target=self._supervise, name="ingest-supervisor", daemon=True)
            self._supervisor.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.nats is not None:
            self.nats.stop()

    def _spawn(self) -> subprocess.Popen:
        s = self.settings
        metrics_port = s.metrics_port + s.workers if s.metrics_port else 0
        return subprocess.Popen([sys.executable, "-m", "server.cli", "ingest", "--data-dir", s.data_dir,
                                 "--nats", s.nats_url, "--metrics-port", str(metrics_port),
                                 "--metrics-host", s.host, "--events-max-age-days", str(s.events_max_age_days),
                                 "--events-max-bytes", str(s.events_max_bytes)], stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        from server.events.worker import LOCKED_EXIT

        wait = 1.0
        while not self._stopping.wait(wait):
            code = self._proc.poll()
            if code is None:
                wait = 1.0
            elif code in (0, LOCKED_EXIT):  # asked to stop, or another worker owns the data dir
                return
            else:
                log.error("ingest worker exited with %s; restarting it", code)
                self._proc = self._spawn()
                wait = min(wait * 2, 30.0)
