"""End to end: real `pocket serve` and `pocket follow` processes logging JSON,
and a follower's metrics on a port of its own."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pocket.config import Settings
from pocket.walletrecords import LATEST_VERSION
from tests.e2e.processes import PocketProcess, follow, records, replay, serve, wait_for
from tools.scratch import free_port

pytestmark = pytest.mark.e2e


def json_lines(process: PocketProcess) -> list[dict[str, Any]]:
    """Every line the process wrote (stdout and stderr), each parsed as JSON."""
    lines = process.output.splitlines()
    assert lines
    parsed: list[dict[str, Any]] = [json.loads(line) for line in lines]
    return parsed


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


VERSION = ("version", str(LATEST_VERSION))
LIVE = frozenset({("projection", "wallet_records"), VERSION})


def test_serve_and_follow_log_every_line_as_json_with_the_access_fields(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": sqlite_url, "POCKET_LOG_FORMAT": "json"}
    server, api = serve(tmp_path, env, "--no-follower")
    follower = follow(tmp_path, env)
    try:
        status, body = api.post("/users", {"name": "Ann"}, {"X-Request-Id": "ann-1"})
        assert status == 201, body
        api.get("/users/1/nothing")
        wait_for(lambda: len(json_lines(server)) >= 3, what="the access lines")
        # The follower stops at a position once it has applied the sign-up.
        settings = Settings.from_url(sqlite_url)
        wait_for(lambda: records(settings) == replay(settings), what="the follower")
        assert server.terminate() == 0
        assert follower.terminate() == 0
        served = json_lines(server)
        assert "Pocket serving on http://127.0.0.1:" in served[0]["message"]
        access = {
            line["path"]: line for line in served if line["logger"] == "pocket.access"
        }
        signup = access["/users"]
        assert set(signup) == {
            "time",
            "level",
            "logger",
            "message",
            "request_id",
            "method",
            "path",
            "route",
            "status",
            "duration_ms",
        }
        assert (signup["request_id"], signup["status"], signup["method"]) == (
            "ann-1",
            201,
            "POST",
        )
        assert (access["/users/1/nothing"]["status"], access["/health"]["status"]) == (
            404,
            200,
        )
        followed = json_lines(follower)
        messages = [line["message"] for line in followed]
        assert any(m.startswith("Following ") for m in messages)
        assert any(m.startswith("Stopped at position") for m in messages)
    finally:
        server.close()
        follower.close()


def test_a_follower_shows_its_role_lag_and_work_on_its_metrics_port(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    port = free_port()
    server, api = serve(tmp_path, env, "--no-follower")
    follower = follow(tmp_path, env, "--metrics-port", str(port))
    try:
        assert f"Metrics at http://127.0.0.1:{port}/metrics" in follower.output
        status, body = api.post("/users", {"name": "Ann"})
        assert status == 201, body
        user = api.as_user(body["token"])
        for _ in range(3):
            user.post("/users/1/add_money", {"amount": "1", "source": "x"})

        def caught_up() -> bool:
            samples = scrape(port)
            return samples.get(("pocket_projection_lag_events", LIVE)) == 0 and bool(
                samples.get(("pocket_projection_head", LIVE - {VERSION}))
            )

        wait_for(caught_up, what="the follower to catch up")
        samples = scrape(port)
        active = LIVE | {("role", "active")}
        assert samples[("pocket_follower_role", active)] == 1
        assert samples[("pocket_follower_batches_total", LIVE)] >= 1
        assert samples[("pocket_follower_events_total", LIVE)] >= 4
        assert samples[("pocket_follower_failures_total", LIVE)] == 0
        # A follower commits nothing and has no 503 gate: neither is shown.
        names = {name for name, _ in samples}
        assert "pocket_group_commit_batch_size_count" not in names
        assert "pocket_database_gate_open" not in names
        assert follower.terminate() == 0
    finally:
        follower.close()
        server.close()
