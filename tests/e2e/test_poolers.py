"""Pocket behind PgBouncer, end to end: every command refuses, in one line naming
the fix, a pooler that hands server processes to other clients (transaction or
statement mode, or session mode without a reset between clients), touching
nothing; in session mode everything works: sign-ups, money, a follower and a
standby that takes over when the active one is killed, `pocket status`, `pocket
verify`, and a write whose reply is lost, applied exactly once.

Each test has a throwaway PostgreSQL server behind a throwaway PgBouncer
(tests.pgbouncer). The lost replies are lost between Pocket and PgBouncer (a
tests.proxy.Proxy there): that is the link whose loss leaves the pooler to decide
what becomes of the server process, which is what a settle behind a pooler must
get right; a link lost between PgBouncer and PostgreSQL reaches Pocket as the
pooler closing its connection, as without a pooler.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pocket.config import Settings
from tests.conftest import StartPgBouncer
from tests.e2e.processes import (
    Api,
    PocketProcess,
    follow,
    leads,
    records,
    replay,
    run_pocket,
    serve,
    wait_for,
)
from tests.pgbouncer import PoolMode
from tests.pgserver import PostgresServer
from tests.proxy import Proxy
from tools.scratch import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
COMMANDS = ["serve", "follow", "migrate", "status", "verify"]


def new_database(server: PostgresServer) -> str:
    """A new database on the server; its name."""
    return server.create_database(f"pocket_{uuid.uuid4().hex[:8]}").rsplit("/", 1)[1]


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("mode", ["transaction", "statement"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_pooler_per_transaction_in_one_line(
    tmp_path: Path,
    pooled_postgres: PostgresServer,
    pgbouncer: StartPgBouncer,
    command: str,
    mode: PoolMode,
) -> None:
    bouncer = pgbouncer(mode)
    dbname = new_database(pooled_postgres)
    env = {"POCKET_DATABASE_URL": bouncer.url_for(dbname)}
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    started = time.monotonic()
    result = run_pocket(tmp_path, env, *args, timeout=30)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result.stderr)
    assert line.startswith(f"pocket {command}: PostgreSQL database 127.0.0.1:")
    assert f"connection pooler in {mode} mode (PgBouncer pool_mode={mode}" in line
    assert "use pool_mode=session or connect to PostgreSQL directly" in line
    assert time.monotonic() - started < 20
    assert tables(pooled_postgres.url_for(dbname)) == []


def test_serve_refuses_a_pooler_per_transaction_ending_no_one_elses_work(
    tmp_path: Path, pooled_postgres: PostgresServer, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("transaction")
    url = bouncer.url_for(new_database(pooled_postgres))
    with psycopg.connect(url, autocommit=True) as other:
        other.execute("BEGIN")
        row = other.execute("SELECT pg_backend_pid()").fetchone()
        result = run_pocket(
            tmp_path,
            {"POCKET_DATABASE_URL": url},
            *("serve", "--port", str(free_port())),
            timeout=30,
        )
        assert result.returncode == 2
        assert "pool_mode=transaction" in one_line_error(result.stderr)
        assert other.execute("SELECT pg_backend_pid()").fetchone() == row
        other.execute("COMMIT")


@pytest.mark.parametrize("command", ["serve", "status"])
def test_a_pooler_that_keeps_sessions_between_clients_is_refused(
    tmp_path: Path,
    pooled_postgres: PostgresServer,
    pgbouncer: StartPgBouncer,
    command: str,
) -> None:
    bouncer = pgbouncer("session", server_reset_query="")
    env = {"POCKET_DATABASE_URL": bouncer.url_for(new_database(pooled_postgres))}
    args = [command, "--port", str(free_port())] if command == "serve" else [command]
    result = run_pocket(tmp_path, env, *args, timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"pocket {command}: ")
    assert "session advisory locks still held" in line
    assert "server_reset_query = DISCARD ALL" in line


def test_a_pooler_with_no_server_process_to_spare_is_waited_for_like_a_database_down(
    tmp_path: Path, pooled_postgres: PostgresServer, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("session", default_pool_size="1")
    env = {"POCKET_DATABASE_URL": bouncer.url_for(new_database(pooled_postgres))}
    result = run_pocket(tmp_path, env, "status", timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert "left a second connection without an answer for 5s" in line
    server = PocketProcess(["serve", "--port", str(free_port())], tmp_path, env, "s")
    try:
        wait_for(
            lambda: server.output.count("without an answer") >= 2,
            timeout=30,
            what="two attempts, each saying why",
        )
        assert server.process.poll() is None  # still waiting
    finally:
        server.close()


class TableLock:
    """Another session holding the events table's lock, so that an insert sent
    meanwhile waits (and could commit after Pocket looked for it)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url)
        self.conn.execute("LOCK TABLE pocket_events IN EXCLUSIVE MODE")

    def release_after(self, seconds: float) -> None:
        threading.Timer(seconds, self.conn.commit).start()

    def close(self) -> None:
        self.conn.close()


