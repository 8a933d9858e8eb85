"""Locks held by a process for as long as it lives: one active follower, one migration.

On PostgreSQL, a session advisory lock on a connection of its own: the server
releases it the moment the process dies, even by kill -9. On SQLite, an flock on
a file beside the database, which the kernel releases the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import IO, Any

import psycopg
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from pocket.database import connect_kwargs


class ProcessLock(ABC):
    """A named lock that at most one process holds, released when it dies."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held = False

    @abstractmethod
    def try_acquire(self) -> bool:
        """Takes the lock if nobody holds it; never waits."""

    @abstractmethod
    def is_still_held(self) -> bool:
        """Whether the lock is still ours (a dropped connection loses it)."""

    @abstractmethod
    def release(self) -> None:
        """Gives the lock up."""

    @abstractmethod
    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock (pid, host, since), or None when nobody does."""

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

    def try_acquire(self) -> bool:
        if self.held and self.is_still_held():
            return True
        self.release()
        try:
            self.conn = psycopg.connect(
                autocommit=True,
                connect_timeout=5,
                application_name=f"pocket {self.name} pid={os.getpid()}"[:63],
                **self.connect_kwargs,
            )
            row = self.conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", self.key
            ).fetchone()
        except psycopg.Error:
            self.release()
            return False
        self.held = bool(row and row[0])
        if not self.held:
            self.release()
        return self.held

    def is_still_held(self) -> bool:
        if self.conn is None or not self.held:
            return False
        try:
            self.conn.execute("SELECT 1")
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        self.held = False
        if self.conn is not None:
            # Closing the session releases the lock with it.
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None

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
        pid_text = str(row[1]).rpartition("pid=")[2]
        return {
            "pid": int(pid_text) if pid_text.isdigit() else None,
            "host": str(row[2]) if row[2] is not None else "local",
            "since": row[3].isoformat(),
        }


class FileLock(ProcessLock):
    """An exclusive flock on a file beside an SQLite database."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(name)
        self.path = path
        self.file: IO[str] | None = None

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
        return True

    def is_still_held(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False
        if self.file is not None:
            self.file.close()  # Closing the file releases the flock.
            self.file = None

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
