"""A throwaway PostgreSQL server, for tests that stop, kill or restart the database.

The server at POCKET_TEST_POSTGRES_URL belongs to whoever runs the tests (on a
developer's machine, their own), so the suite never stops it. A fault test starts
one of these instead: the machine's PostgreSQL binaries, a data directory in a
temporary folder, its own port on 127.0.0.1, all of it gone afterwards.

A server is a data directory plus a port. `initdb()` makes the directory; the
port, the address and the socket directory are given at each start, not written
into the directory, so that a streaming standby is another server whose directory
comes from `pg_basebackup -R` of this one and starts the same way.

Replication, for failover tests: `replicated_pair()` is a primary and a streaming
standby (synchronous or asynchronous), each in a folder and on a port of its own;
`failover()` crashes the primary and promotes the standby.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg import sql
from psycopg.abc import Query
from psycopg.conninfo import make_conninfo

from tests.proctree import kill_postmaster
from tools.scratch import free_port

OWNER = "postgres"  # initdb and postgres refuse to run as root

# Speed over what only a machine crash would test. A commit must still reach the
# kernel before it is acknowledged (synchronous_commit stays on), or a kill -9 of
# the server would lose acknowledged writes and fault tests would fail for it.
# The same holds for a standby: a synchronous standby acknowledges WAL it has
# written to the kernel, so a kill -9 of either server (the machine staying up)
# loses nothing a failover test counts on; only an OS crash would.
FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
}

# What a primary needs for streaming standbys. initdb's defaults already say so
# (PostgreSQL 10 and later); written out, the tests do not depend on them.
REPLICATION_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",  # read-only queries on the standby, for the tests to look
    # WAL kept for a standby that fell behind (there is no replication slot, which
    # would keep WAL for a dead standby forever).
    "wal_keep_size": "64MB",
}
REPLICATION_HBA = "host replication all 127.0.0.1/32 trust"

# The standby's name in a replicated pair: its application_name, which the
# primary's synchronous_standby_names and pg_stat_replication know it by.
STANDBY_NAME = "standby"

StopMode = Literal["fast", "immediate"]
CrashMode = Literal["kill", "immediate"]


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and postgres are: pg_config's answer, or the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off the PATH)."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        answer = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(answer.stdout.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=_version, reverse=True)
    return next((path for path in candidates if _has_binaries(path)), None)


def _version(bindir: Path) -> tuple[int, ...]:
    words = bindir.parent.name.split(".")
    return tuple(int(word) for word in words if word.isdigit())


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def server_problem() -> str | None:
    """Why no throwaway server can be started here, or None when one can."""
    if find_bindir() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl, postgres) on this machine"
    return owner_problem()


def replication_problem() -> str | None:
    """Why no replicated pair can be started here, or None when one can."""
    problem = server_problem()
    if problem is not None:
        return problem
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_basebackup").is_file():
        return f"no pg_basebackup beside initdb in {bindir}"
    return None


@dataclass(frozen=True)
class Replica:
    """One standby as its primary sees it (a row of pg_stat_replication)."""

    name: str  # its application_name
    state: str  # "streaming" once it has caught up; "startup", "catchup" before
    sync_state: str  # "sync", "async" (or "potential", "quorum")
    # WAL the primary has written and the standby has not replayed yet, in bytes;
    # None until the standby has reported a position.
    lag_bytes: int | None


class PostgresServer:
    """One PostgreSQL server in a folder of its own, on a port of its own: on
    127.0.0.1, or on an address of a network namespace it runs in (a host the
    test can cut off, see tests.netns)."""

    def __init__(
        self,
        folder: Path,
        bindir: Path,
        port: int,
        host: str = "127.0.0.1",
        netns: list[str] | None = None,
    ) -> None:
        self.folder = folder
        self.bindir = bindir
        self.port = port
        self.host = host
        # The command prefix that runs a program in the server's namespace.
        self.netns = netns or []
        self.data = folder / "data"
        self.sockets = folder / "sockets"
        self.log = folder / "postgres.log"
        self._postmaster: subprocess.Popen[bytes] | None = None
        # Why this server must not start again (set by failover()), or None.
        self.fenced: str | None = None

    @property
    def url(self) -> str:
        """The superuser's URL for the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The superuser's URL for one database on this server."""
        return f"postgresql://{OWNER}@{self.host}:{self.port}/{database}"

    @property
    def is_running(self) -> bool:
        """Whether the postmaster is alive."""
        return self._postmaster is not None and self._postmaster.poll() is None

    @property
    def postmaster_pid(self) -> int | None:
        """The running postmaster's process id, or None."""
        return self._postmaster.pid if self._postmaster and self.is_running else None

    def initdb(self) -> None:
        """A new cluster in the folder: trust authentication, fast settings."""
        self._prepare_folder()
        self._run(
            "initdb",
            *("--pgdata", str(self.data), "--username", OWNER, "--auth", "trust"),
            *("--encoding", "UTF8", "--no-locale", "--no-sync"),
        )
        self._configure("postgresql.conf", "Pocket's tests", FAST_SETTINGS)
        if self.host != "127.0.0.1":
            # Trust the clients on the other side of the namespace's link.
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.host}/24 trust\n")

    def allow_replication(self) -> None:
        """Lets standbys stream from this server: the settings, and trust for
        replication connections from 127.0.0.1. A running server restarts (some
        of the settings take effect only at a start)."""
        self._configure("postgresql.conf", "replication", REPLICATION_SETTINGS)
        hba = self.data / "pg_hba.conf"
        if REPLICATION_HBA not in hba.read_text().splitlines():
            with hba.open("a") as lines:
                lines.write(f"{REPLICATION_HBA}\n")
        if self.is_running:
            self.restart()

    def clone(self, primary: PostgresServer, name: str) -> None:
        """Makes this server's data directory a standby of the running primary:
        `pg_basebackup -R`, which writes standby.signal and primary_conninfo.

        The standby introduces itself as `name` (its application_name). Its own
        settings win over what the copy brought along: primary_conninfo without
        the passfile and SSL options libpq filled in, and no synchronous
        standbys, for a standby promoted to primary must not wait for one."""
        self._prepare_folder()
        conninfo = make_conninfo(
            host="127.0.0.1", port=primary.port, user=OWNER, application_name=name
        )
        self._run(
            "pg_basebackup",
            *("--pgdata", str(self.data), "--dbname", conninfo),
            *("--write-recovery-conf", "--wal-method", "stream"),
            *("--checkpoint", "fast", "--no-sync"),
        )
        settings = {"primary_conninfo": conninfo, "synchronous_standby_names": ""}
        title = f"standby {name!r} of the server on port {primary.port}"
        self._configure("postgresql.auto.conf", title, settings)

    def start(self, timeout: float = 60) -> None:
        """Starts the server and waits until it accepts connections."""
        if self.fenced is not None:
            msg = f"Refusing to start the server on port {self.port}: {self.fenced}"
            raise RuntimeError(msg)
        # The postmaster is this process's own child (not pg_ctl's, which would
        # leave it to init): after a kill -9 it is reaped at once, and no zombie
        # holding its pid makes the next start think it still runs.
        postgres = [str(self.bindir / "postgres"), "-D", str(self.data)]
        where = ["-p", str(self.port), "-h", self.host, "-k", str(self.sockets)]
        with self.log.open("ab") as log:
            self._postmaster = subprocess.Popen(
                self._as_owner([*postgres, *where]),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C is for pytest, not for it
            )
        self._wait_until_ready(timeout)

    def stop(self, mode: StopMode = "fast", timeout: float = 60) -> None:
        """Shuts the server down: `fast` cleanly, `immediate` without a checkpoint
        (it recovers at the next start, as after a crash)."""
        self._run(
            "pg_ctl",
            *("stop", "--pgdata", str(self.data), "--mode", mode, "--wait"),
            *("--timeout", str(int(timeout))),
        )
        if self._postmaster is not None:
            self._postmaster.wait(timeout)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stops, then starts again on the same port."""
        self.stop(mode)
        self.start()

    def kill(self, timeout: float = 30) -> None:
        """kill -9 of the postmaster, as a crash would; returns once its backends
        have gone too, so the next start() finds no one holding its shared memory."""
        if self._postmaster is None or not self.is_running:
            return
        kill_postmaster(self._postmaster.pid, timeout)
        self._postmaster.wait(timeout)

    def connect(
        self, *, autocommit: bool = False, connect_timeout: int = 5
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection as the superuser to the `postgres` database of this very
        server, whatever it is: target_session_attrs=any, for a test may set
        PGTARGETSESSIONATTRS=read-write for the code it tests, and a standby
        must still be reachable (the others, PG* variables apply)."""
        return psycopg.connect(
            self.url,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            target_session_attrs="any",
        )

    def query(self, statement: Query) -> list[tuple[Any, ...]]:
        """The rows of one statement, run as the superuser on the `postgres`
        database in a connection of its own (autocommit)."""
        with self.connect(autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def is_in_recovery(self) -> bool:
        """True on a standby (until it is promoted), False on a primary."""
        ((in_recovery,),) = self.query("SELECT pg_is_in_recovery()")
        return bool(in_recovery)

    def wal_position(self) -> int:
        """How far this server's WAL goes, in bytes: on a primary what it has
        written (pg_current_wal_lsn), on a standby what it has replayed
        (pg_last_wal_replay_lsn). Comparable across the two."""
        ((position,),) = self.query(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint"
        )
        return int(position)

    def replicas(self) -> list[Replica]:
        """The standbys streaming from this primary, by name."""
        rows = self.query(
            "SELECT application_name, state, sync_state, "
            "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
            "FROM pg_stat_replication ORDER BY application_name"
        )
        return [Replica(*row) for row in rows]

    def wait_for_replica(
        self, name: str, sync_state: str, timeout: float = 60
    ) -> Replica:
        """Waits until the standby `name` streams from this primary in the given
        sync_state ("sync" or "async"), and returns it as the primary sees it."""
        deadline = time.monotonic() + timeout
        while True:
            replica = next((r for r in self.replicas() if r.name == name), None)
            if (
                replica is not None
                and replica.state == "streaming"
                and replica.sync_state == sync_state
            ):
                return replica
            if time.monotonic() > deadline:
                msg = (
                    f"Standby {name!r} not streaming as {sync_state} within "
                    f"{timeout}s: {replica}\n{self.log_tail()}"
                )
                raise RuntimeError(msg)
            time.sleep(0.05)

    def require_synchronous_standby(self, name: str | None) -> None:
        """Makes each commit on this primary wait until the standby `name` has
        its WAL (synchronous_commit = on: written out, not yet replayed), or with
        None, wait for no standby again; reloads the configuration.

        Mind: while the named standby is gone, every commit here waits, for as
        long as it takes; None releases the commits waiting."""
        names = "" if name is None else f"FIRST 1 ({sql.Identifier(name).as_string()})"
        for setting, value in (
            ("synchronous_standby_names", names),
            ("synchronous_commit", "on"),
        ):
            self.query(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.Identifier(setting), sql.Literal(value)
                )
            )
        self.query("SELECT pg_reload_conf()")

    def promote(self, timeout: float = 60) -> None:
        """Ends a standby's recovery (pg_ctl promote): it becomes a primary and
        accepts writes. Returns once pg_is_in_recovery() says so."""
        self._run(
            "pg_ctl",
            *("promote", "--pgdata", str(self.data), "--wait"),
            *("--timeout", str(int(timeout))),
        )
        deadline = time.monotonic() + timeout
        while self.is_in_recovery():
            if time.monotonic() > deadline:
                msg = f"Still in recovery {timeout}s after promote:\n{self.log_tail()}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def create_database(self, name: str) -> str:
        """A new, empty database on this server, and its URL. (It goes with the
        folder: nothing needs to drop it.)"""
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        return ""

    def destroy(self) -> None:
        """Stops the server however it can, and removes its folder."""
        if self.is_running:
            try:
                self.stop("immediate", timeout=30)
            except subprocess.SubprocessError:
                self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.is_running and time.monotonic() < deadline:
            try:
                self.connect(connect_timeout=2).close()
            except psycopg.OperationalError:
                time.sleep(0.05)  # starting up, or recovering from a crash
            else:
                return
        self.kill()
        msg = f"PostgreSQL did not start within {timeout}s:\n{self.log_tail()}"
        raise RuntimeError(msg)

    def _prepare_folder(self) -> None:
        """The folder and the socket directory, OWNER's."""
        own(self.folder)
        self.sockets.mkdir(exist_ok=True)
        own(self.sockets)

    def _configure(self, file: str, title: str, settings: dict[str, str]) -> None:
        """Appends settings to a configuration file of the data directory; the
        last line for a setting wins, so these override what came before."""
        lines = [f"{name} = {_quoted(value)}" for name, value in settings.items()]
        with (self.data / file).open("a") as conf:
            conf.write(f"\n# {title}\n" + "\n".join(lines) + "\n")

    def _run(self, binary: str, *args: str) -> None:
        command = self._as_owner([str(self.bindir / binary), *args])
        # The folder as working directory: the caller's may be closed to OWNER.
        subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, check=True
        )

    def _as_owner(self, command: list[str]) -> list[str]:
        """The command as OWNER when we are root (see as_owner), in the server's
        namespace if it has one; `ip netns exec` execs rather than forks, so the
        process started is the command itself."""
        return [*self.netns, *as_owner(command)]


