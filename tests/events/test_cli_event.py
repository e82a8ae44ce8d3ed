"""`funnel event` and `funnel feed` as a user runs them (real subprocesses against a real
`funnel serve` with its ingest worker): the clicked item leaves the next feed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.events.helpers import now_ms, wait_applied

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def feed_ids(target: str, key: str, user: str) -> list[str]:
    out = cli("feed", "--target", target, "--tenant", "shop", "--key", key, "--user", user, "--limit", "5")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.startswith("request=")
    return [row.split()[1] for row in rows]


def test_an_event_sent_with_funnel_event_changes_the_next_funnel_feed(small_copy, nats_server, start_server):
    data_dir, key = small_copy
    server = start_server(data_dir, nats_server.url)
    before = feed_ids(server.target, key, "cli-user")
    assert len(before) == 5 and all(i.startswith("i") for i in before)
    sent = cli("event", "--target", server.target, "--tenant", "shop", "--key", key, "--user", "cli-user",
               "--item", before[0], "--type", "click")
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("accepted=1 spooled=0 duplicates=0 rejected=0")
    wait_applied(data_dir, nats_server.url)
    assert before[0] not in feed_ids(server.target, key, "cli-user")

    future = cli("event", "--target", server.target, "--tenant", "shop", "--key", key, "--user", "cli-user",
                 "--item", before[1], "--timestamp-ms", str(now_ms() + 86_400_000))
    assert future.returncode == 1
    assert "rejected=1" in future.stdout and "future" in future.stdout
    wrong_key = cli("event", "--target", server.target, "--tenant", "shop", "--key", "nope", "--user", "u",
                    "--item", "i1")
    assert wrong_key.returncode == 1 and "UNAUTHENTICATED" in wrong_key.stderr
