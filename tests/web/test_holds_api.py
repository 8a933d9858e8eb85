"""Holds and limits through the HTTP API: placing, listing, reading, capturing
(in part or whole, to a destination or to another user) and voiding a hold;
the admin's limits; every refusal a JSON 4xx that changes nothing."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pocket.domainmodel import Wallet
from pocket.service import PocketService
from tests.web.test_api import BAD_AMOUNTS
from tests.web.test_ledger_api import ADMIN, Caller, error_code, head, sign_up

HOLD_KEYS = {
    "id",
    "status",
    "amount",
    "expires_at",
    "destination",
    "counterparty",
    "description",
    "placed_on",
    "captured",
    "released",
    "ended_on",
    "transfer_id",
}


def place(
    client: FlaskClient, caller: Caller, key: str | None = None, **body: Any
) -> TestResponse:
    """Places a hold (for 30 minutes, to a shop, unless the body says otherwise)."""
    if "to_user_id" not in body:
        body.setdefault("destination", "shop")
    if "expires_at" not in body:
        body.setdefault("expires_in", 1800)
    headers = {**caller.auth, **({"Idempotency-Key": key} if key else {})}
    return client.post(f"/users/{caller.id}/holds", json=body, headers=headers)


def placed(client: FlaskClient, caller: Caller, **body: Any) -> str:
    """Places a hold that must be placed; returns its id."""
    answer = place(client, caller, **body)
    assert answer.status_code == 201, answer.get_json()
    hold_id: str = answer.get_json()["id"]
    return hold_id


def end(
    client: FlaskClient,
    caller: Caller,
    hold_id: str,
    how: str,
    body: dict[str, Any] | None = None,
    key: str | None = None,
) -> TestResponse:
    """Captures or voids a hold."""
    headers = {**caller.auth, **({"Idempotency-Key": key} if key else {})}
    return client.post(
        f"/users/{caller.id}/holds/{hold_id}/{how}", json=body, headers=headers
    )


def wallet(client: FlaskClient, caller: Caller) -> dict[str, Any]:
    shown: dict[str, Any] = client.get(
        f"/users/{caller.id}", headers=caller.auth
    ).get_json()["wallet"]
    return shown


def history(client: FlaskClient, caller: Caller) -> list[dict[str, Any]]:
    page = client.get(f"/users/{caller.id}/transactions", headers=caller.auth)
    entries: list[dict[str, Any]] = page.get_json()["transactions"]
    return entries


def spending(shown: dict[str, Any]) -> tuple[str, str, str]:
    """A wallet's balance, held and available."""
    return shown["balance"], shown["held"], shown["available"]


def set_limits(client: FlaskClient, caller: Caller, **limits: Any) -> TestResponse:
    return client.put(f"/admin/users/{caller.id}/limits", json=limits, headers=ADMIN)


# Placing, reading, ending


