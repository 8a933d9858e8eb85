"""Reads that may be a little stale, from a replica: POCKET_READ_URL.

The admin list of users, the operator console's list and `pocket verify` read a
lot and need nothing newer than a moment ago, so they may go to a standby and
spare the primary. Everything else (commands, their answers, a user's own
wallet and history, tokens) reads the primary, so that a client always reads
its own writes.

A standby is only as fresh as the WAL it has replayed. Each process asks it how
far behind it is (at most once a second); while it is more than
POCKET_READ_MAX_LAG_SECONDS behind, or it cannot say (its link to the primary is
down), or it fails to answer, those reads go to the primary instead. A standby
that failed is left alone for a few seconds, so that a dead one costs a request
one connect timeout, not every request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import Environment
from psycopg.rows import dict_row

from pocket.config import Settings
from pocket.database import Database
from pocket.postgres import PocketPostgresFactory
from pocket.postgres_pool import POSTGRES_DEFAULTS, connect_kwargs, libpq_options
from pocket.preflight import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often a process asks the read server how far behind it is.
PROBE_SECONDS = 1.0
# How long a read server that failed is left alone.
COOLDOWN_SECONDS = 5.0
# The read pool: a few connections are enough for reads that are not on the
# request path of money. Each lives a minute at most, so that connections that
# prefer-standby put on the primary (the standbys were down) move back soon.
READ_POOL = {
    "POSTGRES_POOL_SIZE": "1",
    "POSTGRES_MAX_OVERFLOW": "3",
    "POSTGRES_CONN_MAX_AGE": "60",
}

# Which server answered, whether it is a standby, and how many seconds of the
# primary's commits it has not replayed yet: 0 when it has replayed all it
# received and is streaming; NULL when it is a standby with no link to the
# primary (it cannot know what it is missing). The WAL receiver's row is
# visible to any role (its details are not), which is all this asks of it.
PROBE = """
SELECT host(inet_server_addr()) AS host, inet_server_port() AS port,
       pg_is_in_recovery() AS standby,
       CASE
         WHEN NOT pg_is_in_recovery() THEN 0.0
         WHEN NOT EXISTS (SELECT 1 FROM pg_stat_wal_receiver) THEN NULL
         WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0
         ELSE greatest(0.0, extract(epoch FROM
                now() - pg_last_xact_replay_timestamp()))::float8
       END AS lag_seconds
