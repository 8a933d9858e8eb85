"""The HTTP API through Flask's test client: the seed's session and every bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.service import PocketService
from pocket.web import create_app

JSON = "application/json"


@pytest.fixture
def service(sql_settings: Settings) -> Iterator[PocketService]:
    pocket_service = bootstrap(sql_settings)
    yield pocket_service
    pocket_service.close()


@pytest.fixture
def app(service: PocketService) -> Flask:
    return create_app(service)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sign_in(client: FlaskClient, token: str) -> None:
    """Sends the token with every later request of this client."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"


@pytest.fixture
def user_id(client: FlaskClient) -> int:
    """A signed-in user with 10.00 in their wallet."""
    created = client.post("/users", json={"name": "Gabriela"})
    uid: int = created.get_json()["user"]["id"]
    sign_in(client, created.get_json()["token"])
    client.post(f"/users/{uid}/add_money", json={"amount": 10, "source": "API"})
    return uid


def recorded(service: PocketService) -> tuple[Any, ...]:
    """Everything a request could have changed."""
    users = service.users.db.query("SELECT count(*) AS n FROM users")[0]["n"]
    return (service.pocket.recorder.max_notification_id(), users)


def test_the_seed_session(client: FlaskClient) -> None:
    created = client.post("/users", json={"name": "Gabriela"})
    assert created.status_code == 201
    body = created.get_json()
    user, wallet = body["user"], body["wallet"]
    assert set(user) == {"id", "name", "created_at", "updated_at"}
    assert user["name"] == "Gabriela"
    assert wallet == {
        "aggregate_id": wallet["aggregate_id"],
        "user_id": user["id"],
        "balance": "0.00",
        "version": 1,
        "closed": False,
        "held": "0.00",
        "available": "0.00",
        "credit_limit": "0.00",
        "daily_limit": None,
        "alert_below": None,
    }
    uid = user["id"]
    sign_in(client, body["token"])

    added = client.post(f"/users/{uid}/add_money", json={"amount": 20, "source": "API"})
    assert added.status_code == 200
    assert added.get_json()["wallet"]["balance"] == "20.00"
    assert added.get_json()["user"] == user

    drawn = client.post(
        f"/users/{uid}/draw_money", json={"amount": 5, "destination": "API"}
    )
    assert drawn.status_code == 200
    assert drawn.get_json()["wallet"]["balance"] == "15.00"

    history = client.get(f"/users/{uid}/transactions")
    assert history.status_code == 200
    listing = history.get_json()
    assert listing["balance"] == "15.00"
    entries = listing["transactions"]
    assert [(e["type"], e["amount"]) for e in entries] == [
        ("IN", "20.00"),
        ("OUT", "5.00"),
    ]
    assert entries[0]["source"] == "API"
    assert entries[1]["destination"] == "API"
    assert entries[0]["date"] <= entries[1]["date"]
    assert entries[0]["id"] < entries[1]["id"]

    fetched = client.get(f"/users/{uid}").get_json()
    assert fetched == {
        "user": user,
        "wallet": {**wallet, "balance": "15.00", "available": "15.00", "version": 3},
    }


