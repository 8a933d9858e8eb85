"""A write that meets a server that no longer takes writes (a primary fenced read
only by a failover manager, before it is shut down) is answered 503, resend with
the same key, never 500; the pool then leaves that server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from flask.testing import FlaskClient
from psycopg import sql

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.service import PocketService
from pocket.web import create_app
from tests.e2e.processes import wait_for
from tests.pgserver import PostgresServer


def read_only(server: PostgresServer, on: bool) -> None:
    """New transactions on every session of the server are read-only, or not."""
    value = "on" if on else "off"
    server.query(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
    server.query("SELECT pg_reload_conf()")


def sessions_since(server: PostgresServer, moment: datetime) -> list[int]:
    """The backends of Pocket's database that began before a moment."""
    rows = server.query(
        sql.SQL(
            "SELECT pid FROM pg_stat_activity WHERE datname = 'pocket' "
            "AND backend_start < {}"
        ).format(sql.Literal(moment))
    )
    return [pid for (pid,) in rows]


@pytest.fixture
def service(throwaway_postgres: PostgresServer) -> Iterator[PocketService]:
    url = throwaway_postgres.create_database("pocket")
    pocket_service = bootstrap(Settings.from_url(url), follow=False)
    yield pocket_service
    pocket_service.close()


def test_a_write_refused_as_read_only_is_a_503_to_resend(
    throwaway_postgres: PostgresServer, service: PocketService
) -> None:
    client: FlaskClient = create_app(service).test_client()
    created = client.post("/users", json={"name": "Rosa"}).get_json()
    uid, token = created["user"]["id"], created["token"]
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    path, body = f"/users/{uid}/add_money", {"amount": "10", "source": "API"}
    headers = {"Idempotency-Key": "read-only-1"}
    ((before,),) = throwaway_postgres.query("SELECT now()")

    read_only(throwaway_postgres, on=True)
    refused = client.post(path, json=body, headers=headers)
    assert refused.status_code == 503, refused.get_json()
    assert "same Idempotency-Key" in refused.get_json()["error"]["message"]
    assert refused.headers["Retry-After"] == "1"
    # The pool let go of the connections it had: new ones look for the primary.
    wait_for(
        lambda: not sessions_since(throwaway_postgres, before),
        timeout=5,
        what="the pool's old connections to close",
    )

    read_only(throwaway_postgres, on=False)
    done = client.post(path, json=body, headers=headers)
    assert done.status_code == 200, done.get_json()
    again = client.post(path, json=body, headers=headers)
    assert again.get_json()["wallet"]["balance"] == "10.00"  # once
