"""The money-grade API: tokens, idempotency keys, transfers, closing, history."""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.idempotency import Idempotency
from pocket.service import PocketService
from pocket.system import projector_of
from pocket.web import create_app

ADMIN_TOKEN = "operator-secret-0123456789"


@dataclass(frozen=True)
class Caller:
    id: int
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def sign_up(client: FlaskClient, name: str = "Ann", money: str = "0") -> Caller:
    created = client.post("/users", json={"name": name})
    assert created.status_code == 201
    body = created.get_json()
    caller = Caller(body["user"]["id"], body["token"])
    if money != "0":
        added = client.post(
            f"/users/{caller.id}/add_money",
            json={"amount": money, "source": "seed"},
            headers=caller.auth,
        )
        assert added.status_code == 200
    return caller


def error_code(response: TestResponse) -> str:
    code: str = response.get_json()["error"]["code"]
    return code


def head(service: PocketService) -> int:
    return service.pocket.recorder.max_notification_id() or 0


# Who may touch a wallet


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/users/{id}"),
        ("get", "/users/{id}/transactions"),
        ("get", "/users/{id}/wallet"),
        ("post", "/users/{id}/add_money"),
        ("post", "/users/{id}/draw_money"),
        ("post", "/users/{id}/transfers"),
        ("post", "/users/{id}/close"),
        ("post", "/users/{id}/token"),
        ("get", "/users"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer nonsense", "Bearer ", "Basic dXNlcjpwYXNz", "pkt_abc", "Bearer  "],
)
def test_no_token_or_a_bad_token_is_401_and_changes_nothing(
    client: FlaskClient,
    service: PocketService,
    method: str,
    path: str,
    authorization: str | None,
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = getattr(client, method)(
        path.format(id=ann.id), json={"amount": 1, "source": "x"}, headers=headers
    )
    assert answer.status_code == 401
    assert error_code(answer) == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert head(service) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/users/{id}"),
        ("get", "/users/{id}/transactions"),
        ("get", "/users/{id}/wallet"),
        ("post", "/users/{id}/add_money"),
        ("post", "/users/{id}/draw_money"),
        ("post", "/users/{id}/close"),
        ("post", "/users/{id}/token"),
    ],
)
def test_another_users_wallet_is_404_as_if_it_did_not_exist(
    client: FlaskClient, service: PocketService, method: str, path: str
) -> None:
    ann, bob = sign_up(client, "Ann", "5"), sign_up(client, "Bob", "5")
    before = head(service)
    answer = getattr(client, method)(
        path.format(id=bob.id), json={"amount": 1, "source": "x"}, headers=ann.auth
    )
    nobody = getattr(client, method)(
        path.format(id=999), json={"amount": 1, "source": "x"}, headers=ann.auth
    )
    assert answer.status_code == nobody.status_code == 404
    # The same answer, but for the id each names (which the caller sent).
    assert answer.get_data(as_text=True).replace(str(bob.id), "999") == (
        nobody.get_data(as_text=True)
    )
    assert head(service) == before


def test_a_token_opens_its_own_wallet(client: FlaskClient) -> None:
    ann = sign_up(client, money="5")
    answer = client.get(f"/users/{ann.id}", headers=ann.auth)
    assert answer.status_code == 200
    assert answer.get_json()["wallet"]["balance"] == "5.00"


def test_the_admin_token_opens_every_wallet_and_is_recorded(
    client: FlaskClient,
) -> None:
    ann = sign_up(client)
    added = client.post(
        f"/users/{ann.id}/add_money", json={"amount": 3, "source": "ops"}, headers=ADMIN
    )
    assert added.status_code == 200
    history = client.get(f"/users/{ann.id}/transactions", headers=ann.auth)
    assert history.get_json()["transactions"][0]["actor"] == "admin"


def test_users_act_as_themselves_in_the_record(client: FlaskClient) -> None:
    ann = sign_up(client, money="5")
    entry = client.get(f"/users/{ann.id}/transactions", headers=ann.auth).get_json()
    assert entry["transactions"][0]["actor"] == f"user:{ann.id}"


