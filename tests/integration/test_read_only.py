"""A write that meets a server that no longer takes writes (a primary fenced read
only by a failover manager, before it is shut down) is answered 503, resend with
the same key, never 500; the pool then leaves that server. A follower there gives
its lock up and leaves it too, and applies again, exactly once, on a server that
takes writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal

import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg import sql

from pocket.bootstrap import bootstrap, follower_lock
from pocket.config import Settings
from pocket.runner import ACTIVE, STANDBY, ProjectorThread
from pocket.service import PocketService
from pocket.walletrecords import table_of
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


@contextmanager
def pocket_on(server: PostgresServer, *, follow: bool) -> Iterator[PocketService]:
    """The service on a new database of the server, its follower running in
    this process or not; closed afterwards."""
    url = server.create_database("pocket")
    pocket_service = bootstrap(Settings.from_url(url), follow=follow)
    try:
        yield pocket_service
    finally:
        pocket_service.close()


@pytest.fixture
def service(throwaway_postgres: PostgresServer) -> Iterator[PocketService]:
    with pocket_on(throwaway_postgres, follow=False) as pocket_service:
        yield pocket_service


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


@pytest.fixture
def following_service(throwaway_postgres: PostgresServer) -> Iterator[PocketService]:
    """The service with its follower running in this process."""
    with pocket_on(throwaway_postgres, follow=True) as pocket_service:
        yield pocket_service


def applied(service: PocketService) -> bool:
    """Whether the live projection has applied every notification of the log."""
    position = service.runner.live_position()
    return position == service.pocket.recorder.max_notification_id()


def test_a_follower_on_a_server_turned_read_only_gives_its_lock_up_and_leaves(
    throwaway_postgres: PostgresServer,
    following_service: PocketService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pocket.runner")
    service = following_service
    client: FlaskClient = create_app(service).test_client()
    created = client.post("/users", json={"name": "Rosa"}).get_json()
    uid, token = created["user"]["id"], created["token"]
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    path, body = f"/users/{uid}/add_money", {"amount": "10", "source": "API"}
    assert client.post(path, json=body).status_code == 200
    wait_for(lambda: applied(service), timeout=10, what="the follower")
    live = service.catalog.live_version()
    thread = service.runner.threads[table_of(live)]
    assert isinstance(thread, ProjectorThread)
    lock = follower_lock(service.pocket, live)
    assert thread.role == ACTIVE
    assert lock.holder() is not None

    # The follower is held back before its next batch (its read of its position
    # waits for the tracking table) while events it has not applied are written;
    # then the server turns read-only, and the batch it was about to write is
    # refused.
    with psycopg.connect(
        throwaway_postgres.url_for("pocket"), connect_timeout=5
    ) as blocker:
        blocker.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier(f"{table_of(live)}_tracking")
            )
        )
        assert client.post(path, json=body).status_code == 200
        assert client.post(path, json=body).status_code == 200
        ((fenced_at,),) = throwaway_postgres.query("SELECT now()")
        read_only(throwaway_postgres, on=True)
        wait_for(
            lambda: (
                throwaway_postgres.query("SHOW default_transaction_read_only")
                == [("on",)]
            ),
            timeout=5,
            what="the server to turn read-only",
        )
        blocker.rollback()

    refusal = "refused the batch as read-only"
    wait_for(lambda: refusal in caplog.text, timeout=10, what="the follower's warning")
    warnings = [r for r in caplog.records if refusal in r.getMessage()]
    assert [w.levelno for w in warnings[:1]] == [logging.WARNING]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    # It holds no lock on the read-only server, and takes none there: it waits.
    wait_for(lambda: thread.role == STANDBY, timeout=10, what="the follower to wait")
    assert not thread.lock.held
    assert lock.holder() is None
    assert "Waiting for a primary" in caplog.text
    # Its pools and its LISTEN connection let go of the sessions they had.
    wait_for(
        lambda: not sessions_since(throwaway_postgres, fenced_at),
        timeout=10,
        what="the follower's old connections to close",
    )
    assert not applied(service)
    time.sleep(1.5)  # a few rounds of waiting: no traceback, still no lock
    assert lock.holder() is None
    assert not [r for r in caplog.records if r.exc_info]

    # The server takes writes again: the follower takes its lock and applies
    # what it had not, exactly once.
    read_only(throwaway_postgres, on=False)
    wait_for(lambda: applied(service), timeout=15, what="the follower to apply")
    assert thread.role == ACTIVE
    assert lock.holder() is not None
    (record,) = service.catalog.records(live)
    assert record.balance == Decimal("30.00")
    assert client.get(f"/users/{uid}").get_json()["wallet"]["balance"] == "30.00"


def test_an_idle_follower_gives_its_lock_up_when_its_server_turns_read_only(
    throwaway_postgres: PostgresServer,
    following_service: PocketService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A fenced old primary gets no new events, so its follower never has a write
    # refused: its check of the lock is what tells it to leave.
    caplog.set_level(logging.INFO, logger="pocket.runner")
    service = following_service
    live = service.catalog.live_version()
    thread = service.runner.threads[table_of(live)]
    assert isinstance(thread, ProjectorThread)
    lock = follower_lock(service.pocket, live)
    wait_for(lambda: thread.role == ACTIVE, timeout=10, what="the follower")

    read_only(throwaway_postgres, on=True)
    wait_for(lambda: thread.role == STANDBY, timeout=10, what="the follower to wait")
    assert "Gave up the follower lock: the server takes no writes" in caplog.text
    assert lock.holder() is None
    assert not [r for r in caplog.records if r.exc_info]

    read_only(throwaway_postgres, on=False)
    wait_for(lambda: thread.role == ACTIVE, timeout=10, what="the follower again")
    assert lock.holder() is not None
