"""Whether a connection keeps its server process, found out the way poolers
behave: a direct connection, a TCP proxy and PgBouncer in session mode pass;
PgBouncer per transaction (either way it reuses server processes) or per
statement, and one that hands server processes on without resetting them, do not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pocket import wsgi
from pocket.pooling import (
    MARKER_CLASS,
    PooledPerTransaction,
    ProbeTimedOut,
    SessionsNotReset,
    check_sessions,
)
from pocket.preflight import PoolerRefused
from tests.conftest import StartPgBouncer
from tests.pgserver import PostgresServer
from tests.proxy import Proxy

pytestmark = pytest.mark.postgres


def connector(url: str) -> Callable[[], psycopg.Connection[Any]]:
    return lambda: psycopg.connect(url, autocommit=True, connect_timeout=5)


def markers_held(server: PostgresServer) -> int:
    """Advisory locks of Pocket's marker class held on the server."""
    ((count,),) = server.query(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        f"AND classid = {MARKER_CLASS}"
    )
    return int(count)


def test_a_direct_connection_keeps_its_server_process(
    pooled_postgres: PostgresServer,
) -> None:
    check_sessions(connector(pooled_postgres.url))
    assert markers_held(pooled_postgres) == 0


def test_a_connection_through_a_tcp_proxy_keeps_its_server_process(
    pooled_postgres: PostgresServer,
) -> None:
    proxy = Proxy("127.0.0.1", pooled_postgres.port)
    try:
        check_sessions(connector(proxy.url("postgres")))
    finally:
        proxy.close()
    assert markers_held(pooled_postgres) == 0


@pytest.mark.parametrize("round_robin", ["0", "1"], ids=["lifo", "round robin"])
def test_pgbouncer_in_session_mode_keeps_server_processes(
    pgbouncer: StartPgBouncer, pooled_postgres: PostgresServer, round_robin: str
) -> None:
    bouncer = pgbouncer("session", server_round_robin=round_robin)
    for _ in range(3):  # Whatever the pool holds from the time before.
        check_sessions(connector(bouncer.url_for("postgres")))
    assert markers_held(pooled_postgres) == 0


@pytest.mark.parametrize(
    "settings",
    [{}, {"server_round_robin": "1"}, {"server_reset_query_always": "1"}],
    ids=["lifo", "round robin", "reset after each transaction"],
)
def test_pgbouncer_in_transaction_mode_is_found_every_time(
    pgbouncer: StartPgBouncer, settings: dict[str, str]
) -> None:
    bouncer = pgbouncer("transaction", **settings)
    for _ in range(5):
        with pytest.raises(PooledPerTransaction) as found:
            check_sessions(connector(bouncer.url_for("postgres")))
        assert found.value.mode == "transaction"
        assert "pool_mode=session or connect to PostgreSQL directly" in str(found.value)


def test_pgbouncer_in_statement_mode_is_found(pgbouncer: StartPgBouncer) -> None:
    bouncer = pgbouncer("statement")
    with pytest.raises(PooledPerTransaction) as found:
        check_sessions(connector(bouncer.url_for("postgres")))
    assert found.value.mode == "statement"


@pytest.mark.parametrize("reset", ["", "RESET ALL"], ids=["none", "RESET ALL"])
def test_a_pooler_that_keeps_locks_between_clients_is_found(
    pgbouncer: StartPgBouncer, reset: str
) -> None:
    bouncer = pgbouncer("session", server_reset_query=reset)
    with pytest.raises(SessionsNotReset, match="server_reset_query = DISCARD ALL"):
        check_sessions(connector(bouncer.url_for("postgres")), timeout=1)


def test_a_pooler_with_no_server_process_to_spare_times_out(
    pgbouncer: StartPgBouncer,
) -> None:
    bouncer = pgbouncer("session", default_pool_size="1")
    started = time.monotonic()
    with pytest.raises(ProbeTimedOut):
        check_sessions(connector(bouncer.url_for("postgres")), timeout=1)
    assert time.monotonic() - started < 5


def test_the_check_costs_a_few_round_trips(
    pgbouncer: StartPgBouncer, pooled_postgres: PostgresServer
) -> None:
    bouncer = pgbouncer("session")
    for url in (pooled_postgres.url, bouncer.url_for("postgres")):
        check_sessions(connector(url))  # Connections warm.
        started = time.monotonic()
        check_sessions(connector(url))
        # Milliseconds here; generous for a loaded machine.
        assert time.monotonic() - started < 1.0


def test_the_wsgi_factory_refuses_a_pooler_per_transaction(
    pgbouncer: StartPgBouncer,
    pooled_postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bouncer = pgbouncer("transaction")
    url = bouncer.url_for("postgres")
    monkeypatch.setenv("POCKET_DATABASE_URL", url)
    with pytest.raises(PoolerRefused, match="pool_mode=transaction"):
        wsgi.app()