def recorded(url: str, marker: str) -> int:
    """How many events carry marker."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pocket_events WHERE position(%s in state) > 0",
            [marker.encode()],
        ).fetchone()
    assert row is not None
    return int(row[0])


def sign_up(api: Api, name: str) -> tuple[Api, int]:
    status, body = api.post("/users", {"name": name})
    assert status == 201, body
    return api.as_user(body["token"]), int(body["user"]["id"])


def balance(user: Api, user_id: int) -> Decimal:
    status, body = user.get(f"/users/{user_id}")
    assert status == 200, body
    return Decimal(body["wallet"]["balance"])


def follower_info(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    answer = run_pocket(tmp_path, env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    info: dict[str, Any] = json.loads(answer.stdout)["projections"][0]["follower"]
    return info


def caught_up(settings: Settings) -> bool:
    return records(settings) == replay(settings)


def test_session_mode_serves_follows_and_settles_lost_replies(
    tmp_path: Path, pooled_postgres: PostgresServer, pgbouncer: StartPgBouncer
) -> None:
    bouncer = pgbouncer("session", default_pool_size="60")
    dbname = new_database(pooled_postgres)
    direct = pooled_postgres.url_for(dbname)
    settings = Settings.from_url(direct)  # To look, not through the pooler.
    pooled = {"POCKET_DATABASE_URL": bouncer.url_for(dbname)}
    proxy = Proxy("127.0.0.1", bouncer.port)
    processes: list[PocketProcess] = []
    try:
        # The follower first, so that the one in `pocket serve` stands by.
        follower = follow(tmp_path, pooled)
        processes.append(follower)
        wait_for(partial(leads, follower), what="the follower to lead")
        server, api = serve(
            tmp_path,
            {"POCKET_DATABASE_URL": proxy.url(dbname), "POCKET_SIGNUP_RATE": "off"},
        )
        processes.append(server)
        wait_for(lambda: "Standing by" in server.output, what="a standby")

        users = [sign_up(api, f"User {n}") for n in range(20)]
        for user, user_id in users:
            status, _ = user.post(
                f"/users/{user_id}/add_money", {"amount": "100", "source": "t"}
            )
            assert status == 200
        (payer, payer_id), (_, payee_id) = users[0], users[1]
        status, body = payer.post(
            f"/users/{payer_id}/transfers",
            {"to_user_id": payee_id, "amount": "30", "description": "t"},
        )
        assert status in (200, 201), body
        wait_for(partial(caught_up, settings), what="the projection to catch up")

        info = follower_info(tmp_path, pooled)
        assert (info["running"], info["pid"]) == (True, follower.process.pid)
        assert [s["pid"] for s in info["standbys"]] == [server.process.pid]
        verified = run_pocket(tmp_path, pooled, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr

        # Replies lost between Pocket and the pooler: the statement still
        # waiting for the table's lock, then one that has committed.
        for held in (True, False):
            marker = f"cut-{uuid.uuid4().hex}"
            before = balance(payer, payer_id)
            lock = TableLock(direct) if held else None
            try:
                trap = proxy.arm(marker)
                if lock is not None:
                    lock.release_after(0.5)
                status, body = payer.post(
                    f"/users/{payer_id}/add_money",
                    {"amount": "1.25", "source": marker},
                )
            finally:
                if lock is not None:
                    lock.close()
            assert trap.sprung.is_set(), "the link was never cut"
            assert status == 200, body
            assert recorded(direct, marker) == 1
            assert balance(payer, payer_id) == before + Decimal("1.25")

        # The active follower dies: the pooler resets its server process, its
        # lock goes, and the standby in `pocket serve` takes over.
        follower.kill()
        wait_for(lambda: "Active" in server.output, timeout=20, what="the takeover")
        status, _ = payer.post(
            f"/users/{payer_id}/draw_money", {"amount": "1", "destination": "t"}
        )
        assert status == 200
        wait_for(partial(caught_up, settings), what="the new follower to catch up")
        info = follower_info(tmp_path, pooled)
        assert (info["running"], info["pid"]) == (True, server.process.pid)
        verified = run_pocket(tmp_path, pooled, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "Traceback" not in server.output
    finally:
        for process in processes:
            process.close()
        proxy.close()
