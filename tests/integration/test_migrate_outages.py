"""pocket migrate through database outages, on a throwaway PostgreSQL server: its
connections cut, the server restarted or turned read-only mid-build. The
rebuild goes on from its own position and applies every event exactly once; a
lock taken by another migration meanwhile stops it; an outage longer than it
waits stops it with a message that says running it again resumes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from pocket.application import Pocket
from pocket.bootstrap import named_lock, open_catalog, open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.migration import MigrationInterrupted, MigrationRefused, migrate
from pocket.operations import verify
from pocket.walletrecords import LATEST_VERSION
from tests.e2e.processes import wait_for
from tests.integration.test_operations import quiet, readers_see
from tests.integration.test_read_only import read_only
from tests.pgserver import PostgresServer
from tests.replay import replayed_records

# Small batches: the build of a few thousand events lasts a few seconds.
BATCH_SIZE = 5


@pytest.fixture
def pocket(throwaway_postgres: PostgresServer) -> Iterator[Pocket]:
    """Pocket on the throwaway server, 6,020 events in its log."""
    url = throwaway_postgres.create_database("pocket")
    app = open_pocket(Settings.from_url(url))
    open_catalog(app)
    wallets = [Wallet.open(str(n), uuid4(), Cause()) for n in range(20)]
    for wallet in wallets:
        for _ in range(300):
            wallet.add_money(Decimal("0.10"), "API", Cause())
    app.save(*wallets)
    yield app
    app.close()


class Migration(threading.Thread):
    """migrate(pocket, target=1) in a thread, its outcome kept."""

    def __init__(self, pocket: Pocket, patience: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.pocket, self.patience = pocket, patience
        self.result: int | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.result = migrate(
                self.pocket,
                target=1,
                batch_size=BATCH_SIZE,
                out=quiet,
                patience=self.patience,
            )
        except Exception as error:
            self.error = error

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        assert not self.is_alive(), "migrate did not finish"


def v1_position(server: PostgresServer) -> int:
    """How far the rebuild of v1 has come (0 before it began, or if unknown)."""
    rows = run(
        server,
        "SELECT notification_id FROM wallet_records_v1_tracking "
        "WHERE application_name = 'Pocket'",
    )
    return int(rows[0][0]) if rows else 0


def run(server: PostgresServer, statement: str) -> list[tuple[Any, ...]]:
    """A statement on Pocket's database, in a connection of its own."""
    with psycopg.connect(server.url_for("pocket"), autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def started(pocket: Pocket, server: PostgresServer, **kwargs: float) -> Migration:
    """A migration, once it has built its first batches."""
    migration = Migration(pocket, **kwargs)
    migration.start()

    def building() -> bool:
        try:
            return v1_position(server) > 100
        except psycopg.Error:  # No such table yet.
            return migration.error is not None

    wait_for(building, timeout=60, what="the rebuild to begin")
    return migration


def cut(server: PostgresServer, which: str = "true") -> None:
    """Ends the backends of Pocket's database that match a condition."""
    run(
        server,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
        f"datname = 'pocket' AND pid <> pg_backend_pid() AND ({which})",
    )


def exactly_once(pocket: Pocket) -> None:
    """v1 is live and every balance is what the events say, once."""
    assert open_catalog(pocket).live_version() == 1
    assert verify(pocket, out=quiet) == 0
    assert readers_see(pocket) == replayed_records(pocket, 1)


def test_a_rebuild_whose_connections_are_cut_finishes_exactly_once(
    pocket: Pocket, throwaway_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    migration = started(pocket, throwaway_postgres)
    cut(throwaway_postgres)  # The builder's, the lock's, the log reader's.
    migration.finish()
    assert migration.error is None, migration.error
    assert migration.result == 1
    exactly_once(pocket)
    assert "Lost the migrate lock" in caplog.text
    assert "Holding the migrate lock again" in caplog.text


def test_a_rebuild_rides_out_a_restart_of_the_server(
    pocket: Pocket, throwaway_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    migration = started(pocket, throwaway_postgres)
    throwaway_postgres.stop("fast")
    # Longer than a connection is waited for (3 s): the recorders' own retry
    # cannot hide it.
    time.sleep(4)
    throwaway_postgres.start()
    migration.finish()
    assert migration.error is None, migration.error
    exactly_once(pocket)
    warnings = [r for r in caplog.records if r.name == "pocket.outages"]
    outages = [r for r in warnings if r.levelno == logging.WARNING]
    assert outages, caplog.text
    # One line each, no traceback.
    assert all("\n" not in r.getMessage() and not r.exc_info for r in outages)
    assert "lost the link to the database" in outages[0].getMessage()
    assert any("going on after" in r.getMessage() for r in warnings)


def test_a_rebuild_waits_while_the_server_is_read_only(
    pocket: Pocket, throwaway_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    migration = started(pocket, throwaway_postgres)
    read_only(throwaway_postgres, on=True)
    try:
        wait_for(
            lambda: "refused a write as read-only" in caplog.text,
            what="a read-only refusal",
        )
        at = v1_position(throwaway_postgres)
        time.sleep(1)
        assert v1_position(throwaway_postgres) == at  # nothing built meanwhile
    finally:
        read_only(throwaway_postgres, on=False)
    migration.finish()
    assert migration.error is None, migration.error
    exactly_once(pocket)


def test_a_rebuild_whose_lock_another_migration_took_meanwhile_stops(
    pocket: Pocket, throwaway_postgres: PostgresServer
) -> None:
    migration = started(pocket, throwaway_postgres)
    other = named_lock(pocket, "migrate-wallet_records")
    # The builder waits on its position while its lock's session is cut and
    # the lock taken by another: it cannot take the lock again first.
    with psycopg.connect(throwaway_postgres.url_for("pocket")) as blocker:
        blocker.execute("LOCK TABLE wallet_records_v1_tracking IN EXCLUSIVE MODE")
        wait_for(
            lambda: bool(
                run(
                    throwaway_postgres,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = 'pocket' "
                    "AND wait_event_type = 'Lock'",
                )
            ),
            what="the builder to wait",
        )
        cut(throwaway_postgres, "application_name LIKE 'pocket migrate-%'")
        wait_for(other.try_acquire, what="the other migration to take the lock")
    try:
        migration.finish()
        assert isinstance(migration.error, MigrationRefused), migration.error
        assert "Another pocket migrate is running" in str(migration.error)
        assert open_catalog(pocket).live_version() == LATEST_VERSION
    finally:
        other.release()


def test_an_outage_longer_than_migrate_waits_stops_it_and_a_rerun_resumes(
    pocket: Pocket, throwaway_postgres: PostgresServer
) -> None:
    migration = started(pocket, throwaway_postgres, patience=2.0)
    throwaway_postgres.stop("fast")
    try:
        migration.finish()
    finally:
        throwaway_postgres.start()
    assert isinstance(migration.error, MigrationInterrupted), migration.error
    message = str(migration.error)
    assert "\n" not in message
    assert "the database failed for 2s on end" in message
    assert message.endswith("run pocket migrate again to resume")
    messages: list[str] = []
    assert migrate(pocket, target=1, out=messages.append) == 1
    assert messages[0].startswith("Resuming wallet_records v1 from position")
    exactly_once(pocket)
