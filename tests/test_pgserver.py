"""The throwaway PostgreSQL server the fault tests stop, kill and restart."""

from __future__ import annotations

import os
from datetime import datetime

import psycopg
import pytest

from tests.conftest import skip_or_fail
from tests.pgserver import PostgresServer, server_problem, throwaway_server


def started_at(url: str) -> datetime:
    with psycopg.connect(url, connect_timeout=3) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    started: datetime = row[0]
    return started


def refuses_connections(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.OperationalError:
        return True
    return False


def test_it_accepts_connections_and_creates_databases(
    throwaway_postgres: PostgresServer,
) -> None:
    url = throwaway_postgres.create_database("pocket_scratch")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_database(), current_setting('fsync')")
        assert row.fetchone() == ("pocket_scratch", "off")
    assert f"127.0.0.1:{throwaway_postgres.port}/" in url


def test_it_stops_and_starts_again_on_the_same_port(
    throwaway_postgres: PostgresServer,
) -> None:
    before = started_at(throwaway_postgres.url)
    throwaway_postgres.stop()
    assert refuses_connections(throwaway_postgres.url)
    throwaway_postgres.start()
    assert started_at(throwaway_postgres.url) > before
    throwaway_postgres.restart(mode="immediate")
    assert started_at(throwaway_postgres.url) > before


def test_kill_9_really_kills_it_and_it_recovers(
    throwaway_postgres: PostgresServer,
) -> None:
    pid = throwaway_postgres.postmaster_pid
    assert pid is not None
    with psycopg.connect(throwaway_postgres.url) as conn:
        conn.execute("CREATE TABLE kept (n int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    throwaway_postgres.kill()
    assert not throwaway_postgres.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not just quiet
    assert refuses_connections(throwaway_postgres.url)
    throwaway_postgres.start()
    with psycopg.connect(throwaway_postgres.url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchall() == [(1,)]


def fail_inside(started: list[PostgresServer]) -> None:
    with throwaway_server() as server:
        started.append(server)
        msg = "a test failing while its server runs"
        raise RuntimeError(msg)


def test_it_is_stopped_and_removed_even_when_the_test_fails() -> None:
    skip_or_fail(server_problem())
    started: list[PostgresServer] = []
    with pytest.raises(RuntimeError, match="a test failing"):
        fail_inside(started)
    (server,) = started
    assert not server.folder.exists()
    assert refuses_connections(server.url)