@pytest.mark.parametrize(
    ("amount", "balance"),
    [
        ("20.5", "30.50"),
        (20.5, "30.50"),
        ("0.01", "10.01"),
        (0.1, "10.10"),
        ("1000000000.00", "1000000010.00"),
        (1000000000, "1000000010.00"),
        ("007", "17.00"),
    ],
)
def test_amounts_as_numbers_or_strings(
    client: FlaskClient, user_id: int, amount: Any, balance: str
) -> None:
    answer = client.post(
        f"/users/{user_id}/add_money", json={"amount": amount, "source": "API"}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["wallet"]["balance"] == balance


def test_json_numbers_are_never_floats(client: FlaskClient, user_id: int) -> None:
    for _ in range(3):
        client.post(
            f"/users/{user_id}/add_money",
            data='{"amount": 0.1, "source": "API"}',
            content_type=JSON,
        )
    answer = client.get(f"/users/{user_id}")
    assert answer.get_json()["wallet"]["balance"] == "10.30"


def assert_error(
    response: TestResponse, status: int, code: str, fields: set[str] | None = None
) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == JSON
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    if fields is None:
        assert "fields" not in error
    else:
        assert set(error["fields"]) == fields


BAD_AMOUNTS: list[Any] = [
    0,
    "0",
    "0.00",
    -5,
    "-5",
    "-0.01",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    1.234,
    "1.234",
    "1000000000.01",
    1000000000.01,
    "1e3",
    "abc",
    "",
    " 5",
    "5 ",
    "+5",
    "1,000",
    "\u0663",
    ".5",
    "5.",
    True,
    False,
    None,
    {},
    [],
    [5],
    "9" * 5000,
]


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
@pytest.mark.parametrize("action", ["add_money", "draw_money"])
def test_bad_amounts_are_422_and_change_nothing(
    client: FlaskClient, service: PocketService, user_id: int, action: str, amount: Any
) -> None:
    before = recorded(service)
    label = "source" if action == "add_money" else "destination"
    answer = client.post(
        f"/users/{user_id}/{action}", json={"amount": amount, label: "x"}
    )
    assert_error(answer, 422, "validation_failed", {"amount"})
    assert recorded(service) == before


@pytest.mark.parametrize(
    "raw",
    [
        '{"amount": NaN, "source": "x"}',
        '{"amount": Infinity, "source": "x"}',
        '{"amount": -Infinity, "source": "x"}',
        '{"amount": 1e3, "source": "x"}',
        '{"amount": 1E2, "source": "x"}',
        '{"amount": 0.1e1, "source": "x"}',
        '{"amount": -0, "source": "x"}',
        '{"amount": 10.000, "source": "x"}',
        '{"amount": 1' + "0" * 5000 + ', "source": "x"}',
    ],
)
def test_json_numbers_are_checked_as_written(
    client: FlaskClient, service: PocketService, user_id: int, raw: str
) -> None:
    before = recorded(service)
    answer = client.post(f"/users/{user_id}/add_money", data=raw, content_type=JSON)
    assert_error(answer, 422, "validation_failed", {"amount"})
    assert recorded(service) == before


BAD_TEXTS: list[Any] = [
    "",
    "   ",
    5,
    None,
    True,
    ["API"],
    "x" * 256,
    "a\x00b",
    "\ud800",
    # What would let a text show as another: bidirectional controls (an override,
    # an isolate, a mark), invisible characters, a line break, a blank letter.
    "\u202enimda",
    "Ann\u2067",
    "\u200fAnn",
    "ad\u200bmin",
    "Ann\u2060",
    "\ufeffAnn",
    "Ann\u2028Bob",
    "\u3164",
]


@pytest.mark.parametrize("text", BAD_TEXTS)
@pytest.mark.parametrize(
    ("action", "label"), [("add_money", "source"), ("draw_money", "destination")]
)
def test_bad_sources_and_destinations_are_422_and_change_nothing(
    client: FlaskClient,
    service: PocketService,
    user_id: int,
    action: str,
    label: str,
    text: Any,
) -> None:
    before = recorded(service)
    answer = client.post(f"/users/{user_id}/{action}", json={"amount": 1, label: text})
    assert_error(answer, 422, "validation_failed", {label})
    assert recorded(service) == before


@pytest.mark.parametrize("name", BAD_TEXTS)
def test_bad_names_are_422_and_create_nobody(
    client: FlaskClient, service: PocketService, name: Any
) -> None:
    before = recorded(service)
    assert_error(
        client.post("/users", json={"name": name}), 422, "validation_failed", {"name"}
    )
    assert recorded(service) == before


@pytest.mark.parametrize(
    ("path", "body", "fields"),
    [
        ("add_money", {}, {"amount", "source"}),
        ("add_money", {"amount": 1}, {"source"}),
        ("add_money", {"source": "x"}, {"amount"}),
        ("draw_money", {"amount": 1, "source": "x"}, {"destination", "source"}),
        ("add_money", {"amount": 1, "source": "x", "balance": "99"}, {"balance"}),
    ],
)
def test_missing_and_unknown_fields_are_named(
    client: FlaskClient,
    service: PocketService,
    user_id: int,
    path: str,
    body: dict[str, Any],
    fields: set[str],
) -> None:
    before = recorded(service)
    answer = client.post(f"/users/{user_id}/{path}", json=body)
    assert_error(answer, 422, "validation_failed", fields)
    assert recorded(service) == before


def test_a_user_cannot_be_given_an_id(
    client: FlaskClient, service: PocketService
) -> None:
    answer = client.post("/users", json={"name": "a", "id": 5})
    assert_error(answer, 422, "validation_failed", {"id"})


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ('{"amount": ', "malformed_json"),
        ("", "malformed_json"),
        ("{'amount': 1}", "malformed_json"),
        (b"\xff\xfe\x00", "malformed_json"),
        ("[" * 100_000 + "]" * 100_000, "malformed_json"),
        ("[1, 2]", "not_an_object"),
        ('"amount"', "not_an_object"),
        ("null", "not_an_object"),
        ("5", "not_an_object"),
    ],
)
def test_bodies_that_are_not_json_objects_are_400(
    client: FlaskClient, service: PocketService, user_id: int, data: Any, code: str
) -> None:
    before = recorded(service)
    answer = client.post(f"/users/{user_id}/add_money", data=data, content_type=JSON)
    assert_error(answer, 400, code)
    assert recorded(service) == before


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"],
)
def test_bodies_that_are_not_sent_as_json_are_415(
    client: FlaskClient, service: PocketService, user_id: int, content_type: str | None
) -> None:
    before = recorded(service)
    answer = client.post(
        f"/users/{user_id}/add_money",
        data='{"amount": 1, "source": "x"}',
        content_type=content_type,
    )
    assert_error(answer, 415, "unsupported_media_type")
    assert recorded(service) == before


