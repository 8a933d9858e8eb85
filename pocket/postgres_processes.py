"""Which server process each of Pocket's pooled connections talks to, and ending
the one a lost statement went to, only if it is still that connection's: a
write whose reply was lost is settled by ending its server process (see
pocket.postgres_events), which must never be another client's."""

from __future__ import annotations

import secrets
import weakref
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore
from psycopg import Connection
from psycopg.sql import SQL

from pocket.pooling import (
    MARKER_HOLDER,
    TAKE_MARKER,
    PoolerProblem,
    ProbeTimedOut,
    check_sessions,
)
from pocket.postgres_pool import connect_kwargs

# How long the check that a connection keeps its server process may take
# (pocket.pooling), out of SETTLE_SECONDS.
SESSIONS_CHECK_SECONDS = 2.0

# The connect timeout of the check's own connections, in whole seconds.
SESSIONS_CHECK_CONNECT_TIMEOUT = 2


@dataclass(frozen=True)
class Backend:
    """The server process a pooled connection was given, and the marker it took
    for that connection (the objid of a session advisory lock, unique while
    held: see pocket.pooling), which tells it apart from any other."""

    pid: int
    marker: int


class ServerProcesses:
    """The server processes behind a datastore's pooled connections."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        # Asks which server process a pooled connection talks to, and has it
        # take a marker: a session advisory lock on a key drawn for that
        # connection, taken only if nobody holds it (so that while it is held,
        # no other session holds the same one).
        self.mark_statement = SQL(
            f"SELECT pg_backend_pid() AS pid, {TAKE_MARKER} AS marked"
        )
        # Ends the server process that holds a connection's marker, and says
        # whether one still did. Why the holder can only be the server process
        # a lost statement of that connection went to, in the same session:
        # - The marker is unique (above), and a session holds it from the
        #   connection's first use until the session ends (pg_locks forgets
        #   it only once its transaction has ended and its locks are gone).
        # - With no pooler, a server process serves one connection for life.
        #   Through a pooler, it serves one client connection for that
        #   connection's life only in session mode, and the pooler resets it
        #   before another client gets it (DISCARD ALL), which releases the
        #   marker: a server process handed on holds no marker of Pocket's
        #   connection. A pooler per transaction (or one that does not reset)
        #   would hand the marked process to another client: end()
        #   first checks, once, that the connections keep their server
        #   process (pocket.pooling), and ends nothing if they do not. So do
        #   Pocket's commands at start (pocket.preflight).
        # - The look at pg_locks and the signal are one statement, a moment
        #   apart; a pooler that let the process go in between would first
        #   have to reset it and then hand it over, each a round trip to it.
        # Its pid and backend_start would not do: through a pooler, the
        # process a connection was first given may serve another client now.
        # The pid too: after a failover the settle may run on another server,
        # where the marker's number could be another process's.
        self.terminate_statement = SQL(
            f"SELECT pg_terminate_backend(pid) FROM ({MARKER_HOLDER}) AS holder "
            "WHERE pid = %s"
        )
        self._backends: weakref.WeakKeyDictionary[Connection[Any], Backend] = (
            weakref.WeakKeyDictionary()
        )
        # Why the connections cannot be shown to keep their server process
        # (pocket.pooling), once found; None while that is not known to fail.
        self._sessions_problem: str | None = None
        self._sessions_checked = False

    def of(self, conn: Connection[Any]) -> Backend:
        """Which server process a pooled connection talks to, marked as that
        connection's (asked once per connection)."""
        backend = self._backends.get(conn)
        while backend is None:
            marker = secrets.randbelow(2**31)
            row = conn.execute(self.mark_statement, [marker]).fetchone()
            assert row is not None
            if row["marked"]:  # Else another session holds that key: draw again.
                backend = Backend(int(row["pid"]), marker)
                self._backends[conn] = backend
        return backend

    def end(self, conn: Connection[Any], backend: Backend) -> Any:
        """Ends the server process that a connection's lost statement went to,
        if it still serves that connection; a row while it was still there.

        Raises OperationalError, and ends nothing, unless the connections are
        known to keep their server process (see terminate_statement).
        """
        self._check_sessions()
        params = [backend.marker, backend.pid]
        return conn.execute(self.terminate_statement, params).fetchone()

    def _check_sessions(self) -> None:
        """Raises OperationalError unless Pocket's connections to this database
        have been found to keep their server process (asked at most once while
        it holds; a pooler's refusal is remembered)."""
        if self._sessions_checked:
            return
        if self._sessions_problem is None:
            try:
                check_sessions(self._own_connection, SESSIONS_CHECK_SECONDS)
            except PoolerProblem as problem:
                self._sessions_problem = f"the database {problem}"
            except (ProbeTimedOut, psycopg.Error) as error:
                msg = (
                    "Could not make sure that connections keep their server "
                    f"process ({type(error).__name__}: {error})"
                )
                raise OperationalError(msg) from None
            else:
                self._sessions_checked = True
                return
        msg = (
            "Cannot tell which server process a lost write went to: "
            f"{self._sessions_problem}"
        )
        raise OperationalError(msg)

    def _own_connection(self) -> Connection[Any]:
        """A connection outside the pool, as the pool makes them."""
        return psycopg.connect(
            autocommit=True,
            connect_timeout=SESSIONS_CHECK_CONNECT_TIMEOUT,
            **connect_kwargs(self.datastore),
        )
