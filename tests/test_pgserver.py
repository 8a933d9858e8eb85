"""The throwaway PostgreSQL servers the fault tests stop, kill and restart, and
the primary and standby the failover tests crash and promote."""

from __future__ import annotations

import itertools
import os
import threading
import time
from datetime import datetime

import psycopg
import pytest

from tests.conftest import skip_or_fail
from tests.pgserver import (
    STANDBY_NAME,
    CrashMode,
    PostgresServer,
    ReplicatedPair,
    failover,
    multi_host_conninfo,
    multi_host_url,
    replicated_pair,
    replication_problem,
    server_problem,
    throwaway_server,
    wait_until_replayed,
)


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


# A primary and its streaming standby, for failover tests.


def server_port(conninfo: str) -> int:
    """The port of the server a conninfo or URL connects to."""
    with psycopg.connect(conninfo, connect_timeout=3) as conn:
        row = conn.execute("SELECT inet_server_port()").fetchone()
    assert row is not None
    port: int = row[0]
    return port


class Writer(threading.Thread):
    """Inserts 1, 2, 3... into `acked`, one commit each, until the server fails;
    `acknowledged` holds the numbers whose commit returned."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.acknowledged: list[int] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for n in itertools.count(1):
                    conn.execute("INSERT INTO acked VALUES (%s)", [n])
                    self.acknowledged.append(n)
        except Exception as error:  # the test looks at it
            self.error = error

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count and self.is_alive():
            assert time.monotonic() < deadline, "the writer is too slow"
            time.sleep(0.01)
        assert self.error is None, self.error


def numbers(server: PostgresServer) -> set[int]:
    return {n for (n,) in server.query("SELECT n FROM acked")}


def test_a_synchronous_standby_has_each_commit_when_it_returns(
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    (replica,) = primary.replicas()
    assert (replica.name, replica.state, replica.sync_state) == (
        STANDBY_NAME,
        "streaming",
        "sync",
    )
    assert not primary.is_in_recovery()
    assert standby.is_in_recovery()
    primary.query("CREATE TABLE acked (n int PRIMARY KEY)")
    with (
        psycopg.connect(primary.url, autocommit=True) as writer,
        psycopg.connect(standby.url, autocommit=True) as reader,
    ):
        # synchronous_commit = on, the pair's setting, waits until the standby
        # has the commit's WAL (what a failover keeps, next test); remote_apply
        # waits until it has replayed it too, which is what a query there sees.
        writer.execute("SET synchronous_commit = remote_apply")
        for n in range(1, 21):
            writer.execute("INSERT INTO acked VALUES (%s)", [n])
            assert reader.execute("SELECT max(n) FROM acked").fetchone() == (n,)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        standby.query("INSERT INTO acked VALUES (0)")


@pytest.mark.parametrize("how", ["kill", "immediate"])
def test_after_a_failover_every_acknowledged_commit_is_there(
    replicated_postgres: ReplicatedPair, how: CrashMode
) -> None:
    primary, standby = replicated_postgres
    primary.query("CREATE TABLE acked (n int PRIMARY KEY)")
    writer = Writer(primary.url)
    writer.start()
    writer.wait_for(200)
    failover(primary, standby, how)  # while the writer writes
    writer.join(30)
    assert isinstance(writer.error, psycopg.OperationalError)
    assert not standby.is_in_recovery()
    found = numbers(standby)
    assert set(writer.acknowledged) <= found
    # At most the commit in flight besides: on the standby, never acknowledged.
    assert found - set(writer.acknowledged) <= {len(writer.acknowledged) + 1}
    standby.query("INSERT INTO acked VALUES (0)")  # it takes writes now
    assert 0 in numbers(standby)
    with pytest.raises(RuntimeError, match="failed over"):
        primary.start()  # never a second primary


def test_a_multi_host_conninfo_finds_the_primary_before_and_after_a_failover(
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    ports = f"{primary.port},{standby.port}"
    conninfo = (
        f"host=127.0.0.1,127.0.0.1 port={ports} dbname=postgres user=postgres "
        "target_session_attrs=read-write"
    )
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}"
        "/postgres?target_session_attrs=read-write"
    )
    assert multi_host_conninfo(primary, standby) == conninfo
    assert multi_host_url(primary, standby) == url
    standby_first = [
        multi_host_conninfo(standby, primary),
        multi_host_url(standby, primary),
    ]
    for target in (conninfo, url, *standby_first):
        assert server_port(target) == primary.port
    # Without read-write, the first server that answers, standby or not.
    assert server_port(multi_host_url(standby, primary, attrs="any")) == standby.port

    failover(primary, standby)
    for target in (conninfo, url, *standby_first):
        assert server_port(target) == standby.port
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE written_after_failover (n int)")


def test_pgtargetsessionattrs_in_the_environment_finds_the_primary_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libpq's variable, for code that cannot pass target_session_attrs; the
    # pair's own connections (target_session_attrs=any) still reach the standby.
    skip_or_fail(replication_problem())
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "read-write")
    with replicated_pair(synchronous=False) as (primary, standby):
        assert standby.is_in_recovery()
        hosts = f"127.0.0.1:{standby.port},127.0.0.1:{primary.port}"
        assert server_port(f"postgresql://postgres@{hosts}/postgres") == primary.port


def test_with_its_synchronous_standby_gone_a_commit_waits_for_it(
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    primary.query("CREATE TABLE acked (n int PRIMARY KEY)")
    standby.stop("immediate")
    writer = Writer(primary.url)
    writer.start()
    time.sleep(0.5)
    assert writer.acknowledged == []  # the first commit waits for the standby
    primary.require_synchronous_standby(None)
    writer.wait_for(10)  # released: the commits go on without one
    primary.stop("immediate")  # ends the writer
    writer.join(30)


def test_an_asynchronous_standby_streams_and_catches_up(
    async_replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = async_replicated_postgres
    (replica,) = primary.replicas()
    assert (replica.name, replica.state, replica.sync_state) == (
        STANDBY_NAME,
        "streaming",
        "async",
    )
    assert primary.query("SHOW synchronous_standby_names") == [("",)]
    primary.query("CREATE TABLE acked (n int PRIMARY KEY)")
    primary.query("INSERT INTO acked VALUES (1)")
    wait_until_replayed(primary, standby)
    assert numbers(standby) == {1}


def test_an_asynchronous_failover_loses_what_the_standby_had_not_received(
    async_replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = async_replicated_postgres
    primary.query("CREATE TABLE acked (n int PRIMARY KEY)")
    primary.query("INSERT INTO acked VALUES (1)")
    wait_until_replayed(primary, standby)
    standby.stop()  # or far behind: the primary does not wait for it
    primary.query("INSERT INTO acked VALUES (2)")  # acknowledged
    primary.kill()
    standby.start()
    failover(primary, standby)
    assert numbers(standby) == {1}  # 2 is lost


def fail_inside_pair(started: list[ReplicatedPair]) -> None:
    with replicated_pair() as pair:
        started.append(pair)
        msg = "a test failing while its servers run"
        raise RuntimeError(msg)


def test_the_pair_is_stopped_and_removed_even_when_the_test_fails() -> None:
    skip_or_fail(replication_problem())
    started: list[ReplicatedPair] = []
    with pytest.raises(RuntimeError, match="a test failing"):
        fail_inside_pair(started)
    ((primary, standby),) = started
    for server in (primary, standby):
        assert not server.folder.exists()
        assert refuses_connections(server.url)
