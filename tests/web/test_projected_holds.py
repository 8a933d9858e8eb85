"""The admin's list of users shows held and available where the live version of
wallet_records keeps them (v3 on), and leaves them out where it does not."""

from __future__ import annotations

from contextlib import closing
from typing import Any

from flask.testing import FlaskClient

from pocket.migration import migrate
from pocket.service import PocketService
from pocket.system import projector_of
from tests.holds import place
from tests.web.test_ledger_api import ADMIN, sign_up


def listed_wallet(client: FlaskClient, service: PocketService) -> dict[str, Any]:
    with closing(projector_of(service.pocket, service.catalog.live_version())) as p:
        p.catch_up("Pocket")
    (listed,) = client.get("/users", headers=ADMIN).get_json()["users"]
    wallet: dict[str, Any] = listed["wallet"]
    return wallet


def test_the_admins_list_shows_what_holds_reserve_and_what_is_available(
    client: FlaskClient, service: PocketService
) -> None:
    ann = sign_up(client, money="10")
    place(service.pocket, service.users.get(ann.id).wallet_id, "2.50", destination="x")
    wallet = listed_wallet(client, service)
    assert (wallet["balance"], wallet["held"], wallet["available"]) == (
        "10.00",
        "2.50",
        "7.50",
    )


def test_on_a_version_without_holds_the_list_shows_none(
    client: FlaskClient, service: PocketService
) -> None:
    sign_up(client, money="10")
    migrate(service.pocket, target=2, out=lambda _: None)
    wallet = listed_wallet(client, service)
    assert wallet["balance"] == "10.00"
    assert "held" not in wallet
    assert "available" not in wallet
