"""Fixtures shared by every layer: backends as parametrized settings, a throwaway
PostgreSQL server (or Patroni cluster) for fault tests (and PgBouncers in front
of a server), and the guard that the shared one is never restarted."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from pocket.config import Settings
from tests.patroni import PatroniCluster, patroni_cluster, patroni_problem
from tests.pgbouncer import PgBouncer, PoolMode, pgbouncer_problem, throwaway_pgbouncer
from tests.pgserver import (
    PostgresServer,
    ReplicatedPair,
    replicated_pair,
    replication_problem,
    server_problem,
    throwaway_server,
)
from tools.front import nginx_command
from tools.scratch import DEFAULT_ADMIN_URL, scratch_postgres

ADMIN_URL = os.environ.get("POCKET_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)
REQUIRE_POSTGRES = os.environ.get("POCKET_REQUIRE_POSTGRES") == "1"
# CI installs Patroni, etcd and HAProxy: there, their absence fails the tests.
REQUIRE_PATRONI = os.environ.get("POCKET_REQUIRE_PATRONI") == "1"
# CI installs pgbouncer: there, the pooler tests must fail without it, not skip.
REQUIRE_PGBOUNCER = os.environ.get("POCKET_REQUIRE_PGBOUNCER") == "1"
# CI installs nginx: there, the tests of the nginx front must fail without it.
REQUIRE_NGINX = os.environ.get("POCKET_REQUIRE_NGINX") == "1"


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None when it can."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"no PostgreSQL at {ADMIN_URL}: {error}".strip()


_problem: list[str | None] = []


def require_postgres() -> None:
    """Skips (or, with POCKET_REQUIRE_POSTGRES=1, fails) when there is no server."""
    if not _problem:
        _problem.append(postgres_problem())
    skip_or_fail(_problem[0])


def skip_or_fail(problem: str | None) -> None:
    """Nothing without a problem; else a skip, or with POCKET_REQUIRE_POSTGRES=1 a
    failure."""
    if problem is None:
        return
    if REQUIRE_POSTGRES:
        pytest.fail(f"POCKET_REQUIRE_POSTGRES=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    require_postgres()
    with scratch_postgres(ADMIN_URL, "pocket_test") as url:
        yield url


@pytest.fixture
def throwaway_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to stop, kill and restart at will;
    stopped and removed afterwards. Fault tests use it, never the shared server."""
    skip_or_fail(server_problem())
    with throwaway_server() as server:
        yield server


def require_pgbouncer() -> None:
    """Skips (or, with POCKET_REQUIRE_PGBOUNCER=1, fails) when no throwaway
    PgBouncer (and throwaway PostgreSQL server behind it) can be started."""
    problem = pgbouncer_problem()
    if problem is not None and REQUIRE_PGBOUNCER:
        pytest.fail(f"POCKET_REQUIRE_PGBOUNCER=1 but {problem}")
    skip_or_fail(problem or server_problem())


def require_nginx() -> None:
    """Skips (or, with POCKET_REQUIRE_NGINX=1, fails) when nginx is not installed."""
    if nginx_command() is not None:
        return
    if REQUIRE_NGINX:
        pytest.fail("POCKET_REQUIRE_NGINX=1 but nginx is not installed")
    pytest.skip("nginx is not installed")


