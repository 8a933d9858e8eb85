"""Watching the API run: GET /metrics, the readiness check and the access log,
through Flask's test client."""

from __future__ import annotations

import logging
import re
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.operations import verify
from pocket.service import PocketService
from pocket.walletrecords import LATEST_VERSION
from pocket.web import create_app
from tests.docs import page, section
from tests.pgserver import PostgresServer
from tests.web.test_ledger_api import ADMIN_TOKEN


def metrics(client: FlaskClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of GET /metrics, by name and labels."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def signed_up(client: FlaskClient, name: str) -> tuple[int, dict[str, str]]:
    made = client.post("/users", json={"name": name}).get_json()
    return made["user"]["id"], {"Authorization": f"Bearer {made['token']}"}


ADD_MONEY = "/users/<int:user_id>/add_money"


def test_requests_are_counted_and_timed_by_route_never_by_path(
    client: FlaskClient,
) -> None:
    for name in ("Ann", "Bob"):
        user_id, auth = signed_up(client, name)
        body = {"amount": "1", "source": "x"}
        client.post(f"/users/{user_id}/add_money", json=body, headers=auth)
    client.get("/users/1/nothing/here")
    answer = client.get("/metrics").get_data(as_text=True)
    assert "/users/1/" not in answer
    assert "/users/2/" not in answer
    samples = metrics(client)
    requests = "pocket_http_requests_total"
    assert value(samples, requests, method="POST", route=ADD_MONEY, status="200") == 2
    assert value(samples, requests, method="POST", route="/users", status="201") == 2
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    latency = "pocket_http_request_duration_seconds_count"
    assert value(samples, latency, method="POST", route=ADD_MONEY) == 2
    slowest = value(
        samples,
        "pocket_http_request_duration_seconds_bucket",
        method="POST",
        route=ADD_MONEY,
        le="+Inf",
    )
    assert slowest == 2


def test_a_method_nobody_serves_is_counted_as_other(client: FlaskClient) -> None:
    client.open("/health", method="BREW")
    samples = metrics(client)
    assert (
        value(
            samples,
            "pocket_http_requests_total",
            method="other",
            route="unmatched",
            status="405",
        )
        == 1
    )


def test_refusals_are_counted_by_status_and_code(client: FlaskClient) -> None:
    user_id, auth = signed_up(client, "Ann")
    draw = {"amount": "5", "destination": "x"}
    for _ in range(2):
        client.post(f"/users/{user_id}/draw_money", json=draw, headers=auth)
    client.post(f"/users/{user_id}/draw_money", json={"amount": "-1"}, headers=auth)
    client.get("/users/999", headers=auth)  # A 404: not a refusal.
    samples = metrics(client)
    refusals = "pocket_http_refusals_total"
    assert value(samples, refusals, status="409", code="insufficient_funds") == 2
    assert value(samples, refusals, status="422", code="validation_failed") == 1
    codes = {dict(labels).get("code") for name, labels in samples if name == refusals}
    assert codes == {"insufficient_funds", "validation_failed"}


def test_group_commits_are_counted_by_their_size(client: FlaskClient) -> None:
    user_id, auth = signed_up(client, "Ann")  # Its wallet opened: one batch.
    before = metrics(client)
    for _ in range(3):
        body = {"amount": "1", "source": "x"}
        client.post(f"/users/{user_id}/add_money", json=body, headers=auth)
    samples = metrics(client)

    def added(name: str, **labels: str) -> float:
        now, then = value(samples, name, **labels), value(before, name, **labels)
        assert now is not None
        assert then is not None
        return now - then

    # One at a time: each batch held one command.
    assert added("pocket_group_commit_batch_size_bucket", le="1") == 3
    assert added("pocket_group_commit_batch_size_count") == 3
    assert added("pocket_group_commit_batch_size_sum") == 3
    assert value(samples, "pocket_group_commit_retries_total") == 0


def test_the_projection_s_lag_is_read_when_scraped(
    client: FlaskClient, service: PocketService
) -> None:
    user_id, auth = signed_up(client, "Ann")
    body = {"amount": "1", "source": "x"}
    client.post(f"/users/{user_id}/add_money", json=body, headers=auth)
    samples = metrics(client)  # No follower in this process: nothing applied.
    head = service.pocket.recorder.max_notification_id()
    wallet_records = {"projection": "wallet_records"}
    live = {**wallet_records, "version": str(LATEST_VERSION)}
    assert (
        value(samples, "pocket_projection_live_version", **wallet_records)
        == LATEST_VERSION
    )
    assert value(samples, "pocket_projection_head", **wallet_records) == head
    assert value(samples, "pocket_projection_position", **live) == 0
    assert value(samples, "pocket_projection_lag_events", **live) == head
    lag = value(samples, "pocket_projection_lag_seconds", **live)
    assert lag is not None
    assert lag > 0
    # No follower thread here: no role is claimed.
    assert not [name for name, _ in samples if name == "pocket_follower_role"]


def test_a_follower_in_the_process_shows_its_role_and_work(
    sql_settings: Settings,
) -> None:
    service = bootstrap(sql_settings, follow=True)
    try:
        client = create_app(service).test_client()
        user_id, auth = signed_up(client, "Ann")
        body = {"amount": "1", "source": "x"}
        client.post(f"/users/{user_id}/add_money", json=body, headers=auth)
        live = {"projection": "wallet_records", "version": str(LATEST_VERSION)}
        deadline = time.monotonic() + 10
        while value(metrics(client), "pocket_projection_lag_events", **live) != 0:
            assert time.monotonic() < deadline, "the follower did not catch up"
            time.sleep(0.05)
        samples = metrics(client)
        role = "pocket_follower_role"
        assert value(samples, role, **live, role="active") == 1
        assert value(samples, role, **live, role="standby") == 0
        old = {"projection": "wallet_records", "version": "1"}
        assert value(samples, role, **old, role="not_live") == 1
        assert (value(samples, "pocket_follower_batches_total", **live) or 0) >= 1
        events = value(samples, "pocket_follower_events_total", **live)
        assert events == service.pocket.recorder.max_notification_id()
        assert value(samples, "pocket_follower_failures_total", **live) == 0
        assert value(samples, "pocket_projection_lag_seconds", **live) == 0
    finally:
        service.close()


def test_metrics_are_public_and_answer_while_the_database_is_down(
    client: FlaskClient, service: PocketService
) -> None:
    samples = metrics(client)
    assert value(samples, "pocket_database_gate_open") == 1
    assert value(samples, "pocket_database_gate_trips_total") == 0
    service.gate.down.set()  # As a trip does; no probe reopens it here.
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert client.get("/users", headers=admin).status_code == 503
        samples = metrics(client)  # With no token, and at once.
        assert value(samples, "pocket_database_gate_open") == 0
        # The database is known to be down: the scrape does not ask it.
        assert not [n for n, _ in samples if n.startswith("pocket_projection_")]
    finally:
        service.gate.down.clear()


def test_two_apps_in_one_process_count_apart(sql_settings: Settings) -> None:
    services = [bootstrap(sql_settings), bootstrap(sql_settings)]
    try:
        first, second = (create_app(s).test_client() for s in services)
        first.get("/health")
        first.get("/health")
        second.get("/health")
        health = {"method": "GET", "route": "/health", "status": "200"}
        counted = [
            value(metrics(c), "pocket_http_requests_total", **health)
            for c in (first, second)
        ]
        assert counted == [2, 1]
    finally:
        for service in services:
            service.close()


def test_ready_asks_the_database(client: FlaskClient, service: PocketService) -> None:
    answer = client.get("/health/ready")
    assert (answer.status_code, answer.get_json()) == (200, {"status": "ready"})
    service.gate.down.set()
    try:
        answer = client.get("/health/ready")
        assert answer.status_code == 503
        assert answer.get_json()["error"]["code"] == "service_unavailable"
        assert client.get("/health").status_code == 200  # Liveness does not ask.
    finally:
        service.gate.down.clear()


def test_ready_says_503_while_postgres_is_down_and_ready_once_it_is_back(
    throwaway_postgres: PostgresServer,
) -> None:
    url = throwaway_postgres.create_database("pocket_ready")
    service = bootstrap(Settings.from_url(url))
    try:
        client = create_app(service).test_client()
        assert client.get("/health/ready").status_code == 200
        throwaway_postgres.stop(mode="fast")
        answer = client.get("/health/ready")
        assert answer.status_code == 503
        assert answer.headers["Retry-After"] == "1"
        error = answer.get_json()["error"]
        assert error["code"] == "service_unavailable"
        assert set(error) == {"code", "message"}
        assert client.get("/health").status_code == 200
        assert value(metrics(client), "pocket_database_gate_trips_total") == 1
        throwaway_postgres.start()
        deadline = time.monotonic() + 20
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, "never ready again"
            time.sleep(0.1)
        assert client.get("/health/ready").get_json() == {"status": "ready"}
    finally:
        service.close()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pocket.access"]


def test_each_request_is_logged_once_with_the_id_it_was_answered_with(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pocket.access")
    user_id, auth = signed_up(client, "Ann")
    headers = {**auth, "X-Request-Id": "order-17-try-2"}
    answered = client.get(f"/users/{user_id}", headers=headers)
    refused = client.get("/users/999", headers=auth)
    signup, mine, other = access_lines(caplog)
    assert answered.headers["X-Request-Id"] == "order-17-try-2"
    for record, answer in ((mine, answered), (other, refused)):
        fields = vars(record)
        assert fields["request_id"] == answer.headers["X-Request-Id"]
        assert fields["status"] == answer.status_code
        assert fields["duration_ms"] >= 0
        assert record.levelno == logging.INFO
    assert vars(mine)["path"] == f"/users/{user_id}"
    assert vars(mine)["route"] == "/users/<int:user_id>"
    assert vars(other)["status"] == 404
    assert mine.getMessage().startswith(f"GET /users/{user_id} 200 ")
    assert mine.getMessage().endswith("(request order-17-try-2)")
    assert vars(signup)["method"] == "POST"


def test_a_path_cannot_forge_a_log_line(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pocket.access")
    client.get("/x%0AINFO%20pocket.access:%20forged")
    (line,) = access_lines(caplog)
    assert "\n" not in line.getMessage()
    assert vars(line)["path"] == "/x%0AINFO%20pocket.access:%20forged"


def test_the_document_shows_metrics_as_public_text_and_ready_with_its_503(
    client: FlaskClient,
) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    scrape = paths["/metrics"]["get"]
    assert scrape["security"] == []
    assert list(scrape["responses"]["200"]["content"]) == ["text/plain"]
    ready = paths["/health/ready"]["get"]
    assert ready["security"] == []
    assert {"200", "503"} <= set(ready["responses"])


def test_each_app_has_a_registry_of_its_own(client: FlaskClient) -> None:
    app: Flask = client.application
    assert app.extensions["pocket.metrics"] is not REGISTRY


def documented_metrics() -> set[str]:
    """The metric names the table in docs/operations.md documents."""
    watching = section(page("operations.md"), "Watching it run")
    return set(re.findall(r"^\| `(pocket_\w+)` \|", watching, re.MULTILINE))


def test_the_docs_document_every_metric_of_a_server_and_no_other(
    sql_settings: Settings,
) -> None:
    service = bootstrap(sql_settings, follow=True)
    try:
        verify(service.pocket, out=lambda _: None)  # its figures need a run
        answer = create_app(service).test_client().get("/metrics")
        families = text_string_to_metric_families(answer.get_data(as_text=True))
        # A counter's family is named without the _total its samples carry.
        exposed = {
            f.name + ("_total" if f.type == "counter" else "")
            for f in families
            if f.name.startswith("pocket_")
        }
    finally:
        service.close()
    assert exposed == documented_metrics()


def test_the_last_verify_is_in_the_metrics(
    client: FlaskClient, service: PocketService
) -> None:
    def samples() -> dict[str, float]:
        text = client.get("/metrics").get_data(as_text=True)
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("pocket_verify_")
        }

    assert samples() == {}  # never run: no figure rather than a made-up one
    before = time.time()
    verify(service.pocket, out=lambda _: None)
    figures = samples()
    assert figures["pocket_verify_last_mismatches"] == 0
    assert figures["pocket_verify_last_checked"] == 0
    assert figures["pocket_verify_last_run_timestamp_seconds"] >= before - 1