def test_only_the_admin_lists_users(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="5")
    sign_up(client, "Bob")
    assert client.get("/users", headers=ann.auth).status_code == 404
    assert client.get("/users").status_code == 401
    listing = client.get("/users?limit=1", headers=ADMIN)
    assert listing.status_code == 200
    body = listing.get_json()
    assert [entry["user"]["name"] for entry in body["users"]] == ["Ann"]
    rest = client.get(f"/users?limit=1&after={body['next']}", headers=ADMIN).get_json()
    assert [entry["user"]["name"] for entry in rest["users"]] == ["Bob"]
    assert rest["next"] is None


def test_the_user_list_shows_the_projections_balances(
    client: FlaskClient, service: PocketService
) -> None:
    sign_up(client, money="5")
    unprojected = client.get("/users", headers=ADMIN).get_json()
    assert unprojected["users"][0]["wallet"] is None
    live = service.catalog.live_version()
    with closing(projector_of(service.pocket, live)) as projector:
        projector.catch_up("Pocket")
    projected = client.get("/users", headers=ADMIN).get_json()
    assert projected["users"][0]["wallet"]["balance"] == "5.00"


def test_a_user_id_is_the_same_json_integer_wherever_it_appears(
    client: FlaskClient, service: PocketService
) -> None:
    ann, bob = sign_up(client, "Ann", "9"), sign_up(client, "Bob")
    sent = client.post(
        f"/users/{ann.id}/transfers",
        json={"to_user_id": bob.id, "amount": "4"},
        headers=ann.auth,
    ).get_json()
    assert (sent["user"]["id"], sent["wallet"]["user_id"]) == (ann.id, ann.id)
    assert (sent["transfer"]["from_user_id"], sent["transfer"]["to_user_id"]) == (
        ann.id,
        bob.id,
    )
    got = client.get(f"/users/{bob.id}", headers=bob.auth).get_json()
    assert got["wallet"]["user_id"] == bob.id
    then = client.get(f"/users/{bob.id}/wallet?version=1", headers=bob.auth)
    assert then.get_json()["wallet"]["user_id"] == bob.id
    history = client.get(f"/users/{bob.id}/transactions", headers=bob.auth)
    (received,) = history.get_json()["transactions"]
    assert received["counterparty"]["user_id"] == ann.id
    live = service.catalog.live_version()
    with closing(projector_of(service.pocket, live)) as projector:
        projector.catch_up("Pocket")
    listed = client.get("/users", headers=ADMIN).get_json()["users"]
    assert [(e["user"]["id"], e["wallet"]["user_id"]) for e in listed] == [
        (ann.id, ann.id),
        (bob.id, bob.id),
    ]


def test_closed_sign_up_needs_the_admin(sql_settings: Settings) -> None:
    settings = replace(sql_settings, admin_token=ADMIN_TOKEN, open_signup=False)
    closed = bootstrap(settings)
    try:
        client = create_app(closed).test_client()
        assert client.post("/users", json={"name": "x"}).status_code == 401
        made = client.post("/users", json={"name": "x"}, headers=ADMIN)
        assert made.status_code == 201
        user = Caller(made.get_json()["user"]["id"], made.get_json()["token"])
        other = client.post("/users", json={"name": "y"}, headers=user.auth)
        assert other.status_code == 404
    finally:
        closed.close()


