"""What a new user trying Pocket from the README met: replays that say so, messages
that name the wallet or user, the admin's list with closed wallets, dates with an
unencoded "+", the API's docs in a browser."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket import __version__
from pocket.service import PocketService
from pocket.system import projector_of
from tests.web.test_ledger_api import ADMIN, Caller, sign_up


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("draw_money", {"amount": "1", "destination": "shop"}),
        ("add_money", {"amount": "1", "source": "salary"}),
        ("transfers", {"to_user_id": 0, "amount": "1"}),
    ],
)
def test_a_replayed_answer_says_so_in_a_header(
    client: FlaskClient, path: str, body: dict[str, object]
) -> None:
    ann, bob = sign_up(client, money="10"), sign_up(client, "Bob")
    if path == "transfers":
        body = {**body, "to_user_id": bob.id}
    headers = {**ann.auth, "Idempotency-Key": f"{path}-1"}
    first = client.post(f"/users/{ann.id}/{path}", json=body, headers=headers)
    again = client.post(f"/users/{ann.id}/{path}", json=body, headers=headers)
    assert first.status_code == again.status_code < 300
    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_closing_twice_with_one_key_is_a_replay(client: FlaskClient) -> None:
    ann = sign_up(client)
    headers = {**ann.auth, "Idempotency-Key": "bye"}
    first = client.post(f"/users/{ann.id}/close", headers=headers)
    again = client.post(f"/users/{ann.id}/close", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["Idempotency-Replayed"] == "true"


def error(answer: TestResponse) -> dict[str, Any]:
    found: dict[str, Any] = answer.get_json()["error"]
    return found


def test_a_closed_receiving_wallet_is_named(client: FlaskClient) -> None:
    ann, bob = sign_up(client, money="10"), sign_up(client, "Bob")
    assert client.post(f"/users/{bob.id}/close", headers=bob.auth).status_code == 200
    answer = client.post(
        f"/users/{ann.id}/transfers",
        json={"to_user_id": bob.id, "amount": "1"},
        headers=ann.auth,
    )
    assert answer.status_code == 409
    assert error(answer)["message"] == (
        f"The receiving wallet, user {bob.id}'s, is closed: "
        "no money goes in or out of it."
    )


def test_a_closed_wallet_of_ones_own_is_named(client: FlaskClient) -> None:
    ann = sign_up(client)
    client.post(f"/users/{ann.id}/close", headers=ann.auth)
    answer = client.post(
        f"/users/{ann.id}/add_money", json={"amount": "1", "source": "x"}, headers=ADMIN
    )
    assert error(answer)["message"] == (
        f"The wallet, user {ann.id}'s, is closed: no money goes in or out of it."
    )


def test_a_missing_user_is_named(client: FlaskClient) -> None:
    answer = client.get("/users/424242", headers=ADMIN)
    assert answer.status_code == 404
    assert error(answer)["message"] == "There is no user 424242."
    ann = sign_up(client, money="5")
    answer = client.post(
        f"/users/{ann.id}/transfers",
        json={"to_user_id": 424242, "amount": "1"},
        headers=ann.auth,
    )
    assert error(answer)["fields"] == {
        "to_user_id": "There is no user 424242 to send money to."
    }


def test_only_the_admin_lists_users_anyone_else_finds_nothing_there(
    client: FlaskClient,
) -> None:
    ann = sign_up(client)
    assert client.get("/users").status_code == 401  # no token: who are you?
    answer = client.get("/users", headers=ann.auth)
    assert (answer.status_code, error(answer)["code"]) == (404, "not_found")
    assert client.get("/users", headers=ADMIN).status_code == 200


def test_the_admins_list_shows_closed_wallets(
    client: FlaskClient, service: PocketService
) -> None:
    ann, bob = sign_up(client), sign_up(client, "Bob", money="3")
    client.post(f"/users/{ann.id}/close", headers=ann.auth)
    with closing(projector_of(service.pocket, service.catalog.live_version())) as p:
        p.catch_up("Pocket")
    users = client.get("/users", headers=ADMIN).get_json()["users"]
    closed = {u["user"]["id"]: u["wallet"]["closed"] for u in users}
    assert closed == {ann.id: True, bob.id: False}


def wallet_at(client: FlaskClient, caller: Caller, at: str) -> tuple[int, Any]:
    answer = client.get(f"/users/{caller.id}/wallet?at={at}", headers=caller.auth)
    return answer.status_code, answer.get_json()


def test_a_moment_with_an_offset_is_taken_encoded_or_not(client: FlaskClient) -> None:
    ann = sign_up(client, money="5")
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    encoded = now.isoformat().replace("+", "%2B")
    unencoded = now.isoformat()  # "+00:00" arrives as " 00:00"
    assert wallet_at(client, ann, encoded) == wallet_at(client, ann, unencoded)
    status, body = wallet_at(client, ann, unencoded)
    assert status == 200
    assert body["wallet"]["balance"] == "5.00"


def test_the_api_docs_are_served_for_people_from_here(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js">' in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    bundle = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.get_data()) > 1_000_000
    licence = client.get("/static/vendor/swagger-ui/LICENSE")
    assert "Apache License" in licence.get_data(as_text=True)


def test_the_documents_version_is_the_packages(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["info"]["version"] == __version__ != "0+unknown"