def test_a_hold_is_placed_listed_read_and_captured_in_part(
    client: FlaskClient,
) -> None:
    ann = sign_up(client, money="50")
    answer = place(client, ann, amount="30.00", destination="hotel", expires_in=600)
    assert answer.status_code == 201
    hold = answer.get_json()
    assert set(hold) == {*HOLD_KEYS, "wallet"}
    assert UUID(hold["id"])
    assert hold["status"] == "open"
    assert hold["amount"] == "30.00"
    assert hold["destination"] == "hotel"
    assert hold["counterparty"] is None
    expires = datetime.fromisoformat(hold["expires_at"])
    placed_on = datetime.fromisoformat(hold["placed_on"])
    assert timedelta(seconds=599) < expires - placed_on <= timedelta(seconds=601)
    assert [hold[k] for k in ("captured", "released", "ended_on")] == [None] * 3
    assert spending(hold["wallet"]) == ("50.00", "30.00", "20.00")
    assert spending(wallet(client, ann)) == ("50.00", "30.00", "20.00")

    listed = client.get(f"/users/{ann.id}/holds", headers=ann.auth)
    assert listed.status_code == 200
    without_wallet = {k: v for k, v in hold.items() if k != "wallet"}
    assert listed.get_json() == {"holds": [without_wallet]}
    one = client.get(f"/users/{ann.id}/holds/{hold['id']}", headers=ann.auth)
    assert one.status_code == 200
    assert one.get_json() == without_wallet

    captured = end(client, ann, hold["id"], "capture", {"amount": "12.50"})
    assert captured.status_code == 200
    ended = captured.get_json()
    assert ended["status"] == "captured"
    assert (ended["captured"], ended["released"]) == ("12.50", "17.50")
    assert ended["ended_on"] is not None
    assert ended["transfer_id"] is None
    assert spending(ended["wallet"]) == ("37.50", "0.00", "37.50")
    assert spending(wallet(client, ann)) == ("37.50", "0.00", "37.50")
    # Ended: no longer listed, still readable as it ended.
    assert client.get(f"/users/{ann.id}/holds", headers=ann.auth).get_json() == {
        "holds": []
    }
    read = client.get(f"/users/{ann.id}/holds/{hold['id']}", headers=ann.auth)
    assert read.get_json() == {k: v for k, v in ended.items() if k != "wallet"}
    entries = history(client, ann)
    assert [(e["type"], e["amount"], e["balance"]) for e in entries[-2:]] == [
        ("HOLD", "30.00", "50.00"),
        ("OUT", "12.50", "37.50"),
    ]
    placing, capture = entries[-2:]
    assert placing["hold_id"] == capture["hold_id"] == hold["id"]
    assert placing["expires_at"] == hold["expires_at"]
    assert placing["destination"] == capture["destination"] == "hotel"
    assert (capture["outcome"], capture["released"]) == ("captured", "17.50")


def test_a_capture_without_a_body_or_with_an_empty_one_takes_the_whole_hold(
    client: FlaskClient,
) -> None:
    ann = sign_up(client, money="50")
    first, second = placed(client, ann, amount="20"), placed(client, ann, amount="5")
    no_body = client.post(f"/users/{ann.id}/holds/{first}/capture", headers=ann.auth)
    assert no_body.status_code == 200, no_body.get_json()
    assert (no_body.get_json()["captured"], no_body.get_json()["released"]) == (
        "20.00",
        "0.00",
    )
    empty = end(client, ann, second, "capture", {})
    assert empty.status_code == 200
    assert spending(empty.get_json()["wallet"]) == ("25.00", "0.00", "25.00")


def test_a_void_releases_the_whole_hold(client: FlaskClient) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="40", description="deposit")
    voided = end(client, ann, hold_id, "void")
    assert voided.status_code == 200
    body = voided.get_json()
    assert (body["status"], body["captured"], body["released"]) == (
        "voided",
        None,
        "40.00",
    )
    assert body["description"] == "deposit"
    assert spending(body["wallet"]) == ("50.00", "0.00", "50.00")
    release = history(client, ann)[-1]
    assert (release["type"], release["outcome"], release["hold_id"]) == (
        "RELEASE",
        "voided",
        hold_id,
    )
    assert release["amount"] == "40.00"
    assert release["balance"] == "50.00"


def test_capturing_more_than_is_held_is_409_and_changes_nothing(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="10")
    before = head(service)
    answer = end(client, ann, hold_id, "capture", {"amount": "10.01"})
    assert answer.status_code == 409
    assert error_code(answer) == "capture_exceeds_hold"
    assert head(service) == before
    assert spending(wallet(client, ann)) == ("50.00", "10.00", "40.00")


@pytest.mark.parametrize("first", ["capture", "void"])
@pytest.mark.parametrize("second", ["capture", "void"])
def test_a_hold_ends_once_and_a_second_ending_hears_the_real_outcome(
    client: FlaskClient, service: PocketService, first: str, second: str
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="10")
    done = end(client, ann, hold_id, first)
    assert done.status_code == 200
    before = head(service)
    again = end(client, ann, hold_id, second)
    assert again.status_code == 409
    error = again.get_json()["error"]
    assert error["code"] == "hold_ended"
    outcome = "captured" if first == "capture" else "voided"
    assert outcome in error["message"]
    ended = {k: v for k, v in done.get_json().items() if k != "wallet"}
    assert error["hold"] == ended
    assert head(service) == before
    assert wallet(client, ann)["balance"] == (
        "40.00" if outcome == "captured" else "50.00"
    )


