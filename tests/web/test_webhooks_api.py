"""The admin's webhook routes through the HTTP API: subscribing, listing, reading,
deleting, a subscription's deliveries and replays; every refusal a JSON 4xx that
names what is wrong and changes nothing, never a 500."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket.application import Pocket
from pocket.service import PocketService
from pocket.system import WebhookFeed
from pocket.web import create_app
from tests.web.test_ledger_api import ADMIN, error_code, head, sign_up

RECEIVER = "https://orders.example/pocket?shop=7"
SHOWN = {
    "id",
    "url",
    "events",
    "user_id",
    "alert_below",
    "description",
    "created_at",
    "start_position",
    "position",
    "lag",
    "pending",
    "parked",
    "last_delivered_at",
    "last_error",
    "last_error_at",
    "replay",
}
DELIVERY_KEYS = {
    "id",
    "event_id",
    "event_type",
    "position",
    "wallet_id",
    "status",
    "attempts",
    "created_at",
    "next_attempt_at",
    "last_attempt_at",
    "last_error",
    "delivered_at",
    "event",
}


@pytest.fixture
def app(service: PocketService) -> Flask:
    return create_app(service)


def subscribe(client: FlaskClient, **body: Any) -> TestResponse:
    """POST /admin/webhooks with the admin's token (to RECEIVER unless body
    names a url)."""
    return client.post("/admin/webhooks", json={"url": RECEIVER, **body}, headers=ADMIN)


def subscribed(client: FlaskClient, **body: Any) -> dict[str, Any]:
    answer = subscribe(client, **body)
    assert answer.status_code == 201, answer.get_json()
    webhook: dict[str, Any] = answer.get_json()["webhook"]
    return webhook


def listed(client: FlaskClient) -> list[dict[str, Any]]:
    answer = client.get("/admin/webhooks", headers=ADMIN)
    assert answer.status_code == 200
    webhooks: list[dict[str, Any]] = answer.get_json()["webhooks"]
    return webhooks


def queue(service: PocketService) -> None:
    """Runs the webhook follower over the log once: each subscription's
    deliveries queued (no follower runs in these tests' service)."""
    feed = WebhookFeed(env=dict(service.settings.env))
    try:
        feed.follow(Pocket.name, service.pocket.notification_log)
        feed.catch_up(Pocket.name)
    finally:
        feed.close()


def replays(service: PocketService) -> int:
    rows = service.users.db.query("SELECT count(*) AS n FROM webhook_replays")
    return int(rows[0]["n"])


def everything(client: FlaskClient, service: PocketService) -> Any:
    """What a refused request must leave as it was: the subscriptions, the
    log, and the replays asked for."""
    return listed(client), head(service), replays(service)


def refused(answer: TestResponse, status: int, code: str) -> dict[str, Any]:
    """A JSON error of this status and code; its error object."""
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/json"
    error: dict[str, Any] = answer.get_json()["error"]
    assert error["code"] == code
    assert error["message"]
    return error


# Subscribing, reading, deleting


def test_a_subscription_is_made_with_its_secret_then_read_listed_and_deleted(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="20")
    answer = subscribe(
        client,
        events=["money.added", "balance.low"],
        user_id=ann.id,
        alert_below="10",
        description="Orders: captures and low balances",
    )
    assert answer.status_code == 201
    made = answer.get_json()["webhook"]
    assert set(made) == {*SHOWN, "secret"}
    assert UUID(made["id"])
    assert made["secret"].startswith("whsec_")
    assert len(made["secret"]) > 40
    assert made["url"] == RECEIVER
    assert made["events"] == ["money.added", "balance.low"]
    assert (made["user_id"], made["alert_below"]) == (ann.id, "10.00")
    assert made["description"] == "Orders: captures and low balances"
    assert made["start_position"] == head(service)
    assert (made["pending"], made["parked"], made["replay"]) == (0, 0, None)
    assert made["last_error"] is None

    shown = {key: value for key, value in made.items() if key != "secret"}
    assert listed(client) == [shown]  # The secret is shown only once.
    read = client.get(f"/admin/webhooks/{made['id']}", headers=ADMIN)
    assert read.status_code == 200
    assert read.get_json() == {"webhook": shown}

    deleted = client.delete(f"/admin/webhooks/{made['id']}", headers=ADMIN)
    assert deleted.status_code == 204
    assert deleted.get_data() == b""
    gone = client.get(f"/admin/webhooks/{made['id']}", headers=ADMIN)
    refused(gone, 404, "webhook_not_found")
    assert listed(client) == []


def test_a_subscription_wants_every_event_of_every_user_by_default(
    client: FlaskClient,
) -> None:
    made = subscribed(client)
    assert made["events"] == ["*"]
    assert (made["user_id"], made["alert_below"], made["description"]) == (
        None,
        None,
        "",
    )


def test_each_subscription_has_a_secret_of_its_own(client: FlaskClient) -> None:
    first, second = subscribed(client), subscribed(client)
    assert first["id"] != second["id"]
    assert first["secret"] != second["secret"]
    assert [w["id"] for w in listed(client)] == [first["id"], second["id"]]


def test_deliveries_are_listed_newest_first_and_by_status(
    client: FlaskClient, service: PocketService
) -> None:
    made = subscribed(client, events=["money.added"])
    ann = sign_up(client, money="5")
    for amount in ("1", "2"):
        client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": amount, "source": "bank"},
            headers=ann.auth,
        )
    queue(service)
    path = f"/admin/webhooks/{made['id']}/deliveries"
    answer = client.get(path, headers=ADMIN)
    assert answer.status_code == 200
    shown = answer.get_json()["deliveries"]
    assert [d["event"]["amount"] for d in shown] == ["2.00", "1.00", "5.00"]
    assert all(set(d) == DELIVERY_KEYS for d in shown)
    assert {(d["status"], d["attempts"], d["event_type"]) for d in shown} == {
        ("pending", 0, "money.added")
    }
    assert [d["event_id"] for d in shown] == [d["event"]["id"] for d in shown]
    assert client.get(f"{path}?status=pending", headers=ADMIN).get_json() == {
        "deliveries": shown
    }
    for status in ("delivered", "parked"):
        other = client.get(f"{path}?status={status}", headers=ADMIN)
        assert other.get_json() == {"deliveries": []}
    one = client.get(f"{path}?limit=1&status=pending", headers=ADMIN)
    assert one.get_json() == {"deliveries": shown[:1]}
    webhook = client.get(f"/admin/webhooks/{made['id']}", headers=ADMIN).get_json()
    # Every event before the first pending one is done with.
    first_pending = shown[-1]["position"]
    assert (webhook["webhook"]["pending"], webhook["webhook"]["position"]) == (
        3,
        first_pending - 1,
    )
    assert webhook["webhook"]["lag"] == head(service) - (first_pending - 1)


