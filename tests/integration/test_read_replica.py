"""POCKET_READ_URL: the reads that may lag a little (the admin list of users,
the console, `pocket verify`) go to a standby while it keeps up, and to the
primary when it falls behind, loses its primary or dies; everything else reads
the primary. On a real primary and streaming standby (tests.pgserver)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.operations import last_verification, verify
from pocket.service import PocketService
from pocket.web import create_app
from tests.e2e.processes import wait_for
from tests.pgserver import ReplicatedPair, wait_until_replayed
from tests.web.test_ledger_api import ADMIN, ADMIN_TOKEN

MAX_LAG = 2.0

Start = Callable[[ReplicatedPair], tuple[PocketService, FlaskClient]]


@pytest.fixture
def start() -> Iterator[Start]:
    """Starts a service on the pair: writes on the primary, the reads that may
    lag on the standby (at most MAX_LAG seconds behind); closed afterwards."""
    made: list[PocketService] = []

    def started(pair: ReplicatedPair) -> tuple[PocketService, FlaskClient]:
        primary, standby = pair
        url = primary.create_database("pocket")
        settings = Settings.from_environ(
            {
                "POCKET_DATABASE_URL": url,
                "POCKET_READ_URL": standby.url_for("pocket"),
                "POCKET_READ_MAX_LAG_SECONDS": str(MAX_LAG),
                "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
            }
        )
        service = bootstrap(settings, follow=True)
        made.append(service)
        return service, create_app(service).test_client()

    yield started
    for service in made:
        service.close()


def with_ann(start: Start, pair: ReplicatedPair) -> tuple[PocketService, FlaskClient]:
    """A service on the pair with one user, Ann, whom the standby has: the admin
    list shows her."""
    service, client = start(pair)
    sign_up(client, "Ann")
    wait_until_replayed(*pair)
    assert listed(client) == ["Ann"]
    return service, client


def sign_up(client: FlaskClient, name: str) -> int:
    answer = client.post("/users", json={"name": name}, headers=ADMIN)
    assert answer.status_code == 201, answer.get_json()
    user_id: int = answer.get_json()["user"]["id"]
    return user_id


def listed(client: FlaskClient) -> list[str]:
    """The names on the admin list of users."""
    answer = client.get("/users", headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    return [entry["user"]["name"] for entry in answer.get_json()["users"]]


def reads(client: FlaskClient) -> dict[str, Any]:
    """Where /admin/status says the reads that may lag go."""
    answer = client.get("/admin/status", headers=ADMIN)
    assert answer.status_code == 200, answer.get_json()
    state: dict[str, Any] = answer.get_json()["reads"]
    return state


def test_the_admin_list_reads_the_standby_and_the_primary_once_it_lags(
    replicated_postgres: ReplicatedPair, start: Start
) -> None:
    standby = replicated_postgres.standby
    service, client = with_ann(start, replicated_postgres)
    state = reads(client)
    assert state["served_by"] == "read server", state
    assert (state["server"], state["standby"]) == (f"127.0.0.1:{standby.port}", True)
    assert state["lag_seconds"] <= MAX_LAG
    assert state["problem"] is None

    # The standby receives Bob but does not apply him: it lags. Within MAX_LAG
    # the list is the standby's, without Bob, while his own reads (the primary)
    # have him.
    standby.query("SELECT pg_wal_replay_pause()")
    bob = sign_up(client, "Bob")
    assert listed(client) == ["Ann"]
    assert client.get(f"/users/{bob}", headers=ADMIN).status_code == 200

    # Once it is more than MAX_LAG behind, the list is the primary's.
    wait_for(
        lambda: reads(client)["served_by"] == "primary",
        timeout=MAX_LAG + 10,
        what="the reads to leave the lagging standby",
    )
    assert listed(client) == ["Ann", "Bob"]
    state = reads(client)
    assert state["lag_seconds"] > MAX_LAG
    assert "s behind (POCKET_READ_MAX_LAG_SECONDS=2)" in state["problem"]

    # Caught up again, the standby serves again.
    standby.query("SELECT pg_wal_replay_resume()")
    wait_for(
        lambda: reads(client)["served_by"] == "read server",
        timeout=10,
        what="the reads to come back to the standby",
    )
    assert listed(client) == ["Ann", "Bob"]
    assert service.reads.state() == reads(client)


def test_a_dead_read_server_sends_the_reads_to_the_primary(
    async_replicated_postgres: ReplicatedPair, start: Start
) -> None:
    primary, standby = async_replicated_postgres
    _, client = with_ann(start, async_replicated_postgres)

    standby.stop("immediate")
    sign_up(client, "Bob")
    began = time.monotonic()
    assert listed(client) == ["Ann", "Bob"]
    # At most a connect timeout (2 s) for the first read that meets it...
    assert time.monotonic() - began < 6
    state = reads(client)
    assert state["served_by"] == "primary"
    assert state["problem"].startswith("the read server failed")
    # ...and none for the reads after it: the dead server is left alone.
    began = time.monotonic()
    for _ in range(5):
        assert listed(client) == ["Ann", "Bob"]
    assert time.monotonic() - began < 1.0

    standby.start()
    wait_until_replayed(primary, standby)
    wait_for(
        lambda: reads(client)["served_by"] == "read server",
        timeout=20,
        what="the reads to come back to the restarted standby",
    )
    assert listed(client) == ["Ann", "Bob"]


def test_verify_reads_the_standby_even_behind_and_records_on_the_primary(
    replicated_postgres: ReplicatedPair, start: Start
) -> None:
    primary, standby = replicated_postgres
    service, client = start(replicated_postgres)
    users = [sign_up(client, name) for name in ("Ann", "Bob")]
    for user in users:
        answer = client.post(
            f"/users/{user}/add_money",
            json={"amount": "12.34", "source": "seed"},
            headers=ADMIN,
        )
        assert answer.status_code == 200
    wait_for(lambda: service.runner.live_position() == max_position(service))
    wait_until_replayed(primary, standby)
    # Far behind, it still checks one consistent moment: the one it has.
    standby.query("SELECT pg_wal_replay_pause()")
    client.post(
        f"/users/{users[0]}/add_money",
        json={"amount": "1.00", "source": "later"},
        headers=ADMIN,
    )
    wait_for(lambda: service.runner.live_position() == max_position(service))
    lines: list[str] = []
    assert verify(service.pocket, lines.append, reads=service.reads) == 0
    assert lines[-1].endswith(
        f"on the standby at 127.0.0.1:{standby.port}: 0 mismatch(es)."
    ), lines
    recorded = last_verification(service.pocket)
    assert recorded is not None
    assert (recorded.checked, recorded.mismatches) == (2, 0)
    # The standby's moment, not the primary's.
    assert 0 < recorded.position < max_position(service)
    standby.query("SELECT pg_wal_replay_resume()")


def max_position(service: PocketService) -> int:
    return service.pocket.recorder.max_notification_id() or 0


def test_a_read_server_that_refuses_connections_is_named_with_postgres_reason(
    postgres_url: str,
) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": postgres_url,
            # Nothing listens on port 1.
            "POCKET_READ_URL": f"postgresql://postgres@127.0.0.1:1/{database}",
        }
    )
    service = bootstrap(settings)
    try:
        state = service.reads.state()
        assert state is not None
        assert state["served_by"] == "primary"
        assert state["problem"] == (
            'the read server failed (connection to server at "127.0.0.1", '
            "port 1 failed: Connection refused)"
        )
        # The reads are served all the same, by the primary.
        assert service.list_accounts(0, 10) == []
    finally:
        service.close()