def test_a_bad_token_on_open_sign_up_is_401(client: FlaskClient) -> None:
    answer = client.post(
        "/users", json={"name": "x"}, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401


def test_a_rotated_token_replaces_the_old_one(client: FlaskClient) -> None:
    ann = sign_up(client)
    rotated = client.post(f"/users/{ann.id}/token", headers=ann.auth)
    assert rotated.status_code == 200
    new = Caller(ann.id, rotated.get_json()["token"])
    assert client.get(f"/users/{ann.id}", headers=ann.auth).status_code == 401
    assert client.get(f"/users/{ann.id}", headers=new.auth).status_code == 200


@pytest.mark.parametrize(
    "field", ["balance", "id", "user_id", "aggregate_id", "created_at"]
)
def test_fields_the_server_decides_are_refused(
    client: FlaskClient, service: PocketService, field: str
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    answer = client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": 1, "source": "x", field: 1},
        headers=ann.auth,
    )
    assert answer.status_code == 422
    assert field in answer.get_json()["error"]["fields"]
    assert head(service) == before


# Retries that never pay twice


def test_a_retried_request_returns_the_first_answer_and_moves_money_once(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    headers = {**ann.auth, "Idempotency-Key": "order-17"}
    body = {"amount": "20", "destination": "shop"}
    first = client.post(f"/users/{ann.id}/draw_money", json=body, headers=headers)
    written = head(service)
    again = [
        client.post(f"/users/{ann.id}/draw_money", json=body, headers=headers)
        for _ in range(3)
    ]
    assert first.status_code == 200
    assert all(a.status_code == 200 for a in again)
    assert all(a.get_json() == first.get_json() for a in again)
    assert head(service) == written
    balance = client.get(f"/users/{ann.id}", headers=ann.auth).get_json()
    assert balance["wallet"]["balance"] == "30.00"


def test_the_same_key_with_another_body_is_422(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    headers = {**ann.auth, "Idempotency-Key": "k"}
    client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "20", "destination": "shop"},
        headers=headers,
    )
    written = head(service)
    other = client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "21", "destination": "shop"},
        headers=headers,
    )
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert "Idempotency-Key" in other.get_json()["error"]["fields"]
    assert head(service) == written


def test_keys_are_scoped_to_the_caller(client: FlaskClient) -> None:
    ann, bob = sign_up(client, "Ann", "50"), sign_up(client, "Bob", "50")
    for caller in (ann, bob):
        answer = client.post(
            f"/users/{caller.id}/draw_money",
            json={"amount": "1", "destination": "x"},
            headers={**caller.auth, "Idempotency-Key": "shared"},
        )
        assert answer.status_code == 200
        assert answer.get_json()["wallet"]["balance"] == "49.00"


def test_a_key_still_in_flight_is_409(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    before = head(service)
    # Hold the key as a request in progress would.
    with service.pocket.work.keyed.claim(Idempotency(f"user:{ann.id}:busy", "")):
        answer = client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": "1", "source": "x"},
            headers={**ann.auth, "Idempotency-Key": "busy"},
        )
    assert answer.status_code == 409
    assert error_code(answer) == "idempotency_key_in_flight"
    assert head(service) == before


def as_wsgi(text: str) -> str:
    """A header value as a WSGI server hands it on: its UTF-8 bytes, each read
    as one Latin-1 character."""
    return text.encode().decode("latin-1")


UNUSABLE = [
    "",
    "x" * 256,
    "tab\there",
    "with space",
    "one, two",  # the header sent twice
    as_wsgi("é" * 10),
    as_wsgi("€" * 10),
    as_wsgi("é" * 200),
]


@pytest.mark.parametrize("key", UNUSABLE)
def test_unusable_keys_are_422_and_change_nothing(
    client: FlaskClient, service: PocketService, key: str
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    answer = client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": "1", "source": "x"},
        headers={**ann.auth, "Idempotency-Key": key},
    )
    assert answer.status_code == 422
    problem = answer.get_json()["error"]["fields"]["Idempotency-Key"]
    assert problem == (
        "Must be 1 to 255 visible ASCII characters (letters, digits, punctuation; "
        "no spaces)."
    )
    assert head(service) == before


@pytest.mark.parametrize("key", ["k", "~" * 255, "order-17/retry:2", "Zz9!#$%&*+.^_`|"])
def test_keys_of_visible_ascii_up_to_255_are_taken(
    client: FlaskClient, key: str
) -> None:
    ann = sign_up(client, money="5")
    answer = client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": "1", "source": "x"},
        headers={**ann.auth, "Idempotency-Key": key},
    )
    assert answer.status_code == 200, answer.get_json()


