"""Shared fixtures: a real data directory (bundled MovieTweetings 100K, loaded and
trained once per session) and real server processes on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc
import pytest
from hypothesis import settings

# CI explores a fixed set of examples (reproducible verdicts); local runs keep exploring new ones
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = os.path.join(ROOT, "ops", "datasets", "movietweetings-100k")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(target: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")
        try:
            with grpc.insecure_channel(target) as ch:
                resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            time.sleep(0.2)
    raise RuntimeError("server did not become healthy")


def stop_process_group(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signals a process started with start_new_session=True and its children; SIGKILL
    after ``timeout``. Returns the exit code."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


class ServerProcess:
    """A real `funnel serve`. Read-path tests run it without the event path (no
    embedded nats-server, no ingest worker) so several can run side by side;
    tests/events starts its own NATS and workers."""

    def __init__(self, data_dir: str, workers: int = 1, extra_env: dict | None = None):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT, FUNNEL_LOG_LEVEL="WARNING", **(extra_env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--data-dir", data_dir, "--port", str(self.port),
             "--workers", str(workers), "--grace", "5", "--no-embedded-nats", "--no-ingest"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        wait_serving(self.target, self.proc)

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        return stop_process_group(self.proc, sig, timeout)


@pytest.fixture(scope="session")
def trained_data_dir(tmp_path_factory):
    """Data dir with tenant "demo" (PG13) loaded from the bundled dataset and trained.
    Returns (data_dir, admin_key, api_key)."""
    from ops.load import load_dataset
    from ops.train import train_tenant
    from server.app import init_data_dir
    from server.cli import _create_tenant

    data_dir = str(tmp_path_factory.mktemp("funnel-data"))
    admin_key = init_data_dir(data_dir)
    load_dataset(data_dir, "demo", DATASET, progress=False)
    train_tenant(data_dir, "demo", progress=False)
    api_key = _create_tenant(data_dir, "demo", "PG13")
    return data_dir, admin_key, api_key


@pytest.fixture
def data_dir_copy(trained_data_dir, tmp_path):
    """A private copy for tests that change data or config."""
    data_dir, admin_key, api_key = trained_data_dir
    copy = str(tmp_path / "data")
    shutil.copytree(data_dir, copy)
    return copy, admin_key, api_key


@pytest.fixture(scope="session")
def shared_server(trained_data_dir):
    """One server over the session's data dir, for read-only tests."""
    server = ServerProcess(trained_data_dir[0])
    yield server
    server.stop()