def test_a_json_content_type_with_a_charset_is_json(
    client: FlaskClient, user_id: int
) -> None:
    answer = client.post(
        f"/users/{user_id}/add_money",
        data='{"amount": 1, "source": "x"}',
        content_type="application/json; charset=utf-8",
    )
    assert answer.status_code == 200


def test_an_oversized_body_is_413(
    client: FlaskClient, service: PocketService, user_id: int
) -> None:
    before = recorded(service)
    padding = "x" * (1024 * 1024)
    answer = client.post(
        f"/users/{user_id}/add_money",
        data=f'{{"amount": 1, "source": "{padding}"}}',
        content_type=JSON,
    )
    assert_error(answer, 413, "payload_too_large")
    assert recorded(service) == before


def test_an_overdraft_is_409_and_changes_nothing(
    client: FlaskClient, service: PocketService, user_id: int
) -> None:
    before = recorded(service)
    answer = client.post(
        f"/users/{user_id}/draw_money", json={"amount": "10.01", "destination": "x"}
    )
    assert_error(answer, 409, "insufficient_funds")
    assert recorded(service) == before
    assert client.get(f"/users/{user_id}").get_json()["wallet"]["balance"] == "10.00"


@pytest.mark.parametrize(
    "path",
    [
        "/users/999",
        "/users/999/transactions",
        "/users/0",
        "/users/-1",
        "/users/abc",
        "/users/99999999999999999999999",
        "/nothing/here",
        "/users/1/nothing",
    ],
)
def test_unknown_users_and_routes_are_404(
    client: FlaskClient, user_id: int, path: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] in ("not_found", "user_not_found")


@pytest.mark.parametrize("action", ["add_money", "draw_money"])
def test_money_for_an_unknown_user_is_404_and_changes_nothing(
    client: FlaskClient, service: PocketService, user_id: int, action: str
) -> None:
    before = recorded(service)
    label = "source" if action == "add_money" else "destination"
    answer = client.post(f"/users/999/{action}", json={"amount": 1, label: "x"})
    assert_error(answer, 404, "user_not_found")
    assert recorded(service) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/users/{id}/add_money"),
        ("put", "/users/{id}/draw_money"),
        ("delete", "/users/{id}"),
        ("patch", "/users"),
        ("post", "/users/{id}/transactions"),
    ],
)
def test_wrong_methods_are_405_with_allow(
    client: FlaskClient, service: PocketService, user_id: int, method: str, path: str
) -> None:
    before = recorded(service)
    answer = getattr(client, method)(path.format(id=user_id))
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers["Allow"]
    assert recorded(service) == before


def test_health_is_a_trivial_json_endpoint(client: FlaskClient) -> None:
    answer = client.get("/health")
    assert (answer.status_code, answer.get_json()) == (200, {"status": "ok"})