@pytest.mark.parametrize("request_id", [*UNUSABLE[:-1], "x" * 129])
def test_unusable_request_ids_are_422_and_change_nothing(
    client: FlaskClient, service: PocketService, request_id: str
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    answer = client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": "1", "source": "x"},
        headers={**ann.auth, "X-Request-Id": request_id},
    )
    assert answer.status_code == 422
    assert "X-Request-Id" in answer.get_json()["error"]["fields"]
    assert len(answer.headers["X-Request-Id"]) == 32  # a new one, not theirs
    assert head(service) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"amount": 1, "source": "x", "amount": 1000}', "amount"),
        (b'{"amount": 1000, "amount": 1, "source": "x"}', "amount"),
        (b'{"amount": 1, "source": "x", "source": "y"}', "source"),
        (b'{"amount": 1, "source": "x", "note": {"a": 1, "a": 2}}', "a"),
    ],
)
def test_a_body_that_names_a_key_twice_is_422_and_changes_nothing(
    client: FlaskClient, service: PocketService, body: bytes, field: str
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    answer = client.post(
        f"/users/{ann.id}/add_money",
        data=body,
        headers={**ann.auth, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.get_json()["error"]["fields"] == {
        field: "Given more than once: say it once, so that it means one thing."
    }
    assert head(service) == before


def test_a_query_parameter_given_twice_is_422(client: FlaskClient) -> None:
    ann = sign_up(client, money="5")
    answer = client.get(
        f"/users/{ann.id}/transactions?limit=1&limit=500", headers=ann.auth
    )
    assert answer.status_code == 422
    assert "limit" in answer.get_json()["error"]["fields"]


# Transfers


def transfer(
    client: FlaskClient, sender: Caller, body: dict[str, Any], key: str | None = None
) -> TestResponse:
    headers = {**sender.auth, **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/users/{sender.id}/transfers", json=body, headers=headers)


def test_a_transfer_shows_in_both_histories(client: FlaskClient) -> None:
    ann, bob = sign_up(client, "Ann", "30"), sign_up(client, "Bob")
    sent = transfer(
        client, ann, {"to_user_id": bob.id, "amount": "12.50", "description": "rent"}
    )
    assert sent.status_code == 201
    body = sent.get_json()
    assert body["wallet"]["balance"] == "17.50"
    assert body["transfer"]["to_user_id"] == bob.id
    assert "receiver" not in body  # the sender never sees the other balance
    out = client.get(f"/users/{ann.id}/transactions", headers=ann.auth).get_json()
    into = client.get(f"/users/{bob.id}/transactions", headers=bob.auth).get_json()
    assert out["transactions"][-1]["type"] == "OUT"
    assert into["transactions"][-1]["type"] == "IN"
    assert out["transactions"][-1]["counterparty"]["user_id"] == bob.id
    assert into["transactions"][-1]["counterparty"]["user_id"] == ann.id
    transfer_id = body["transfer"]["id"]
    assert out["transactions"][-1]["transfer_id"] == transfer_id
    assert into["transactions"][-1]["transfer_id"] == transfer_id
    assert into["balance"] == "12.50"


def test_a_retried_transfer_moves_money_once(
    client: FlaskClient, service: PocketService
) -> None:
    ann, bob = sign_up(client, "Ann", "30"), sign_up(client, "Bob")
    body = {"to_user_id": bob.id, "amount": "10"}
    first = transfer(client, ann, body, key="t-1")
    written = head(service)
    again = transfer(client, ann, body, key="t-1")
    assert again.get_json() == first.get_json()
    assert again.status_code == 201
    assert head(service) == written


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"to_user_id": 999, "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": "2", "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": 0, "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": -2, "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": 2.5, "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": 1, "amount": "1"}, 422, "validation_failed"),
        ({"to_user_id": 2, "amount": "30.01"}, 409, "insufficient_funds"),
        ({"to_user_id": 2, "amount": "0"}, 422, "validation_failed"),
        ({"to_user_id": 2}, 422, "validation_failed"),
        ({"to_user_id": 2, "amount": "1", "description": ""}, 422, "validation_failed"),
        (
            {"to_user_id": 2, "amount": "1", "description": "rent\u202e09.99"},
            422,
            "validation_failed",
        ),
        ({"to_user_id": 2, "amount": "1", "from_user_id": 3}, 422, "validation_failed"),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(
    client: FlaskClient,
    service: PocketService,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    ann, bob = sign_up(client, "Ann", "30"), sign_up(client, "Bob")
    assert (ann.id, bob.id) == (1, 2)
    before = head(service)
    answer = transfer(client, ann, body)
    assert answer.status_code == status, answer.get_json()
    assert error_code(answer) == code
    assert head(service) == before


# Closing


def test_only_an_empty_wallet_closes_and_then_refuses_money(
    client: FlaskClient, service: PocketService
) -> None:
    ann, bob = sign_up(client, "Ann", "1"), sign_up(client, "Bob", "5")
    refused = client.post(f"/users/{ann.id}/close", headers=ann.auth)
    assert (refused.status_code, error_code(refused)) == (409, "wallet_not_empty")
    client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "1", "destination": "out"},
        headers=ann.auth,
    )
    closed = client.post(f"/users/{ann.id}/close", headers=ann.auth)
    assert closed.status_code == 200
    assert closed.get_json()["wallet"]["closed"] is True
    before = head(service)
    for answer in (
        client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": 1, "source": "x"},
            headers=ann.auth,
        ),
        client.post(
            f"/users/{ann.id}/draw_money",
            json={"amount": 1, "destination": "x"},
            headers=ann.auth,
        ),
        transfer(client, bob, {"to_user_id": ann.id, "amount": "1"}),
        client.post(f"/users/{ann.id}/close", headers=ann.auth),
    ):
        assert (answer.status_code, error_code(answer)) == (409, "wallet_closed")
    assert head(service) == before
    history = client.get(f"/users/{ann.id}/transactions", headers=ann.auth).get_json()
    assert [t["type"] for t in history["transactions"]] == ["IN", "OUT"]