def test_an_expired_hold_cannot_be_captured_and_says_it_expired(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="10", expires_in=1)
    time.sleep(1.1)
    # Past its expiry it reserves nothing, recorded or not.
    assert spending(wallet(client, ann)) == ("50.00", "0.00", "50.00")
    assert client.get(f"/users/{ann.id}/holds", headers=ann.auth).get_json() == {
        "holds": []
    }
    shown = client.get(f"/users/{ann.id}/holds/{hold_id}", headers=ann.auth)
    assert shown.get_json()["status"] == "expired"
    before = head(service)
    for how in ("capture", "void"):
        answer = end(client, ann, hold_id, how)
        assert answer.status_code == 409
        assert error_code(answer) == "hold_ended"
        assert answer.get_json()["error"]["hold"]["status"] == "expired"
    # The first refusal records the expiry it found (so that an ending still
    # being written elsewhere conflicts with it): one event, its HoldExpired;
    # no money moved.
    assert head(service) == before + 1
    wallet_id = service.user(ann.id).wallet_id
    last = list(service.pocket.events.get(wallet_id, desc=True, limit=1))
    assert [type(e).__name__ for e in last] == ["HoldExpired"]
    assert spending(wallet(client, ann)) == ("50.00", "0.00", "50.00")


# A hold for another user


def test_a_hold_for_another_user_is_captured_as_a_transfer(
    client: FlaskClient,
) -> None:
    ann, bob = sign_up(client, "Ann", "50"), sign_up(client, "Bob", "5")
    answer = place(client, ann, amount="20", to_user_id=bob.id, description="rent")
    assert answer.status_code == 201, answer.get_json()
    hold = answer.get_json()
    bob_wallet = wallet(client, bob)
    assert hold["destination"] is None
    assert hold["counterparty"] == {
        "user_id": bob.id,
        "wallet_id": bob_wallet["aggregate_id"],
    }
    assert bob_wallet["balance"] == "5.00"  # Nothing moves until the capture.

    captured = end(client, ann, hold["id"], "capture", {"amount": "15"})
    assert captured.status_code == 200
    body = captured.get_json()
    # The owner's wallet, and the receiver's ids: never the receiver's balance.
    assert set(body) == {*HOLD_KEYS, "wallet"}
    assert "receiver" not in body
    assert spending(body["wallet"]) == ("35.00", "0.00", "35.00")
    transfer_id = body["transfer_id"]
    assert UUID(transfer_id)
    assert wallet(client, bob)["balance"] == "20.00"

    out = history(client, ann)[-1]
    into = history(client, bob)[-1]
    assert (out["type"], out["amount"], out["outcome"]) == ("OUT", "15.00", "captured")
    assert (into["type"], into["amount"]) == ("IN", "15.00")
    assert out["transfer_id"] == into["transfer_id"] == transfer_id
    assert out["counterparty"]["user_id"] == bob.id
    assert into["counterparty"]["user_id"] == ann.id
    assert out["description"] == into["description"] == "rent"
    assert history(client, ann)[-2]["counterparty"]["user_id"] == bob.id  # HOLD


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"to_user_id": 999}, "to_user_id"),
        ({"to_user_id": 1}, "to_user_id"),  # the owner
        ({"to_user_id": "2"}, "to_user_id"),
        ({"to_user_id": 2, "destination": "shop"}, "destination"),
    ],
)
def test_bad_receivers_are_422_and_change_nothing(
    client: FlaskClient, service: PocketService, body: dict[str, Any], field: str
) -> None:
    ann, bob = sign_up(client, "Ann", "50"), sign_up(client, "Bob")
    assert (ann.id, bob.id) == (1, 2)
    before = head(service)
    answer = place(client, ann, amount="1", **body)
    assert answer.status_code == 422, answer.get_json()
    assert error_code(answer) == "validation_failed"
    assert field in answer.get_json()["error"]["fields"]
    assert head(service) == before


