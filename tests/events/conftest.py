"""Fixtures for the event path: a real nats-server on a free port, a small real
data directory, and serving processes (helpers in tests/events/helpers.py)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import free_port
from tests.events.helpers import EventServer, Proc

CATEGORIES = ("Drama", "Comedy", "Action", "Horror", "Family")
N_ITEMS = 200


@pytest.fixture
def nats_server(tmp_path):
    from server.events.nats_server import EmbeddedNats

    server = EmbeddedNats(str(tmp_path / "nats"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory):
    """Tenant "shop": N_ITEMS items over CATEGORIES (item "i<k>" has category k % 5),
    no history, no models. Returns (data_dir, api_key); copy it before changing it."""
    from ops.load import load_dataset
    from server.app import init_data_dir
    from server.cli import _create_tenant

    root = tmp_path_factory.mktemp("events-data")
    src = root / "dataset"
    src.mkdir()
    with open(src / "items.jsonl", "w") as f:
        for k in range(N_ITEMS):
            f.write(json.dumps({"item_id": f"i{k}", "title": f"Item {k}", "categories": [CATEGORIES[k % 5]],
                                "maturity_rating": "PG", "created_at": 1_700_000_000 + k}) + "\n")
    data_dir = str(root / "data")
    init_data_dir(data_dir)
    load_dataset(data_dir, "shop", str(src), now_ts=1_700_000_000, progress=False)
    return data_dir, _create_tenant(data_dir, "shop", "PG13")


@pytest.fixture
def small_copy(small_data_dir, tmp_path):
    data_dir, api_key = small_data_dir
    copy = str(tmp_path / "data")
    shutil.copytree(data_dir, copy)
    return copy, api_key


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(data_dir: str, nats_url: str, *extra: str) -> EventServer:
        server = EventServer(data_dir, nats_url, str(tmp_path / f"serve-{len(started)}.log"), extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def start_proc(tmp_path):
    """Starts funnel CLI processes (output in tmp_path/<name>.log), stopped at teardown."""
    started = []

    def start(name: str, args: list[str]) -> Proc:
        started.append(Proc(args, str(tmp_path / f"{name}.log")))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()