def test_close_takes_no_fields(client: FlaskClient) -> None:
    ann = sign_up(client)
    answer = client.post(
        f"/users/{ann.id}/close", json={"force": True}, headers=ann.auth
    )
    assert answer.status_code == 422
    assert (
        client.post(f"/users/{ann.id}/close", json={}, headers=ann.auth).status_code
        == 200
    )


# Audit and history


def test_the_request_id_is_returned_and_recorded(client: FlaskClient) -> None:
    ann = sign_up(client)
    answer = client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": "2", "source": "x"},
        headers={**ann.auth, "X-Request-Id": "trace-abc-123"},
    )
    assert answer.headers["X-Request-Id"] == "trace-abc-123"
    generated = client.get(f"/users/{ann.id}/transactions", headers=ann.auth)
    assert len(generated.headers["X-Request-Id"]) == 32
    (entry,) = generated.get_json()["transactions"]
    assert entry["correlation_id"] == "trace-abc-123"


def test_errors_carry_a_request_id_too(client: FlaskClient) -> None:
    assert client.get("/users/1").headers["X-Request-Id"]
    assert client.get("/nowhere").headers["X-Request-Id"]


def test_history_pages_follow_the_cursor(client: FlaskClient) -> None:
    ann = sign_up(client)
    for n in range(1, 6):
        client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": n, "source": "x"},
            headers=ann.auth,
        )
    seen: list[str] = []
    url = f"/users/{ann.id}/transactions?limit=2"
    pages = 0
    while url:
        page = client.get(url, headers=ann.auth).get_json()
        seen += [t["balance"] for t in page["transactions"]]
        pages += 1
        url = (
            f"/users/{ann.id}/transactions?limit=2&after={page['next']}"
            if page["next"]
            else ""
        )
    assert seen == ["1.00", "3.00", "6.00", "10.00", "15.00"]
    assert pages == 3


def walk(client: FlaskClient, caller: Caller, query: str) -> list[list[int]]:
    """The ids of each page of a user's transactions, following the cursors."""
    pages: list[list[int]] = []
    url = f"/users/{caller.id}/transactions?{query}"
    while url:
        answer = client.get(url, headers=caller.auth)
        assert answer.status_code == 200, answer.get_json()
        page = answer.get_json()
        pages.append([t["id"] for t in page["transactions"]])
        after = page["next"]
        url = f"/users/{caller.id}/transactions?{query}&after={after}" if after else ""
    return pages


def test_history_newest_first_pages_back_through_the_same_entries(
    client: FlaskClient,
) -> None:
    ann = sign_up(client, money="30")
    for n in range(1, 23):
        action, field = (
            ("draw_money", "destination") if n % 3 else ("add_money", "source")
        )
        client.post(
            f"/users/{ann.id}/{action}",
            json={"amount": "1", field: "x"},
            headers=ann.auth,
        )
    oldest = walk(client, ann, "limit=10")
    newest = walk(client, ann, "limit=10&order=newest")
    assert [len(page) for page in newest] == [10, 10, 3]
    everything = [i for page in oldest for i in page]
    assert [i for page in newest for i in page] == everything[::-1]
    assert walk(client, ann, "limit=10&order=oldest") == oldest  # the default


