"""GET /admin/status: what the operator console shows, from the same report as
`pocket status --json`, for the admin alone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.operations import last_verification, status, verify
from pocket.service import PocketService
from pocket.web import create_app
from tests.web.test_ledger_api import ADMIN


def without_clock(projections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report but for how long the oldest unapplied event has waited."""
    return [{k: v for k, v in p.items() if k != "lag_seconds"} for p in projections]


def test_the_admin_sees_what_pocket_status_reports(
    client: FlaskClient, service: PocketService
) -> None:
    created = client.post("/users", json={"name": "Ann"}, headers=ADMIN)
    user_id = created.get_json()["user"]["id"]
    client.post(
        f"/users/{user_id}/add_money", json={"amount": 5, "source": "x"}, headers=ADMIN
    )
    answer = client.get("/admin/status", headers=ADMIN)
    assert answer.status_code == 200
    body = answer.get_json()
    assert list(body) == [
        "database",
        "gate",
        "projections",
        "followers",
        "reads",
        "writes",
        "verify",
    ]
    # Without POCKET_READ_URL every read goes to the primary.
    assert body["reads"] is None
    # With no synchronous standby to wait for, writes are confirmed.
    assert body["writes"]["confirmed"] is True
    assert body["writes"]["why"] is None
    assert body["database"] == service.settings.description
    assert body["gate"] == {"open": True}
    report = status(service.pocket)["projections"]
    assert without_clock(body["projections"]) == without_clock(report)
    (projection,) = body["projections"]
    assert projection["head"] == service.pocket.recorder.max_notification_id()
    assert projection["lag_events"] == projection["head"] - projection["position"]
    assert projection["lag_seconds"] >= 0
    expiry, webhooks = body["followers"]
    assert expiry["name"] == "hold_expiry"
    assert expiry["head"] == projection["head"]
    assert (expiry["open_holds"], expiry["due_holds"]) == (0, 0)
    assert webhooks["name"] == "webhook_deliveries"
    assert webhooks["head"] == projection["head"]
    assert (webhooks["subscriptions"], webhooks["parked_deliveries"]) == (0, 0)
    assert body["verify"] is None


def test_the_last_verify_is_shown_with_its_time(
    client: FlaskClient, service: PocketService
) -> None:
    client.post("/users", json={"name": "Ann"}, headers=ADMIN)
    verify(service.pocket, out=lambda _: None)
    last = last_verification(service.pocket)
    assert last is not None
    shown = client.get("/admin/status", headers=ADMIN).get_json()["verify"]
    assert shown == last.as_json()
    assert set(shown) == {"at", "checked", "mismatches", "position", "version"}


def test_with_the_gate_closed_it_answers_503_as_every_endpoint_needing_the_database(
    client: FlaskClient, service: PocketService
) -> None:
    service.gate.down.set()
    try:
        answer = client.get("/admin/status", headers=ADMIN)
    finally:
        service.gate.down.clear()
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "service_unavailable"


def test_only_the_admin_may_see_it(client: FlaskClient) -> None:
    assert client.get("/admin/status").status_code == 401
    token = client.post("/users", json={"name": "Ann"}).get_json()["token"]
    answer = client.get("/admin/status", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 404
    assert answer.get_json()["error"]["code"] == "not_found"


@pytest.fixture
def client_without_admin(sql_settings: Settings) -> Iterator[FlaskClient]:
    """A server started without POCKET_ADMIN_TOKEN."""
    service = bootstrap(replace(sql_settings, admin_token=None))
    yield create_app(service).test_client()
    service.close()


NO_ADMIN_TOKEN = (
    "This server has no admin token: set POCKET_ADMIN_TOKEN and restart it."
)


@pytest.mark.parametrize("path", ["/admin/status", "/users"])
@pytest.mark.parametrize("header", ["Bearer operator-secret-0123456789", None])
def test_without_an_admin_token_the_admin_s_routes_say_so(
    client_without_admin: FlaskClient, path: str, header: str | None
) -> None:
    headers = {} if header is None else {"Authorization": header}
    answer = client_without_admin.get(path, headers=headers)
    assert answer.status_code == 401
    assert answer.get_json()["error"] == {
        "code": "unauthorized",
        "message": NO_ADMIN_TOKEN,
    }


def test_without_an_admin_token_a_user_s_routes_answer_as_before(
    client_without_admin: FlaskClient,
) -> None:
    answer = client_without_admin.get(
        "/users/1", headers={"Authorization": "Bearer operator-secret-0123456789"}
    )
    assert answer.status_code == 401
    assert answer.get_json()["error"]["message"] == "The bearer token is not valid."


def test_with_an_admin_token_a_wrong_one_is_only_not_valid(
    client: FlaskClient,
) -> None:
    answer = client.get(
        "/admin/status", headers={"Authorization": "Bearer not-the-admin-token"}
    )
    assert answer.status_code == 401
    assert answer.get_json()["error"]["message"] == "The bearer token is not valid."