# Retries


def test_a_retried_hold_is_placed_once_and_says_it_is_a_replay(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    first = place(client, ann, key="order-9", amount="20", expires_in=60)
    written = head(service)
    again = [place(client, ann, key="order-9", amount="20", expires_in=60)]
    again.append(place(client, ann, key="order-9", amount="20", expires_in=60))
    assert first.status_code == 201
    assert "Idempotency-Replayed" not in first.headers
    for answer in again:
        assert answer.status_code == 201
        assert answer.get_json() == first.get_json()
        assert answer.headers["Idempotency-Replayed"] == "true"
    assert head(service) == written
    assert wallet(client, ann)["held"] == "20.00"

    hold_id = first.get_json()["id"]
    captured = end(client, ann, hold_id, "capture", {"amount": "5"}, key="cap-1")
    captured_again = end(client, ann, hold_id, "capture", {"amount": "5"}, key="cap-1")
    assert captured_again.status_code == 200
    assert captured_again.get_json() == captured.get_json()
    assert captured_again.headers["Idempotency-Replayed"] == "true"
    assert wallet(client, ann)["balance"] == "45.00"


def test_a_key_reused_for_another_hold_is_422(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    assert place(client, ann, key="k", amount="20").status_code == 201
    written = head(service)
    other = place(client, ann, key="k", amount="21")
    assert other.status_code == 422
    assert error_code(other) == "idempotency_key_reused"
    assert "Idempotency-Key" in other.get_json()["error"]["fields"]
    assert head(service) == written


# What a wallet may spend


def test_holds_count_against_what_the_wallet_may_spend(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="5000")
    for _ in range(5):
        assert place(client, ann, amount="1000").status_code == 201
    before = head(service)
    sixth = place(client, ann, amount="1000")
    assert sixth.status_code == 409
    assert error_code(sixth) == "insufficient_funds"
    assert "5000.00 held" in sixth.get_json()["error"]["message"]
    drawn = client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "0.01", "destination": "x"},
        headers=ann.auth,
    )
    assert error_code(drawn) == "insufficient_funds"
    assert head(service) == before
    assert spending(wallet(client, ann)) == ("5000.00", "5000.00", "0.00")


def test_the_daily_limit_counts_open_holds(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="500")
    limited = set_limits(client, ann, daily_limit="100")
    assert limited.status_code == 200
    assert limited.get_json()["wallet"]["daily_limit"] == "100.00"
    assert place(client, ann, amount="60").status_code == 201
    before = head(service)
    drawn = client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "50", "destination": "x"},
        headers=ann.auth,
    )
    assert drawn.status_code == 409
    assert error_code(drawn) == "daily_limit_exceeded"
    assert error_code(place(client, ann, amount="40.01")) == "daily_limit_exceeded"
    assert head(service) == before
    assert place(client, ann, amount="40").status_code == 201
    # Lifted, the same draw goes through.
    assert set_limits(client, ann, daily_limit=None).status_code == 200
    assert wallet(client, ann)["daily_limit"] is None
    drawn = client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "50", "destination": "x"},
        headers=ann.auth,
    )
    assert drawn.status_code == 200


def test_a_credit_limit_lets_available_reach_minus_the_limit(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="10")
    limited = set_limits(client, ann, credit_limit=50)
    assert limited.status_code == 200
    assert spending(limited.get_json()["wallet"]) == ("10.00", "0.00", "60.00")
    assert limited.get_json()["wallet"]["credit_limit"] == "50.00"
    assert place(client, ann, amount="25").status_code == 201
    drawn = client.post(
        f"/users/{ann.id}/draw_money",
        json={"amount": "35", "destination": "x"},
        headers=ann.auth,
    )
    assert drawn.status_code == 200, drawn.get_json()
    assert spending(drawn.get_json()["wallet"]) == ("-25.00", "25.00", "0.00")
    before = head(service)
    assert error_code(place(client, ann, amount="0.01")) == "insufficient_funds"
    assert head(service) == before
    entries = client.get(f"/users/{ann.id}/transactions", headers=ann.auth)
    assert entries.get_json()["balance"] == "-25.00"