def test_a_newest_first_cursor_still_points_at_the_same_page_after_new_entries(
    client: FlaskClient,
) -> None:
    ann = sign_up(client)
    for _ in range(5):
        client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": "1", "source": "x"},
            headers=ann.auth,
        )
    url = f"/users/{ann.id}/transactions?limit=2&order=newest"
    first = client.get(url, headers=ann.auth).get_json()
    assert [t["balance"] for t in first["transactions"]] == ["5.00", "4.00"]
    client.post(
        f"/users/{ann.id}/add_money",
        json={"amount": "1", "source": "x"},
        headers=ann.auth,
    )
    second = client.get(f"{url}&after={first['next']}", headers=ann.auth).get_json()
    assert [t["balance"] for t in second["transactions"]] == ["3.00", "2.00"]
    assert second["balance"] == "6.00"  # the balance now, beside the older page


def test_a_cursor_is_for_the_order_that_gave_it(client: FlaskClient) -> None:
    ann = sign_up(client)
    for _ in range(3):
        client.post(
            f"/users/{ann.id}/add_money",
            json={"amount": "1", "source": "x"},
            headers=ann.auth,
        )
    base = f"/users/{ann.id}/transactions?limit=1"
    oldest = client.get(base, headers=ann.auth).get_json()["next"]
    newest = client.get(f"{base}&order=newest", headers=ann.auth).get_json()["next"]
    for url in (f"{base}&order=newest&after={oldest}", f"{base}&after={newest}"):
        answer = client.get(url, headers=ann.auth)
        assert answer.status_code == 422
        assert set(answer.get_json()["error"]["fields"]) == {"after"}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=abc",
        "limit=",
        "after=nonsense",
        "after=dTEuMQ",  # a user-list cursor, not a transactions one
        "after=dDEuOTk5OTk5OTk5OTk5OTk5OTk5OQ",  # past the largest bigint
        "after=",
        "order=",
        "order=latest",
        "order=NEWEST",
        "order=newest&order=oldest",
    ],
)
def test_bad_paging_parameters_are_422(client: FlaskClient, query: str) -> None:
    ann = sign_up(client)
    answer = client.get(f"/users/{ann.id}/transactions?{query}", headers=ann.auth)
    assert answer.status_code == 422
    assert set(answer.get_json()["error"]["fields"]) <= {"limit", "after", "order"}


def test_the_wallet_as_of_a_version_and_a_moment(client: FlaskClient) -> None:
    ann = sign_up(client, money="5")
    first = client.get(f"/users/{ann.id}/wallet?version=1", headers=ann.auth)
    assert first.get_json()["wallet"]["balance"] == "0.00"
    now = client.get(f"/users/{ann.id}/wallet", headers=ann.auth).get_json()
    assert now["wallet"]["balance"] == "5.00"
    as_of = now["wallet"]["as_of"]
    at = client.get(
        f"/users/{ann.id}/wallet", query_string={"at": as_of}, headers=ann.auth
    )
    assert at.get_json()["wallet"]["version"] == 2
    early = client.get(
        f"/users/{ann.id}/wallet?at=2000-01-01T00:00:00Z", headers=ann.auth
    )
    assert (early.status_code, error_code(early)) == (404, "version_not_found")
    beyond = client.get(f"/users/{ann.id}/wallet?version=3", headers=ann.auth)
    assert (beyond.status_code, error_code(beyond)) == (404, "version_not_found")


@pytest.mark.parametrize(
    "query",
    ["version=0", "version=x", "version=1&at=2026-01-01", "at=yesterday", "when=1"],
)
def test_bad_as_of_parameters_are_422(client: FlaskClient, query: str) -> None:
    ann = sign_up(client)
    answer = client.get(f"/users/{ann.id}/wallet?{query}", headers=ann.auth)
    assert answer.status_code == 422
