"""Operators see the real reason: PostgreSQL's own words, in one line, and
commands that only read never create a database or tables."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.processes import PocketProcess, run_pocket, serve, wait_for
from tests.pgserver import PostgresServer
from tools.scratch import free_port

pytestmark = pytest.mark.e2e
COMMANDS = ["serve", "follow", "migrate", "status", "verify"]


def on(postgres_url: str, **parts: str) -> str:
    """The scratch database's URL with a part replaced (dbname, user, port)."""
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    info.update(parts)
    user, host = info.get("user", "postgres"), info.get("host", "127.0.0.1")
    return f"postgresql://{user}@{host}:{info.get('port', 5432)}/{info['dbname']}"


def one_line_error(result_stderr: str) -> str:
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result_stderr
    assert "Traceback" not in result_stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("part", "reason"),
    [
        ({"dbname": "no_such_db_here"}, 'database "no_such_db_here" does not exist'),
        ({"user": "no_such_role_here"}, 'role "no_such_role_here" does not exist'),
    ],
    ids=["no such database", "no such role"],
)
def test_a_database_that_refuses_for_good_is_one_line_and_no_waiting(
    tmp_path: Path, postgres_url: str, command: str, part: dict[str, str], reason: str
) -> None:
    env = {"POCKET_DATABASE_URL": on(postgres_url, **part)}
    started = time.monotonic()
    result = run_pocket(tmp_path, env, command, timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"pocket {command}: ")
    assert reason in line
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("command", ["migrate", "status", "verify"])
def test_a_database_that_is_down_is_one_line_for_commands_that_finish(
    tmp_path: Path, postgres_url: str, command: str
) -> None:
    env = {"POCKET_DATABASE_URL": on(postgres_url, port=str(free_port()))}
    result = run_pocket(tmp_path, env, command, timeout=30)
    assert result.returncode == 2
    assert "Connection refused" in one_line_error(result.stderr)


@pytest.mark.parametrize("command", ["serve", "follow"])
def test_serve_and_follow_wait_for_a_database_that_is_down_saying_why(
    tmp_path: Path, postgres_url: str, command: str
) -> None:
    env = {"POCKET_DATABASE_URL": on(postgres_url, port=str(free_port()))}
    process = PocketProcess([command], tmp_path, env, command)
    try:
        wait_for(
            lambda: process.output.count("Connection refused") >= 2,
            what="two attempts, each saying why",
        )
        assert process.process.poll() is None  # still waiting
        assert "Traceback" not in process.output
    finally:
        process.close()


@pytest.mark.parametrize("command", ["status", "verify", "migrate"])
def test_reading_commands_create_no_sqlite_database(
    tmp_path: Path, command: str
) -> None:
    result = run_pocket(tmp_path, {}, command)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert f"No Pocket database at {tmp_path / 'pocket.db'}" in line
    assert list(tmp_path.iterdir()) == []


def test_follow_in_a_folder_without_a_database_refuses_and_creates_none(
    tmp_path: Path,
) -> None:
    result = run_pocket(tmp_path, {}, "follow", timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith(
        f"pocket follow: No Pocket database at {tmp_path / 'pocket.db'}"
    )
    assert "pocket serve makes it" in line  # what to do instead
    assert list(tmp_path.iterdir()) == []


def test_follow_follows_the_sqlite_database_pocket_serve_made(tmp_path: Path) -> None:
    server, _ = serve(tmp_path, {})
    try:
        follower = PocketProcess(["follow"], tmp_path, {}, "follow")
        try:
            wait_for(lambda: "Following" in follower.output, what="the follower")
            assert f"SQLite database {tmp_path / 'pocket.db'}" in follower.output
        finally:
            follower.close()
    finally:
        server.close()


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize("command", ["status", "verify", "migrate"])
def test_reading_commands_create_no_tables_in_a_database_without_pocket(
    tmp_path: Path, postgres_url: str, command: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    result = run_pocket(tmp_path, env, command)
    assert result.returncode == 2
    assert "holds no Pocket tables" in one_line_error(result.stderr)
    assert tables(postgres_url) == []


def test_status_and_verify_say_which_database_they_read(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    server, _ = serve(tmp_path, env)
    server.close()
    where = postgres_url.rsplit("@", 1)[1]
    for command in ("status", "verify"):
        result = run_pocket(tmp_path, env, command)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Database: PostgreSQL database {where}")


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_pocket(tmp_path, {}, "serve", "--port", str(port))
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert (
        line
        == f"pocket serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert list(tmp_path.iterdir()) == []  # checked before opening the database


@pytest.mark.parametrize("command", COMMANDS)
def test_a_wrong_password_is_one_line_and_no_waiting(
    tmp_path: Path, throwaway_postgres: PostgresServer, command: str
) -> None:
    # The test's own server: a role that must give its password.
    server = throwaway_postgres
    hba = server.data / "pg_hba.conf"
    hba.write_text("host all keeper 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute("CREATE ROLE keeper LOGIN PASSWORD 'right'")
        conn.execute("SELECT pg_reload_conf()")
    url = f"postgresql://keeper:wrong@127.0.0.1:{server.port}/postgres"
    result = run_pocket(tmp_path, {"POCKET_DATABASE_URL": url}, command, timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert 'password authentication failed for user "keeper"' in line


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["serve", "--port", "99999"], "--port"),
        (["serve", "--port", "http"], "--port"),
        (["serve", "--threads", "0"], "--threads"),
        (["serve", "--connection-limit", "lots"], "--connection-limit"),
        (["follow", "--batch-size", "0"], "--batch-size"),
        (["migrate", "--batch-size", "-1"], "--batch-size"),
        (["serve", "--no-such-option"], "--no-such-option"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2_before_anything_starts(
    tmp_path: Path, args: list[str], option: str
) -> None:
    result = run_pocket(tmp_path, {}, *args, timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"pocket {args[0]}: ")
    assert option in line
    assert f"pocket {args[0]} --help" in line  # where to read what it takes
    assert list(tmp_path.iterdir()) == []  # no database opened


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"POCKET_DATABASE_URL": "pocket.db"},
            "POCKET_DATABASE_URL='pocket.db' is not a URL",
        ),
        ({"POCKET_DATABASE_URL": "mysql://h/db"}, "not mysql://"),
        ({"POCKET_LOG_LEVEL": "loud"}, "POCKET_LOG_LEVEL must be"),
        ({"POCKET_ADMIN_TOKEN": "short"}, "POCKET_ADMIN_TOKEN must be at least"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "status"])
def test_a_configuration_error_is_one_line_without_the_usage(
    tmp_path: Path, env: dict[str, str], says: str, command: str
) -> None:
    result = run_pocket(tmp_path, env, command, timeout=30)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert line.startswith(f"pocket {command}: ")
    assert says in line
    assert "usage:" not in result.stderr
    assert list(tmp_path.iterdir()) == []