def test_a_replay_is_accepted_with_the_range_it_covers(
    client: FlaskClient, service: PocketService
) -> None:
    sign_up(client, money="5")
    made = subscribed(client)
    queue(service)
    followed = head(service)
    path = f"/admin/webhooks/{made['id']}/replay"
    answer = client.post(path, json={"from_position": 2}, headers=ADMIN)
    assert answer.status_code == 202
    assert answer.get_json() == {"replay": {"after": 1, "until": followed}}
    webhook = client.get(f"/admin/webhooks/{made['id']}", headers=ADMIN).get_json()
    assert webhook["webhook"]["replay"] == {"after": 1, "until": followed}
    # Past where the follower is: nothing to send again yet.
    later = client.post(path, json={"from_position": followed + 5}, headers=ADMIN)
    assert later.get_json() == {"replay": {"after": followed, "until": followed}}


# Refusals


BAD_URLS = [
    "ftp://orders.example/pocket",
    "orders.example/pocket",
    "http:///pocket",
    "https://",
    "https://user:password@orders.example/pocket",
    "https://token@orders.example/pocket",
    "https://orders.example/a b",
    " https://orders.example/pocket",
    "https://orders.example/pocket\n",
    "https://orders.example/\tpocket",
    "https://orders.example/" + "a" * 3000,
    "https://orders.example:99999/pocket",
    "https://orders.example:port/pocket",
    "http://[::1/pocket",
    "https://orders.example/\x00",
    "https://orders.example/\x7f",
    "https://orders.example/\ud800",
    "https://orders.example/caf\u00e9",
    "https://ordérs.example/pocket",
    "",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_url_is_refused_and_changes_nothing(
    client: FlaskClient, service: PocketService, url: str
) -> None:
    before = everything(client, service)
    error = refused(subscribe(client, url=url), 422, "validation_failed")
    assert set(error["fields"]) == {"url"}
    assert everything(client, service) == before


@pytest.mark.parametrize("url", [5, None, True, ["https://orders.example/"], {}])
def test_a_url_that_is_not_a_string_is_refused(
    client: FlaskClient, service: PocketService, url: Any
) -> None:
    before = everything(client, service)
    error = refused(subscribe(client, url=url), 422, "validation_failed")
    assert error["fields"] == {"url": "A URL, as a string."}
    assert everything(client, service) == before


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("events", [], "validation_failed"),
        ("events", ["money.nope"], "validation_failed"),
        ("events", ["money.added", "everything"], "validation_failed"),
        ("events", "money.added", "validation_failed"),
        ("events", [1], "validation_failed"),
        ("events", None, "validation_failed"),
        ("events", {"money.added": True}, "validation_failed"),
        ("user_id", 0, "validation_failed"),
        ("user_id", -1, "validation_failed"),
        ("user_id", "1", "validation_failed"),
        ("user_id", 1.5, "validation_failed"),
        ("user_id", None, "validation_failed"),
        ("user_id", 2**63, "validation_failed"),
        ("alert_below", -1, "invalid_limit"),
        ("alert_below", "1e3", "invalid_limit"),
        ("alert_below", "ten", "invalid_limit"),
        ("alert_below", "1.001", "invalid_limit"),
        ("alert_below", " 5", "invalid_limit"),
        ("alert_below", None, "invalid_limit"),
        ("alert_below", "1000000000.01", "invalid_limit"),
        ("description", "x" * 201, "validation_failed"),
        ("description", 5, "validation_failed"),
        ("description", None, "validation_failed"),
        ("description", "Orders\x00", "validation_failed"),
        ("description", "Orders\ud800", "validation_failed"),
        ("description", "Orders\u202e", "validation_failed"),
        ("description", "Orders\nand more", "validation_failed"),
        ("secret", "whsec_mine", "validation_failed"),
        ("start_position", 0, "validation_failed"),
        ("bogus", 1, "validation_failed"),
    ],
)
def test_a_bad_field_is_refused_naming_it_and_changes_nothing(
    client: FlaskClient, service: PocketService, field: str, value: Any, code: str
) -> None:
    before = everything(client, service)
    error = refused(subscribe(client, **{field: value}), 422, code)
    assert set(error["fields"]) == {field}
    assert everything(client, service) == before