def as_owner(command: list[str]) -> list[str]:
    """The command as OWNER when we are root; setpriv execs rather than
    forks, so the process started is the command itself."""
    if os.geteuid() != 0:
        return command
    user = ["--reuid", OWNER, "--regid", OWNER, "--init-groups"]
    return ["setpriv", *user, "--", *command]


def own(path: Path) -> None:
    """Gives a path to OWNER when we are root (its daemons write there)."""
    if os.geteuid() == 0:
        shutil.chown(path, OWNER, OWNER)


def owner_problem() -> str | None:
    """Why a daemon cannot be run as OWNER here, or None when it can."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OWNER)
        except KeyError:
            return f"running as root and there is no {OWNER!r} user to run it as"
        if shutil.which("setpriv") is None:
            return f"running as root and no setpriv to run it as {OWNER!r}"
    return None


def new_server(bindir: Path | None = None) -> PostgresServer:
    """A server (not yet initialised, not running) in a new temporary folder,
    with a free port; its caller destroys it."""
    found = bindir or find_bindir()
    if found is None:
        msg = "no PostgreSQL binaries"
        raise RuntimeError(msg)
    folder = Path(tempfile.mkdtemp(prefix="pocket-pg-"))
    return PostgresServer(folder, found, free_port())


@contextlib.contextmanager
def throwaway_server(
    bindir: Path | None = None, *, replication: bool = False
) -> Iterator[PostgresServer]:
    """A running server in a new temporary folder; stopped and removed afterwards,
    whatever happened in between. With replication, standbys may stream from it."""
    server = new_server(bindir)
    try:
        server.initdb()
        if replication:
            server.allow_replication()
        server.start()
        yield server
    finally:
        server.destroy()


def standby_of(
    primary: PostgresServer, name: str, *, synchronous: bool, timeout: float = 60
) -> PostgresServer:
    """A new streaming standby of the running primary, in a folder and on a port
    of its own, started; its caller destroys it.

    Synchronous, the primary's commits wait for it from now on (and hang while
    it is gone: see require_synchronous_standby); asynchronous, they do not.
    Returns once the primary sees it streaming in that mode."""
    standby = new_server(primary.bindir)
    try:
        standby.clone(primary, name)
        standby.start(timeout)
        if synchronous:
            primary.require_synchronous_standby(name)
        primary.wait_for_replica(name, "sync" if synchronous else "async", timeout)
    except BaseException:
        standby.destroy()
        raise
    return standby


class ReplicatedPair(NamedTuple):
    """A primary and its streaming standby."""

    primary: PostgresServer
    standby: PostgresServer


@contextlib.contextmanager
def replicated_pair(
    *, synchronous: bool = True, bindir: Path | None = None
) -> Iterator[ReplicatedPair]:
    """A primary and a streaming standby (named STANDBY_NAME), each in a new
    temporary folder and on a free port; both stopped and removed afterwards,
    whatever happened in between."""
    with throwaway_server(bindir, replication=True) as primary:
        standby = standby_of(primary, STANDBY_NAME, synchronous=synchronous)
        try:
            yield ReplicatedPair(primary, standby)
        finally:
            standby.destroy()


def failover(
    primary: PostgresServer, standby: PostgresServer, how: CrashMode = "kill"
) -> None:
    """The primary crashes (a kill -9 of its postmaster, or an immediate stop)
    and the standby is promoted in its place.

    The old primary is fenced: its start() refuses, for it would come back as a
    second primary, with writes of its own the new one never saw (and, once it
    was synchronous, commits it would wait on a standby that is gone for)."""
    if how == "kill":
        primary.kill()
    else:
        primary.stop("immediate")
    primary.fenced = f"it was failed over to the server on port {standby.port}"
    standby.promote()


def fail_over_to_a_stopped_standby(
    primary: PostgresServer, standby: PostgresServer
) -> None:
    """The primary crashes while its standby is stopped, and the standby,
    started again, is promoted: what the primary wrote while the standby was
    away (acknowledged or not) is not on the new primary."""
    primary.kill()
    primary.fenced = f"it was failed over to the server on port {standby.port}"
    standby.start()
    standby.promote()


def wait_until_replayed(
    primary: PostgresServer, standby: PostgresServer, timeout: float = 30
) -> None:
    """Waits until the standby has replayed all the WAL the primary had written
    when this was called (an asynchronous standby catching up)."""
    target = primary.wal_position()
    deadline = time.monotonic() + timeout
    while standby.wal_position() < target:
        if time.monotonic() > deadline:
            msg = f"The standby did not catch up within {timeout}s"
            raise RuntimeError(msg)
        time.sleep(0.02)


def multi_host_conninfo(
    *servers: PostgresServer, database: str = "postgres", attrs: str = "read-write"
) -> str:
    """A libpq conninfo naming every server, which connects to the first one
    that is up and (by target_session_attrs) writable."""
    return make_conninfo(
        host=",".join("127.0.0.1" for _ in servers),
        port=",".join(str(server.port) for server in servers),
        dbname=database,
        user=OWNER,
        target_session_attrs=attrs,
    )


def multi_host_url(
    *servers: PostgresServer, database: str = "postgres", attrs: str = "read-write"
) -> str:
    """The same as a URL: postgresql://u@h1:p1,h2:p2/db?target_session_attrs=..."""
    hosts = ",".join(f"127.0.0.1:{server.port}" for server in servers)
    return f"postgresql://{OWNER}@{hosts}/{database}?target_session_attrs={attrs}"


def _quoted(value: str) -> str:
    """A value as postgresql.conf writes strings: in single quotes, doubled."""
    return "'" + value.replace("'", "''") + "'"