"""


@dataclass(frozen=True)
class ReadServer:
    """What the read server said about itself."""

    host: str
    port: int
    standby: bool
    # None: a standby that has lost its primary, so nobody knows.
    lag_seconds: float | None

    @property
    def where(self) -> str:
        """host:port."""
        return f"{self.host}:{self.port}"


class Reads:
    """Runs reads that may be a little stale on the read server while it keeps
    up, and on the primary otherwise (or when no read server is configured)."""

    def __init__(
        self,
        primary: Database,
        replica: Database | None = None,
        *,
        max_lag: float = 10.0,
        description: str = "",
        connect_timeout: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag = max_lag
        self.description = description
        self.clock = clock
        self.server: ReadServer | None = None
        # Why reads go to the primary now, and what kind of reason that is.
        self.problem: str | None = None
        self.kind: str | None = None
        self.probed_at = float("-inf")
        self.down_until = 0.0
        self._probing = threading.Lock()
        # The probe's own connection: its failures say PostgreSQL's reason
        # (the pool's only say it could not get a connection), within libpq's
        # connect_timeout for each server of the read URL.
        self._probe_conn: psycopg.Connection[Any] | None = None
        self.connect_timeout = connect_timeout

    @classmethod
    def open(cls, settings: Settings, primary: Database) -> Reads:
        """The reads of a service: on POCKET_READ_URL's server when set. Opening
        connects to nothing; the first read does."""
        if settings.read_env is None:
            return cls(primary)
        env = {**POSTGRES_DEFAULTS, **READ_POOL, **settings.read_env}
        datastore = PocketPostgresFactory(Environment(env=env)).datastore
        return cls(
            primary,
            Database(datastore),
            max_lag=settings.read_max_lag_seconds,
            description=settings.read_description,
            connect_timeout=libpq_options(env)["connect_timeout"],
        )

    def run(self, read: Callable[[Database], T], *, any_lag: bool = False) -> T:
        """The read's result from the read server if it may serve it now, else
        from the primary. any_lag: the read is consistent at whatever point the
        server has reached (it reads one snapshot and says which), so only a
        server that fails sends it to the primary."""
        replica = self.usable(any_lag=any_lag)
        if replica is not None:
            try:
                return read(replica)
            except (PersistenceError, psycopg.Error) as error:
                self._failed(error)
        return read(self.primary)

    def usable(self, *, any_lag: bool = False) -> Database | None:
        """The read server's database if reads may go there now, else None."""
        if self.replica is None or self.clock() < self.down_until:
            return None
        if self.clock() - self.probed_at >= PROBE_SECONDS:
            self._probe()
        server = self.server
        if server is None:
            return None
        if any_lag or (
            server.lag_seconds is not None and server.lag_seconds <= self.max_lag
        ):
            return self.replica
        return None

    def state(self) -> dict[str, Any] | None:
        """Where the stale-tolerant reads go now, for `pocket status` and the
        console; None when no read server is configured."""
        if self.replica is None:
            return None
        serving = self.usable() is not None
        server = self.server
        return {
            "url": self.description,
            "server": None if server is None else server.where,
            "standby": None if server is None else server.standby,
            "lag_seconds": None if server is None else server.lag_seconds,
            "max_lag_seconds": self.max_lag,
            "served_by": "read server" if serving else "primary",
            "problem": None if serving else self.problem,
        }

    def close(self) -> None:
        """Closes the read server's connections."""
        self._close_probe()
        if self.replica is not None and isinstance(
            self.replica.datastore, PostgresDatastore
        ):
            self.replica.datastore.close()

    def _probe(self) -> None:
        # One thread asks; the others use what the last probe found meanwhile.
        if not self._probing.acquire(blocking=False):
            return
        try:
            try:
                row = self._probe_connection().execute(PROBE).fetchone()
            except psycopg.Error as error:
                self._close_probe()
                self._failed(error)
                return
            assert row is not None
            self.probed_at = self.clock()
            server = ReadServer(
                row["host"] or "local",
                int(row["port"] or 0),
                bool(row["standby"]),
                None if row["lag_seconds"] is None else float(row["lag_seconds"]),
            )
            self._judge(server)
        finally:
            self._probing.release()

    def _probe_connection(self) -> psycopg.Connection[Any]:
        conn = self._probe_conn
        if conn is None or conn.closed:
            assert self.replica is not None
            assert isinstance(self.replica.datastore, PostgresDatastore)
            conn = self._probe_conn = psycopg.connect(
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self.connect_timeout,
                application_name=f"pocket read probe pid={os.getpid()}",
                **connect_kwargs(self.replica.datastore),
            )
        return conn

    def _close_probe(self) -> None:
        conn, self._probe_conn = self._probe_conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _judge(self, server: ReadServer) -> None:
        if server.lag_seconds is None:
            self._tell(
                "unlinked",
                f"the read server {server.where} has lost its link to the "
                "primary, so how far behind it is is unknown",
            )
        elif server.lag_seconds > self.max_lag:
            self._tell(
                "behind",
                f"the read server {server.where} is {server.lag_seconds:.1f} s "
                f"behind (POCKET_READ_MAX_LAG_SECONDS={self.max_lag:g})",
            )
        else:
            self._tell(None, None)
        self.server = server

    def _failed(self, error: BaseException) -> None:
        self.server = None
        self.down_until = self.clock() + COOLDOWN_SECONDS
        self.probed_at = float("-inf")  # Asked again once the cooldown ends.
        # libpq's first line says why; the lines after it repeat it for each
        # address tried, with hints.
        first = (str(error).strip().splitlines() or [""])[0]
        reason = one_line(first.removeprefix("connection failed: "))
        self._tell("failed", f"the read server failed ({reason})")
        if self.replica is not None:
            self.replica.replace_broken_connections()

    def _tell(self, kind: str | None, problem: str | None) -> None:
        """Keeps why reads go to the primary; logs each change of kind once."""
        if kind != self.kind:
            if problem is None:
                log.info("Reads that may lag go to the read server again")
            else:
                log.warning("Reads that may lag go to the primary: %s", problem)
        self.kind = kind
        self.problem = problem