def test_closing_a_wallet_with_open_holds_is_refused(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="10")
    hold_id = placed(client, ann, amount="10")
    before = head(service)
    refused = client.post(f"/users/{ann.id}/close", headers=ann.auth)
    assert refused.status_code == 409
    assert error_code(refused) == "holds_open"
    assert head(service) == before
    assert end(client, ann, hold_id, "capture").status_code == 200
    closed = client.post(f"/users/{ann.id}/close", headers=ann.auth)
    assert closed.status_code == 200
    assert closed.get_json()["wallet"]["closed"] is True
    assert error_code(place(client, ann, amount="1")) == "wallet_closed"


# Threads


def test_concurrent_holds_never_take_available_below_zero(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="5000")
    app = client.application
    answers: list[TestResponse] = []
    start = threading.Barrier(24)

    def hold() -> None:
        own = app.test_client()
        start.wait()
        answers.append(place(own, ann, amount="300"))

    threads = [threading.Thread(target=hold) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * 16 + [409] * 8
    refused = {error_code(a) for a in answers if a.status_code == 409}
    assert refused == {"insufficient_funds"}
    assert spending(wallet(client, ann)) == ("5000.00", "4800.00", "200.00")
    listed = client.get(f"/users/{ann.id}/holds", headers=ann.auth).get_json()
    assert len(listed["holds"]) == 16


def race_to_end(app: Flask, caller: Caller, hold_id: str) -> dict[str, TestResponse]:
    """Four captures and four voids of one hold at once, by name."""
    answers: dict[str, TestResponse] = {}
    start = threading.Barrier(8)

    def end_it(name: str) -> None:
        own = app.test_client()
        start.wait()
        answers[name] = end(own, caller, hold_id, name.rstrip("0123456789"))

    names = [f"{how}{n}" for how in ("capture", "void") for n in range(4)]
    threads = [threading.Thread(target=end_it, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_captures_and_voids_racing_on_one_hold_end_it_once_and_the_rest_hear_how(
    client: FlaskClient,
) -> None:
    ann = sign_up(client, money="100")
    for _ in range(5):
        answers = race_to_end(client.application, ann, placed(client, ann, amount="10"))
        (winner,) = [name for name, a in answers.items() if a.status_code == 200]
        outcome = "captured" if winner.startswith("capture") else "voided"
        ended = {k: v for k, v in answers[winner].get_json().items() if k != "wallet"}
        for name, answer in answers.items():
            if name != winner:
                assert answer.status_code == 409
                error = answer.get_json()["error"]
                assert error["code"] == "hold_ended"
                assert error["hold"] == ended
                assert error["hold"]["status"] == outcome
    assert wallet(client, ann)["held"] == "0.00"


# Bad inputs


def test_bad_amounts_are_422_and_change_nothing(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="10")
    before = head(service)
    for amount in BAD_AMOUNTS:
        placing = place(client, ann, amount=amount)
        assert placing.status_code == 422, amount
        assert error_code(placing) == "validation_failed"
        assert set(placing.get_json()["error"]["fields"]) == {"amount"}
        capture = end(client, ann, hold_id, "capture", {"amount": amount})
        assert capture.status_code == 422, amount
        assert set(capture.get_json()["error"]["fields"]) == {"amount"}
    assert head(service) == before


SOON = datetime.now(UTC) + timedelta(hours=1)
BAD_EXPIRIES: list[dict[str, Any]] = [
    {"expires_in": 0},
    {"expires_in": -1},
    {"expires_in": 30 * 24 * 3600 + 1},
    {"expires_in": 10**30},
    {"expires_in": 1.5},
    {"expires_in": 60.0},
    {"expires_in": "60"},
    {"expires_in": 1e3},
    {"expires_in": True},
    {"expires_in": None},
    {"expires_at": "2001-01-01T00:00:00Z"},
    {"expires_at": (datetime.now(UTC) + timedelta(days=31)).isoformat()},
    {"expires_at": SOON.replace(tzinfo=None).isoformat()},  # no offset
    {"expires_at": SOON.date().isoformat()},
    {"expires_at": SOON.isoformat().replace("T", " ")},
    {"expires_at": SOON.isoformat().replace("+00:00", "z")},
    {"expires_at": "2026-02-30T10:00:00Z"},
    {"expires_at": "2026-12-03T10:00:00+25:00"},
    {"expires_at": "tomorrow"},
    {"expires_at": 1767225600},
    {"expires_at": "0001-01-01T00:00:00+01:00"},
    {"expires_at": "9999-12-31T23:59:59-01:00"},
    {"expires_at": SOON.isoformat(), "expires_in": 60},  # both
    {},  # neither
]


def test_bad_expiries_are_422_invalid_expiry_and_change_nothing(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="50")
    before = head(service)
    for body in BAD_EXPIRIES:
        answer = client.post(
            f"/users/{ann.id}/holds",
            json={"amount": "1", "destination": "shop", **body},
            headers=ann.auth,
        )
        assert answer.status_code == 422, body
        error = answer.get_json()["error"]
        assert error["code"] == "invalid_expiry", (body, error)
        fields = set(error["fields"])
        assert fields, body
        assert fields <= {"expires_in", "expires_at"}, (body, error)
    assert head(service) == before


def test_an_expiry_is_a_moment_whatever_its_offset(client: FlaskClient) -> None:
    ann = sign_up(client, money="50")
    moment = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    for written in (
        moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        moment.astimezone(timezone(timedelta(hours=1))).isoformat(),
        moment.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat(),
    ):
        answer = place(client, ann, amount="1", expires_at=written)
        assert answer.status_code == 201, answer.get_json()
        assert answer.get_json()["expires_at"] == moment.isoformat()


def test_a_body_with_several_kinds_of_problems_names_each(
    client: FlaskClient,
) -> None:
    ann = sign_up(client, money="50")
    answer = client.post(
        f"/users/{ann.id}/holds",
        json={"amount": "1.234", "expires_in": 1.5, "extra": 1},
        headers=ann.auth,
    )
    assert answer.status_code == 422
    error = answer.get_json()["error"]
    assert error["code"] == "validation_failed"
    assert set(error["fields"]) == {
        "amount",
        "expires_in",
        "extra",
        "destination",
        "to_user_id",
    }


def test_holds_of_nobody_or_of_another_user_are_404(
    client: FlaskClient, service: PocketService
) -> None:
    ann, bob = sign_up(client, "Ann", "50"), sign_up(client, "Bob", "50")
    bobs = placed(client, bob, amount="10")
    before = head(service)
    for hold_id in (bobs, str(uuid4())):
        # Through the caller's own wallet: it has no such hold.
        for answer in (
            client.get(f"/users/{ann.id}/holds/{hold_id}", headers=ann.auth),
            end(client, ann, hold_id, "capture"),
            end(client, ann, hold_id, "void"),
        ):
            assert answer.status_code == 404
            assert error_code(answer) == "hold_not_found"
        # Through the other user's: as if they did not exist.
        for answer in (
            client.get(f"/users/{bob.id}/holds/{hold_id}", headers=ann.auth),
            client.get(f"/users/{bob.id}/holds", headers=ann.auth),
            client.post(f"/users/{bob.id}/holds/{hold_id}/void", headers=ann.auth),
            client.post(
                f"/users/{bob.id}/holds",
                json={"amount": "1", "destination": "x", "expires_in": 60},
                headers=ann.auth,
            ),
        ):
            assert answer.status_code == 404
            assert error_code(answer) == "user_not_found"
    assert head(service) == before
    assert wallet(client, bob)["held"] == "10.00"


@pytest.mark.parametrize(
    "path",
    [
        "/users/{id}/holds/not-a-uuid",
        "/users/{id}/holds/123",
        "/users/{id}/holds/{hold}x",
        "/users/{id}/holds/{hold}/capture/",
        "/users/{id}/holds/%00/void",
        "/users/abc/holds",
    ],
)
def test_malformed_ids_are_404_json_and_change_nothing(
    client: FlaskClient, service: PocketService, path: str
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="1")
    before = head(service)
    url = path.format(id=ann.id, hold=hold_id)
    for method in ("get", "post"):
        answer = getattr(client, method)(url, headers=ann.auth)
        assert answer.status_code in (404, 405), url
        assert answer.mimetype == "application/json"
        assert error_code(answer) in ("not_found", "method_not_allowed")
    assert head(service) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/users/{id}/holds"),
        ("get", "/users/{id}/holds"),
        ("get", "/users/{id}/holds/{hold}"),
        ("post", "/users/{id}/holds/{hold}/capture"),
        ("post", "/users/{id}/holds/{hold}/void"),
        ("put", "/admin/users/{id}/limits"),
    ],
)
def test_no_token_is_401_and_changes_nothing(
    client: FlaskClient, service: PocketService, method: str, path: str
) -> None:
    ann = sign_up(client, money="50")
    hold_id = placed(client, ann, amount="1")
    before = head(service)
    answer = getattr(client, method)(
        path.format(id=ann.id, hold=hold_id), json={"credit_limit": 1}
    )
    assert answer.status_code == 401
    assert error_code(answer) == "unauthorized"
    assert head(service) == before


# The admin's limits


def test_limits_are_the_admins_and_recorded_as_theirs(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    as_user = client.put(
        f"/admin/users/{ann.id}/limits", json={"credit_limit": 10}, headers=ann.auth
    )
    assert as_user.status_code == 404
    assert error_code(as_user) == "not_found"
    assert head(service) == before
    answer = set_limits(client, ann, credit_limit="10.50", daily_limit=20)
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["user"]["id"] == ann.id
    assert body["wallet"]["credit_limit"] == "10.50"
    assert body["wallet"]["daily_limit"] == "20.00"
    assert body["wallet"]["available"] == "15.50"
    wallet_id = UUID(body["wallet"]["aggregate_id"])
    events = list(service.pocket.events.get(wallet_id))
    credit, daily = events[-2:]
    assert isinstance(credit, Wallet.CreditLimitSet)
    assert isinstance(daily, Wallet.DailyLimitSet)
    assert credit.credit_limit == Decimal("10.50")
    assert (credit.actor, daily.actor) == ("admin", "admin")
    # One left out stays as it is.
    again = set_limits(client, ann, credit_limit=0)
    assert again.get_json()["wallet"]["credit_limit"] == "0.00"
    assert again.get_json()["wallet"]["daily_limit"] == "20.00"


BAD_LIMITS: list[dict[str, Any]] = [
    {},
    {"credit_limit": None},
    {"credit_limit": -1},
    {"credit_limit": "-0.01"},
    {"credit_limit": "1.234"},
    {"credit_limit": 1.234},
    {"credit_limit": "1e3"},
    {"credit_limit": "NaN"},
    {"credit_limit": " 5"},
    {"credit_limit": True},
    {"credit_limit": "1000000000.01"},
    {"daily_limit": "abc"},
    {"daily_limit": []},
    {"daily_limit": "\u0663"},
    {"credit_limit": 5, "daily_limit": "-5"},
]


def test_bad_limits_are_422_invalid_limit_and_change_nothing(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="5")
    before = head(service)
    for body in BAD_LIMITS:
        answer = set_limits(client, ann, **body)
        assert answer.status_code == 422, body
        error = answer.get_json()["error"]
        assert error["code"] == "invalid_limit", (body, error)
        assert set(error["fields"]) <= {"credit_limit", "daily_limit", "alert_below"}
    unknown = set_limits(client, ann, credit_limit=1, balance=100)
    assert unknown.status_code == 422
    assert error_code(unknown) == "validation_failed"
    nobody = client.put(
        "/admin/users/999/limits", json={"credit_limit": 1}, headers=ADMIN
    )
    assert nobody.status_code == 404
    assert error_code(nobody) == "user_not_found"
    assert head(service) == before
    assert wallet(client, ann)["credit_limit"] == "0.00"
