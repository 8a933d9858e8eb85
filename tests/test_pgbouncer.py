"""The throwaway PgBouncer the pooler tests put in front of a throwaway server."""

from __future__ import annotations

import psycopg
import pytest

from tests.pgbouncer import PoolMode, throwaway_pgbouncer
from tests.pgserver import PostgresServer


@pytest.mark.parametrize("mode", ["session", "transaction", "statement"])
def test_it_pools_in_the_mode_it_was_given_for_any_database(
    pooled_postgres: PostgresServer, mode: PoolMode
) -> None:
    url = pooled_postgres.create_database(f"scratch_{mode}")
    with throwaway_pgbouncer(pooled_postgres.port, mode) as bouncer:
        config = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}
        assert config["pool_mode"] == mode
        database = url.rsplit("/", 1)[1]
        with psycopg.connect(bouncer.url_for(database), autocommit=True) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
        assert row == (database,)
        (pool,) = [p for p in bouncer.show("POOLS") if p["database"] == database]
        assert pool["pool_mode"] == mode


def test_its_settings_override_the_defaults(pooled_postgres: PostgresServer) -> None:
    settings = {"server_reset_query": "", "default_pool_size": "3"}
    with throwaway_pgbouncer(pooled_postgres.port, "session", settings=settings) as b:
        config = {row["key"]: row["value"] for row in b.show("CONFIG")}
    assert config["server_reset_query"] == ""
    assert config["default_pool_size"] == "3"


def test_it_is_stopped_and_removed_afterwards(pooled_postgres: PostgresServer) -> None:
    with throwaway_pgbouncer(pooled_postgres.port, "session") as bouncer:
        assert bouncer.is_running
    assert not bouncer.is_running
    assert not bouncer.folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bouncer.url_for("postgres"), connect_timeout=2).close()


def test_it_is_stopped_and_removed_when_the_test_fails(
    pooled_postgres: PostgresServer,
) -> None:
    with (
        pytest.raises(RuntimeError, match="on purpose"),
        throwaway_pgbouncer(pooled_postgres.port, "session") as bouncer,
    ):
        raise RuntimeError("on purpose")
    assert not bouncer.is_running
    assert not bouncer.folder.exists()