def test_every_bad_field_is_named_at_once(
    client: FlaskClient, service: PocketService
) -> None:
    answer = client.post(
        "/admin/webhooks",
        json={"events": "*", "user_id": 0, "alert_below": "-1", "x": 1},
        headers=ADMIN,
    )
    error = refused(answer, 422, "validation_failed")
    assert set(error["fields"]) == {"url", "events", "user_id", "alert_below", "x"}
    assert error["fields"]["url"] == "This field is required."
    assert listed(client) == []


def test_an_unknown_user_is_404_and_changes_nothing(
    client: FlaskClient, service: PocketService
) -> None:
    before = everything(client, service)
    error = refused(subscribe(client, user_id=999), 404, "user_not_found")
    assert "999" in error["message"]
    assert everything(client, service) == before


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "malformed_json"),
        (b'["https://orders.example/"]', "application/json", 400, "not_an_object"),
        (b'{"url": "https://a.example/", "url": "https://b.example/"}',
         "application/json", 422, "validation_failed"),
        (b'{"url": "https://orders.example/"}', "text/plain", 415,
         "unsupported_media_type"),
        (b"", "application/json", 400, "malformed_json"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_one_json_object_is_refused(
    client: FlaskClient,
    service: PocketService,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    before = everything(client, service)
    answer = client.post(
        "/admin/webhooks", data=data, content_type=content_type, headers=ADMIN
    )
    refused(answer, status, code)
    assert everything(client, service) == before


@pytest.mark.parametrize(
    "body",
    [
        {"from_position": 0},
        {"from_position": -1},
        {"from_position": "x"},
        {"from_position": "3"},
        {"from_position": 1.5},
        {"from_position": 1e3},
        {"from_position": None},
        {"from_position": True},
        {"from_position": 10**20},
        {},
        {"from_position": 1, "until": 5},
    ],
)
def test_a_bad_replay_is_refused_naming_the_field_and_changes_nothing(
    client: FlaskClient, service: PocketService, body: dict[str, Any]
) -> None:
    made = subscribed(client)
    before = everything(client, service)
    answer = client.post(
        f"/admin/webhooks/{made['id']}/replay", json=body, headers=ADMIN
    )
    error = refused(answer, 422, "validation_failed")
    wrong = set(body) - {"from_position"} or {"from_position"}
    assert set(error["fields"]) == wrong
    assert everything(client, service) == before


ROUTES = [
    ("get", "/admin/webhooks/{id}", None),
    ("delete", "/admin/webhooks/{id}", None),
    ("get", "/admin/webhooks/{id}/deliveries", None),
    ("post", "/admin/webhooks/{id}/replay", {"from_position": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_an_unknown_webhook_is_404_and_changes_nothing(
    client: FlaskClient,
    service: PocketService,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    subscribed(client)
    before = everything(client, service)
    unknown = str(uuid4())
    answer = client.open(
        path.format(id=unknown), method=method, json=body, headers=ADMIN
    )
    error = refused(answer, 404, "webhook_not_found")
    assert unknown in error["message"]
    assert everything(client, service) == before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("webhook_id", ["nope", "1", "0" * 33, "%00"])
def test_an_id_that_is_not_a_uuid_is_nothing_at_all(
    client: FlaskClient,
    service: PocketService,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    webhook_id: str,
) -> None:
    subscribed(client)
    before = everything(client, service)
    answer = client.open(
        path.format(id=webhook_id), method=method, json=body, headers=ADMIN
    )
    refused(answer, 404, "not_found")
    assert everything(client, service) == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("status=", "status"),
        ("status=PARKED", "status"),
        ("status=pending&status=parked", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=x", "limit"),
        ("before=1", "before"),
        ("bogus=1", "bogus"),
    ],
)
def test_a_bad_query_of_the_deliveries_is_422(
    client: FlaskClient, query: str, field: str
) -> None:
    made = subscribed(client)
    path = f"/admin/webhooks/{made['id']}/deliveries?{query}"
    error = refused(client.get(path, headers=ADMIN), 422, "validation_failed")
    assert set(error["fields"]) == {field}


@pytest.mark.parametrize("path", ["/admin/webhooks", "/admin/webhooks/{id}"])
def test_the_other_routes_take_no_query_parameters(
    client: FlaskClient, path: str
) -> None:
    made = subscribed(client)
    answer = client.get(path.format(id=made["id"]) + "?status=parked", headers=ADMIN)
    error = refused(answer, 422, "validation_failed")
    assert set(error["fields"]) == {"status"}


ALL_ROUTES = [
    ("post", "/admin/webhooks", {"url": RECEIVER}),
    ("get", "/admin/webhooks", None),
    *ROUTES,
]


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
@pytest.mark.parametrize("authorization", [None, "Bearer nonsense", "Basic YTpi"])
def test_without_the_admin_token_it_is_401_and_changes_nothing(
    client: FlaskClient,
    service: PocketService,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    authorization: str | None,
) -> None:
    made = subscribed(client)
    before = everything(client, service)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = client.open(
        path.format(id=made["id"]), method=method, json=body, headers=headers
    )
    refused(answer, 401, "unauthorized")
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert everything(client, service) == before


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
def test_a_user_s_token_finds_nothing_there_and_changes_nothing(
    client: FlaskClient,
    service: PocketService,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    made = subscribed(client)
    ann = sign_up(client)
    before = everything(client, service)
    answer = client.open(
        path.format(id=made["id"]), method=method, json=body, headers=ann.auth
    )
    refused(answer, 404, "not_found")
    assert everything(client, service) == before


def test_a_method_the_routes_do_not_take_is_405(client: FlaskClient) -> None:
    made = subscribed(client)
    for method, path in [
        ("put", "/admin/webhooks"),
        ("patch", f"/admin/webhooks/{made['id']}"),
        ("get", f"/admin/webhooks/{made['id']}/replay"),
    ]:
        answer = client.open(path, method=method, json={}, headers=ADMIN)
        assert error_code(answer) == "method_not_allowed", (method, path)
        assert answer.status_code == 405


def test_replays_asked_for_at_once_are_each_accepted_and_one_is_under_way(
    app: Flask, service: PocketService
) -> None:
    """Two operators (or one double click) asking at the same moment: each is
    a 202, the last one asked for stands; none is a 500."""
    client = app.test_client()
    made = subscribed(client)
    sign_up(client, money="5")
    queue(service)
    path = f"/admin/webhooks/{made['id']}/replay"
    start = threading.Barrier(6)

    def ask(from_position: int) -> list[int]:
        caller = app.test_client()
        start.wait()
        return [
            caller.post(
                path, json={"from_position": from_position}, headers=ADMIN
            ).status_code
            for _ in range(10)
        ]

    with ThreadPoolExecutor(6) as pool:
        answers = [s for got in pool.map(ask, [1, 2] * 3) for s in got]
    assert answers == [202] * 60
    webhook = client.get(f"/admin/webhooks/{made['id']}", headers=ADMIN).get_json()
    assert webhook["webhook"]["replay"] in (
        {"after": 0, "until": head(service)},
        {"after": 1, "until": head(service)},
    )
    assert replays(service) == 1
