"""Sign-up's limit per client address (POCKET_SIGNUP_RATE), through the test
client: 429 with Retry-After past it, nobody created, the admin not counted.
(The limit holding under concurrent requests to a real server is tested in
tests/e2e/test_signup_rate_e2e.py.) The limit does not depend on the store: one
SQLite file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.ratelimit import Rate
from pocket.web import create_app

ADMIN_TOKEN = "operator-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
THREE_AN_HOUR = Rate(3, 3600.0)

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[MakeApp]:
    """Builds an app on a fresh database with the settings' changes given."""
    services = []

    def make(**changes: Any) -> Flask:
        settings = Settings.from_url(f"sqlite:///{tmp_path / 'pocket.db'}")
        service = bootstrap(replace(settings, admin_token=ADMIN_TOKEN, **changes))
        services.append(service)
        return create_app(service)

    yield make
    for service in services:
        service.close()


@pytest.fixture
def client(make_app: MakeApp) -> FlaskClient:
    return make_app(signup_rate=THREE_AN_HOUR).test_client()


def sign_up(
    client: FlaskClient, address: str = "192.0.2.1", **headers: str
) -> TestResponse:
    return client.post(
        "/users",
        json={"name": "Ann"},
        headers=headers,
        environ_base={"REMOTE_ADDR": address},
    )


def users(client: FlaskClient) -> int:
    return len(client.get("/users?limit=500", headers=ADMIN).get_json()["users"])


def test_past_the_rate_a_sign_up_is_429_with_retry_after_and_creates_nobody(
    client: FlaskClient,
) -> None:
    assert [sign_up(client).status_code for _ in range(3)] == [201] * 3
    refused = sign_up(client)
    assert refused.status_code == 429
    assert refused.mimetype == "application/json"
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_signups"
    assert set(error) == {"code", "message"}
    # The next sign-up is 20 minutes away (3 an hour, evenly spread).
    assert 1190 <= int(refused.headers["Retry-After"]) <= 1200
    assert refused.headers["Retry-After"] in error["message"]
    assert users(client) == 3


def test_each_client_address_has_its_own_allowance(client: FlaskClient) -> None:
    for _ in range(3):
        sign_up(client, "192.0.2.1")
    assert sign_up(client, "192.0.2.1").status_code == 429
    assert sign_up(client, "192.0.2.2").status_code == 201
    assert sign_up(client, "2001:db8::1").status_code == 201


def test_the_admin_s_sign_ups_are_not_limited_nor_counted(client: FlaskClient) -> None:
    for _ in range(5):
        assert sign_up(client, **ADMIN).status_code == 201
    assert [sign_up(client).status_code for _ in range(3)] == [201] * 3
    assert sign_up(client).status_code == 429
    assert sign_up(client, **ADMIN).status_code == 201


def test_a_user_s_token_does_not_lift_the_limit(client: FlaskClient) -> None:
    token = sign_up(client).get_json()["token"]
    user = {"Authorization": f"Bearer {token}"}
    assert [sign_up(client, **user).status_code for _ in range(3)] == [201, 201, 429]


def test_a_refused_body_does_not_use_up_the_allowance(client: FlaskClient) -> None:
    for _ in range(5):
        blank = client.post("/users", json={"name": " "})
        assert blank.status_code == 422
    assert [sign_up(client, "127.0.0.1").status_code for _ in range(3)] == [201] * 3


def test_by_default_ten_sign_ups_a_minute_from_one_address(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert [sign_up(client).status_code for _ in range(10)] == [201] * 10
    refused = sign_up(client)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 6


def test_off_means_no_limit(make_app: MakeApp) -> None:
    client = make_app(signup_rate=None).test_client()
    assert [sign_up(client).status_code for _ in range(30)] == [201] * 30


def test_the_document_says_a_sign_up_may_be_refused_with_retry_after(
    client: FlaskClient,
) -> None:
    document = client.get("/openapi.json").get_json()
    signup = document["paths"]["/users"]["post"]
    assert signup["responses"]["429"] == {"$ref": "#/components/responses/E429"}
    refused = document["components"]["responses"]["E429"]
    assert refused["headers"]["Retry-After"]["required"] is True
    assert "too_many_signups" in refused["description"]