@pytest.fixture(scope="module")
def pooled_postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server that a module's tests put PgBouncers in
    front of; stopped and removed after the module."""
    require_pgbouncer()
    with throwaway_server() as server:
        yield server


StartPgBouncer = Callable[..., PgBouncer]


@pytest.fixture
def pgbouncer(pooled_postgres: PostgresServer) -> Iterator[StartPgBouncer]:
    """Starts PgBouncers in front of the module's throwaway server:
    pgbouncer("session", server_reset_query=""), the keywords being lines of
    its configuration; each one stopped and removed after the test."""
    with contextlib.ExitStack() as stack:

        def start(mode: PoolMode, **settings: str) -> PgBouncer:
            return stack.enter_context(
                throwaway_pgbouncer(pooled_postgres.port, mode, settings=settings)
            )

        yield start


@pytest.fixture
def replicated_postgres() -> Iterator[ReplicatedPair]:
    """A throwaway primary and its synchronous streaming standby: a commit on the
    primary returns once the standby has its WAL. Failover tests crash the
    primary and promote the standby (tests.pgserver.failover); both are stopped
    and removed afterwards."""
    skip_or_fail(replication_problem())
    with replicated_pair(synchronous=True) as pair:
        yield pair


@pytest.fixture
def async_replicated_postgres() -> Iterator[ReplicatedPair]:
    """The same with an asynchronous standby: commits do not wait for it, so a
    failover may lose the last of them."""
    skip_or_fail(replication_problem())
    with replicated_pair(synchronous=False) as pair:
        yield pair


@pytest.fixture
def patroni() -> Iterator[PatroniCluster]:
    """A throwaway Patroni cluster (etcd, two nodes in synchronous mode, HAProxy
    in front), its leader and synchronous standby running; stopped and removed
    afterwards. Skipped without the binaries, unless POCKET_REQUIRE_PATRONI=1."""
    require_patroni()
    with patroni_cluster() as cluster:
        yield cluster


def require_patroni() -> None:
    """Skips (or, with POCKET_REQUIRE_PATRONI=1, fails) when no Patroni cluster
    can be started here."""
    problem = patroni_problem()
    if problem is None:
        return
    if REQUIRE_PATRONI:
        pytest.fail(f"POCKET_REQUIRE_PATRONI=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file in the test's own directory."""
    return f"sqlite:///{tmp_path / 'pocket.db'}"


POPO = Settings("eventsourcing.popo", {"PERSISTENCE_MODULE": "eventsourcing.popo"})


@pytest.fixture(params=["popo", "sqlite", "postgres"])
def any_settings(request: pytest.FixtureRequest) -> Settings:
    """Every store the Pocket application runs on."""
    return settings_for(request)


@pytest.fixture(params=["sqlite", "postgres"])
def sql_settings(request: pytest.FixtureRequest) -> Settings:
    """Every store the whole service (users, projection) runs on."""
    return settings_for(request)


@pytest.fixture
def postgres_settings(postgres_url: str) -> Settings:
    """PostgreSQL only."""
    return Settings.from_url(postgres_url)


def settings_for(request: pytest.FixtureRequest) -> Settings:
    """Settings for the backend named by a parametrized fixture."""
    backend = request.param
    if backend == "popo":
        return POPO
    url = request.getfixturevalue(f"{backend}_url")
    assert isinstance(url, str)
    return Settings.from_url(url)


# The shared server belongs to whoever runs the tests: the suite must never stop
# or restart it. Its start time, before and after, is what says it did not.
_started_at: list[datetime] = []
_restarted: list[str] = []


def shared_server_started_at() -> datetime | None:
    """pg_postmaster_start_time() of the shared server, or None if unreachable."""
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    except psycopg.Error:
        return None
    assert row is not None
    started: datetime = row[0]
    return started


def pytest_sessionstart(session: pytest.Session) -> None:
    started = shared_server_started_at()
    if started is not None:
        _started_at.append(started)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not _started_at:
        return
    now = shared_server_started_at()
    if now == _started_at[0]:
        return
    after = "it is unreachable now" if now is None else f"now it started at {now}"
    _restarted.append(
        f"The shared PostgreSQL at {ADMIN_URL} was stopped or restarted during "
        f"the tests: it had started at {_started_at[0]}, {after}. The suite must "
        "leave it alone; fault tests use the throwaway_postgres fixture."
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for message in _restarted:
        terminalreporter.section("shared PostgreSQL", sep="=", red=True, bold=True)
        terminalreporter.line(message, red=True)
