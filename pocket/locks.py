"""Locks held by a process for as long as it lives: one active follower, one migration.

On PostgreSQL, a session advisory lock on a connection of its own: the server
releases it the moment the process dies, even by kill -9. On SQLite, an flock on
a file beside the database, which the kernel releases the same way.

A process that waits for a lock (a standby follower) can make itself seen, by the
same means, so that it vanishes when it dies: on PostgreSQL an idle connection
whose application_name says so, on SQLite an flock on a file of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import zlib
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from pocket.postgres_pool import connect_kwargs

# True on a server that takes no writes: a standby (always read-only), or a
# primary fenced with default_transaction_read_only, which a failover manager sets
# on an old primary before it shuts it down.
READ_ONLY = "current_setting('transaction_read_only') = 'on'"


class ProcessLock(ABC):
    """A named lock that at most one process holds, released when it dies."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held = False
        # Whether the server last seen takes no writes (a standby, or a primary
        # fenced read-only in a failover): a lock there is not taken, or given up.
        self.read_only = False

    @abstractmethod
    def try_acquire(self) -> bool:
        """Takes the lock if nobody holds it; never waits."""

    @abstractmethod
    def is_still_held(self) -> bool:
        """Whether the lock is still ours (a dropped connection loses it, and so
        does a server that stopped taking writes)."""

    @abstractmethod
    def release(self) -> None:
        """Gives the lock up."""

    @abstractmethod
    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (pid, host, since), or None when nobody does."""

    @abstractmethod
    def stand_by(self) -> bool:
        """Shows this process as waiting for the lock, until it takes the lock or
        releases; False if it cannot be shown now (call again to retry)."""

    @abstractmethod
    def standbys(self) -> list[dict[str, Any]]:
        """The processes waiting for the lock (pid, host, since), oldest first."""

    def __enter__(self) -> ProcessLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_key(name: str) -> tuple[int, int]:
    """The two (signed) 32-bit halves of the advisory lock key for a name."""
    low = zlib.crc32(name.encode())
    return 0x706B7400, low - 2**32 if low >= 2**31 else low  # 0x706b74: "pkt"


class AdvisoryLock(ProcessLock):
    """A PostgreSQL session advisory lock on a connection of its own."""

    def __init__(self, datastore: PostgresDatastore, name: str) -> None:
        super().__init__(name)
        self.connect_kwargs = connect_kwargs(datastore)
        self.key = lock_key(name)
        self.conn: psycopg.Connection[Any] | None = None
        # While standing by: an idle connection named for it, which the server
        # drops (and so forgets) the moment the process dies.
        self.waiting: psycopg.Connection[Any] | None = None
        self.standby_name = f"pocket standby {name} pid="
        # The server the last attempt to take the lock reached (host, port).
        self.server: tuple[str, int] | None = None

    def try_acquire(self) -> bool:
        if self.held and self.is_still_held():
            return True
        self._close()  # Not release(): a standby stays seen while it tries.
        # A standby tries on the connection it is seen on: a follower standing
        # by tries every round, and a new connection each time would fork a
        # server process for it (about a hundred a second under load, once
        # every write's NOTIFY woke it).
        conn = self.waiting
        try:
            if conn is None:
                conn = psycopg.connect(
                    autocommit=True,
                    connect_timeout=5,
                    application_name=self._holder_name,
                    **self.connect_kwargs,
                )
            # Not on a server that takes no writes: its holder could apply
            # nothing, and a follower on the primary must be free to take over.
            row = conn.execute(
                f"SELECT CASE WHEN {READ_ONLY} THEN NULL "
                "ELSE pg_try_advisory_lock(%s, %s) END",
                self.key,
            ).fetchone()
            held = bool(row and row[0])
            if held and conn is self.waiting:
                # The standby's connection holds the lock now: named as such.
                conn.execute(
                    "SELECT set_config('application_name', %s, false)",
                    [self._holder_name],
                )
                self.waiting = None
        except psycopg.Error:
            if conn is self.waiting:
                self._stop_standing_by()
            elif conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            return False
        self.server = server_of(conn)
        self.read_only = row is None or row[0] is None
        self.held = held
        if held:
            self.conn = conn
            self._stop_standing_by()
        elif conn is self.waiting:
            if self.read_only:
                # Seen on a server that takes no writes: a new connection
                # finds the primary.
                self._stop_standing_by()
        else:
            with contextlib.suppress(psycopg.Error):
                conn.close()
        return held

    @property
    def _holder_name(self) -> str:
        # application_name holds 63 bytes.
        return f"pocket {self.name} pid={os.getpid()}"[:63]

    def is_still_held(self) -> bool:
        if self.conn is None or not self.held:
            return False
        try:
            row = self.conn.execute(f"SELECT {READ_ONLY}").fetchone()
        except psycopg.Error:
            self._close()
            return False
        # A primary fenced read-only (or demoted) gets no new events: the lock
        # there is given up, for a follower on the new primary to take.
        self.read_only = bool(row and row[0])
        if self.read_only:
            self._close()
        return not self.read_only

    def release(self) -> None:
        self._close()
        self._stop_standing_by()

    def _close(self) -> None:
        held, self.held = self.held, False
        if self.conn is not None:
            # Closing the session releases the lock with it, once its server
            # process has noticed; unlocked first, it is free when this returns.
            with contextlib.suppress(psycopg.Error):
                if held and not self.conn.closed:
                    self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
                self.conn.close()
            self.conn = None

    def stand_by(self) -> bool:
        if self.waiting is not None:
            try:
                self.waiting.execute("SELECT 1")  # Still there after a restart?
            except psycopg.Error:
                self._stop_standing_by()
            else:
                # Seen where the lock is: after a failover, on the new primary.
                if self.server in (None, server_of(self.waiting)):
                    return True
                self._stop_standing_by()
        # application_name holds 63 bytes: the lock's name and the pid fit.
        name = f"{self.standby_name}{os.getpid()}"
        try:
            self.waiting = psycopg.connect(
                autocommit=True,
                connect_timeout=5,
                application_name=name,
                **self.connect_kwargs,
            )
        except psycopg.Error:
            return False
        return True

    def _stop_standing_by(self) -> None:
        if self.waiting is not None:
            with contextlib.suppress(psycopg.Error):
                self.waiting.close()
            self.waiting = None

    def standbys(self) -> list[dict[str, Any]]:
        with psycopg.connect(connect_timeout=5, **self.connect_kwargs) as conn:
            rows = conn.execute(
                "SELECT application_name, client_addr, backend_start "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND left(application_name, %s) = %s ORDER BY backend_start",
                [len(self.standby_name), self.standby_name],
            ).fetchall()
        return [
            {
                "pid": pid_in(str(name)),
                "host": str(address) if address is not None else "local",
                "since": started.isoformat(),
            }
            for name, address, started in rows
        ]

    def holder(self) -> dict[str, Any] | None:
        with psycopg.connect(connect_timeout=5, **self.connect_kwargs) as conn:
            row = conn.execute(
                "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
                "AND l.objid = %s AND l.objsubid = 2 AND l.database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())",
                [self.key[0] & 0xFFFFFFFF, self.key[1] & 0xFFFFFFFF],
            ).fetchone()
        if row is None:
            return None
        return {
            "pid": pid_in(str(row[1])),
            "host": str(row[2]) if row[2] is not None else "local",
            "since": row[3].isoformat(),
        }


def server_of(conn: psycopg.Connection[Any]) -> tuple[str, int]:
    """The server a connection reached (of a multi-host URL's, the one it chose)."""
    return conn.info.host, conn.info.port


def pid_in(application_name: str) -> int | None:
    """The pid a Pocket connection's application_name gives (...pid=<n>)."""
    pid_text = application_name.rpartition("pid=")[2]
    return int(pid_text) if pid_text.isdigit() else None


class FileLock(ProcessLock):
    """An exclusive flock on a file beside an SQLite database."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(name)
        self.path = path
        self.file: IO[str] | None = None
        # While standing by: a file of this process's own beside the lock's,
        # flocked, so that a reader can tell a live standby from a dead one's file.
        self.waiting: IO[str] | None = None
        self.waiting_path: Path | None = None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.close()
            return False
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()} {socket.gethostname()}\n")
        file.flush()
        self.file, self.held = file, True
        self._stop_standing_by()
        return True

    def is_still_held(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False
        if self.file is not None:
            self.file.close()  # Closing the file releases the flock.
            self.file = None
        self._stop_standing_by()

    def stand_by(self) -> bool:
        if self.waiting is not None:
            return True
        self._remove_dead_standbys()
        path = Path(f"{self._standby_prefix}{os.getpid()}-{secrets.token_hex(4)}.lock")
        # Flocked and written before it has its name, so that no reader ever sees
        # it unlocked (and takes it for a dead standby's) or half written.
        draft = path.with_name(f".{path.name}")
        since = datetime.now(UTC).isoformat()
        about = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        try:
            file = draft.open("w")
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # A new file: free.
            file.write(json.dumps(about))
            file.flush()
            draft.rename(path)
        except OSError:
            return False
        self.waiting, self.waiting_path = file, path
        return True

    def _stop_standing_by(self) -> None:
        if self.waiting is not None and self.waiting_path is not None:
            self.waiting_path.unlink(missing_ok=True)
            self.waiting.close()
        self.waiting, self.waiting_path = None, None

    @property
    def _standby_prefix(self) -> str:
        return f"{str(self.path).removesuffix('.lock')}.standby-"

    def _standby_files(self) -> list[Path]:
        prefix = Path(self._standby_prefix)
        return sorted(prefix.parent.glob(f"{prefix.name}*.lock"))

    def _remove_dead_standbys(self) -> None:
        """Removes the files of standbys that died without removing their own."""
        for path in self._standby_files():
            with contextlib.suppress(OSError), path.open("r") as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Nobody has it.
                path.unlink()

    def standbys(self) -> list[dict[str, Any]]:
        found = []
        for path in self._standby_files():
            try:
                file = path.open("r")
            except FileNotFoundError:
                continue  # It stopped standing by meanwhile.
            with file:
                try:
                    fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except OSError:  # Held: its standby is alive.
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(file.read()))
        return sorted(found, key=lambda standby: str(standby["since"]))

    def holder(self) -> dict[str, Any] | None:
        if self.held:
            return {"pid": os.getpid(), "host": socket.gethostname(), "since": None}
        if not self.path.exists():
            return None
        with self.path.open("r") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pid, _, host = file.read().strip().partition(" ")
                return {
                    "pid": int(pid) if pid.isdigit() else None,
                    "host": host,
                    "since": None,
                }
            fcntl.flock(file, fcntl.LOCK_UN)
        return None


def process_lock(
    datastore: PostgresDatastore | SQLiteDatastore, db_path: str | None, name: str
) -> ProcessLock:
    """The lock for a name on this database, of the kind its backend supports."""
    if isinstance(datastore, PostgresDatastore):
        return AdvisoryLock(datastore, name)
    assert db_path is not None
    return FileLock(Path(f"{db_path}.{name}.lock"), name)
