"""The library's PostgreSQL infrastructure, with retries that give up in bounded time.

The library retries each recorder call ten times on a connection error, and each
attempt may wait POSTGRES_CONNECT_TIMEOUT (30 s by default) for a connection: a
request made while the database is down would hang for minutes. Pocket's
recorders retry once (enough to replace a connection the server dropped), and
Pocket's default connection timeout is a few seconds, so a caller hears 503 soon.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import Environment, EnvType
from psycopg import Connection, Cursor
from psycopg.errors import UndefinedFunction
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal

from pocket.config import (
    COMMIT_TIMEOUT_KEY,
    HOST_CONNECT_TIMEOUT_KEY,
    TARGET_SESSION_ATTRS_KEY,
    commit_timeout,
)
from pocket.deadlines import (
    Watchdog,
    WriteNotConfirmed,
    WritesStalled,
)
from pocket.guards import GuardsBroken, TokenGuard, parse_user_ids
from pocket.pooling import (
    MARKER_HOLDER,
    TAKE_MARKER,
    PoolerProblem,
    ProbeTimedOut,
    check_sessions,
)

# The advisory lock between committing commands (shared, in the insert function)
# and replacing a token (exclusive: pocket.database.Transaction.lock_tokens).
TOKENS_LOCK = "pocket-tokens"

# An insert is tried at most this often; a lost link in between is settled first.
INSERT_ATTEMPTS = 2
# How long to wait for the backend of a lost insert to end.
SETTLE_SECONDS = 5.0
# How long the check that a connection keeps its server process may take
# (pocket.pooling), out of SETTLE_SECONDS.
SESSIONS_CHECK_SECONDS = 2.0
# The connect timeout of the check's own connections, in whole seconds.
SESSIONS_CHECK_CONNECT_TIMEOUT = 2
# The SQLSTATE the insert function raises when a command's guard does not hold.
GUARD_SQLSTATE = "PKG01"
# A small transaction of Pocket's own that writes WAL, so that its commit waits
# for the synchronous standbys as any write's does: once it returns (without a
# WARNING), they have everything committed before it. (txid_current() alone
# would not wait: a transaction that writes no WAL skips the wait.)
CONFIRM_CALL = "pg_logical_emit_message(true, 'pocket', 'confirm')"

# Connection settings Pocket chooses unless the environment says otherwise.
POSTGRES_DEFAULTS = {
    # Also how long a request waits for a free pooled connection.
    "POSTGRES_CONNECT_TIMEOUT": "3",
}
# How long libpq tries each server of the URL before the next, in whole seconds
# (2 is libpq's least), unless the URL's connect_timeout says otherwise. Without
# one, a server that drops packets would hold every new connection for minutes,
# and the servers after it in a multi-host URL would never be tried.
HOST_CONNECT_TIMEOUT = "2"


# A link to a server that has gone silent (a partition, a dead machine) is found
# dead within seconds, not the kernel's minutes to hours: keep-alive probes after
# 3 s of silence, every second, and the link dropped once nothing it sent (data
# or probe) has been acknowledged for 6 s. A read in flight when the link goes
# silent fails within about 6 s; watched writes are interrupted sooner, at the
# commit timeout (see pocket.deadlines).
DEAD_LINK_OPTIONS = {
    "keepalives": 1,
    "keepalives_idle": 3,
    "keepalives_interval": 1,
    "keepalives_count": 3,
    "tcp_user_timeout": 6_000,
}


# The SQLSTATE of a statement refused because the server takes no writes (a
# standby, or a primary fenced read-only by a failover manager): nothing of it
# was done.
READ_ONLY_SQLSTATE = "25006"


def refused_as_read_only(error: BaseException) -> bool:
    """Whether an error, or one that caused it, is a server refusing a write
    because it is read-only."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.Error) and seen.sqlstate == READ_ONLY_SQLSTATE:
            return True
        seen = seen.__cause__
    return False


def once_more(method: Any) -> Any:
    """The library's method without its own retries, retried once on a lost link
    (after the pool has replaced every connection that link's loss broke)."""
    unwrapped: Callable[..., Any] = method.__wrapped__

    @functools.wraps(unwrapped)
    def retried(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return unwrapped(self, *args, **kwargs)
        except (InterfaceError, OperationalError) as error:
            # Within a command whose time is up (see pocket.deadlines), a read
            # that failed is not tried again: the command fails, unmade.
            watchdog: Watchdog | None = getattr(self, "watchdog", None)
            expired = None if watchdog is None else watchdog.expired()
            if expired is not None:
                msg = f"The database did not answer within {expired.seconds:g} s"
                raise WritesStalled(msg) from error
            replace_connections(self.datastore)
            return unwrapped(self, *args, **kwargs)

    return retried


def replace_connections(datastore: PostgresDatastore) -> None:
    """Replaces every pooled connection: idle ones now, those in use when they
    are returned.

    After a lost link (a server restart, a failover, a network cut), which
    breaks every pooled connection at once: without this, each would be found
    broken by a request of its own. They are replaced without being tried:
    trying one on a link that has gone silent (a partition) waits until TCP
    gives up on it, one after another. And after a read-only refusal: the
    server they are connected to refuses every write on each of them, and new
    ones find the primary (with target_session_attrs=read-write, the default of
    a multi-host URL).
    """
    with contextlib.suppress(Exception):
        datastore.pool.drain()


@dataclass(frozen=True)
class Backend:
    """The server process a pooled connection was given, and the marker it took
    for that connection (the objid of a session advisory lock, unique while
    held: see pocket.pooling), which tells it apart from any other."""

    pid: int
    marker: int


class OutcomeUnknown(OperationalError):
    """A write's link was lost and whether it committed cannot be found out now."""

    def __init__(self, backend: Backend, cause: Exception | None) -> None:
        super().__init__(
            f"Lost the link to the database during a write, and could not make "
            f"sure its server process {backend.pid} had ended ({cause})"
        )
        self.backend = backend


class SerializedSchema(PostgresAggregateRecorder):
    """Creates the recorder's tables so that processes starting together on a new
    database all start: the tables under an advisory lock (else both create a
    table's row type and one fails, "type ... already exists"), and once more if
    the library's composite type was created by another process meanwhile (the
    library expects DuplicateObject then, and gets a UniqueViolation)."""

    def create_table(self) -> None:
        try:
            super().create_table()
        except IntegrityError as error:
            if "pg_type_typname_nsp_index" not in str(error):
                raise
            super().create_table()  # The type exists now: skipped this time.

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        curs.execute("SELECT pg_advisory_xact_lock(hashtext('pocket-schema'))")
        super()._create_table(curs)


class AggregateRecorder(SerializedSchema):
    """Snapshots: the library's recorder with bounded retries."""

    # Who bounds commands (the factory's): see once_more.
    watchdog: Watchdog | None = None

    insert_events = once_more(PostgresAggregateRecorder.insert_events)
    select_events = once_more(PostgresAggregateRecorder.select_events)


class ApplicationRecorder(SerializedSchema, PostgresApplicationRecorder):
    """Events: the library's recorder with bounded retries and a one-trip insert.

    The library inserts in psycopg's pipeline mode, in a transaction of several
    round trips, and sends the events as one array of a composite type that
    psycopg encodes row by row in Python. Pocket sends the same work (the table
    lock that keeps notification ids in commit order, the NOTIFY, the INSERT)
    as one call of a database function in one implicit transaction, with the
    events as four arrays of plain types that encode in C: one round trip per
    group commit, and a fraction of the CPU.
    """

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        function = Identifier(datastore.schema, f"{events_table_name}_insert")
        self.check_identifier_length(f"{events_table_name}_insert")
        # With the events, the guards of the commands that made them (users and
        # their token hashes, see pocket.guards), checked first. Under the
        # tokens lock, shared: a token's replacement takes it exclusively (see
        # Transaction.lock_tokens), so it waits for the commits that checked
        # the old token, and every later check, on a snapshot taken after the
        # lock, sees the new one. (Locking the users' rows instead would write
        # each of them once per batch.) A batch with guards and no events only
        # checks them.
        self.create_insert_function_statement = SQL(
            "CREATE OR REPLACE FUNCTION {function}("
            "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
            "guard_users bigint[], guard_hashes text[], "
            "prior_ids {id_type}[], prior_hashes bytea[], answered_ids {id_type}[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ "
            "DECLARE broken bigint[]; BEGIN "
            "IF cardinality(guard_users) > 0 THEN "
            "PERFORM pg_advisory_xact_lock_shared(hashtext({tokens_lock})); "
            "SELECT array_agg(g.id) INTO broken "
            "FROM unnest(guard_users, guard_hashes) AS g(id, token_hash) "
            "LEFT JOIN users AS u ON u.id = g.id "
            "WHERE u.token_hash IS DISTINCT FROM g.token_hash; "
            "IF broken IS NOT NULL THEN RAISE EXCEPTION 'Tokens replaced' "
            "USING ERRCODE = {guard_state}, DETAIL = array_to_string(broken, ','); "
            "END IF; END IF; "
            # Answers read from stored aggregates (keyed commands' earlier
            # results) count only if this server holds them (a process may read
            # one server and write another: two primaries for a moment in a
            # failover) and, once the transaction commits, its synchronous
            # standbys have them too: with nothing to insert, a message in the
            # WAL makes the commit wait for them.
            "IF cardinality(answered_ids) > 0 THEN "
            "IF EXISTS (SELECT 1 FROM unnest(answered_ids) AS a(id) "
            "WHERE NOT EXISTS (SELECT 1 FROM {table} AS e "
            "WHERE e.originator_id = a.id)) THEN "
            "RAISE EXCEPTION 'An answer was read from what this server does not hold' "
            "USING ERRCODE = 'unique_violation'; END IF; "
            "IF cardinality(ids) = 0 THEN PERFORM {confirm_call}; END IF; END IF; "
            "IF cardinality(ids) = 0 THEN RETURN; END IF; "
            "PERFORM set_config('lock_timeout', {timeout}, true); "
            "LOCK TABLE {table} IN EXCLUSIVE MODE; "
            # Each aggregate's first new version must follow the stored event
            # it was decided on: the one whose SHA-256 the caller gives (else,
            # when it knows none, any stored one). A process whose cached
            # wallet holds an event the database lost (a failover) would
            # otherwise decide on money that is not there, and write on top of
            # it, or of another process's event of the same number. Refused as
            # a conflict, the batch is decided again from the wallets as stored.
            "IF EXISTS (SELECT 1 FROM (SELECT n.id, min(n.version) AS version "
            "FROM unnest(ids, versions) AS n(id, version) GROUP BY n.id) AS f "
            "LEFT JOIN unnest(prior_ids, prior_hashes) AS p(id, hash) "
            "ON p.id = f.id "
            "WHERE f.version > 1 AND NOT EXISTS (SELECT 1 FROM {table} AS e "
            "WHERE e.originator_id = f.id "
            "AND e.originator_version = f.version - 1 "
            "AND (p.hash IS NULL OR sha256(e.state) = p.hash))) THEN "
            "RAISE EXCEPTION 'A new version does not follow the stored one' "
            "USING ERRCODE = 'unique_violation'; END IF; "
            "NOTIFY {channel}; "
            "RETURN QUERY INSERT INTO {table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) "
            "RETURNING notification_id; "
            "END $$"
        ).format(
            function=function,
            id_type=Identifier(datastore.originator_id_type),
            guard_state=Literal(GUARD_SQLSTATE),
            tokens_lock=Literal(TOKENS_LOCK),
            timeout=Literal(f"{datastore.lock_timeout}s"),
            table=Identifier(datastore.schema, events_table_name),
            channel=Identifier(self.channel_name),
            confirm_call=SQL(CONFIRM_CALL),
        )
        # Each argument typed: the function's earlier signatures may still be
        # there (a database from before), and untyped empty arrays would not
        # say which one is meant.
        self.insert_call_statement = SQL(
            "SELECT * FROM {function}(%s::{id_type}[], %s::bigint[], %s::text[], "
            "%s::bytea[], %s::bigint[], %s::text[], %s::{id_type}[], %s::bytea[], "
            "%s::{id_type}[]) AS notification_id"
        ).format(function=function, id_type=Identifier(datastore.originator_id_type))
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
        #   would hand the marked process to another client: _terminate
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
        # Whether Pocket may create its insert function (the library's
        # CREATE_TABLE setting, which the factory passes on).
        self.may_create_function = True
        # How long a write may wait for its commit, and who interrupts it then
        # (the factory passes its own on).
        self.commit_timeout = commit_timeout(None)
        self.watchdog = Watchdog()
        self.find_written_statement = SQL(
            "SELECT originator_id, originator_version, notification_id, state "
            "FROM {table} WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::{id_type}[], %s::bigint[]))"
        ).format(
            table=Identifier(datastore.schema, events_table_name),
            id_type=Identifier(datastore.originator_id_type),
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        super()._create_table(curs)  # Under the schema lock (SerializedSchema).
        curs.execute(self.create_insert_function_statement)

    def _create_insert_function(self) -> None:
        """Creates the insert function alone, where tables were made without it."""
        if not self.may_create_function:
            msg = (
                f"The function {self.events_table_name}_insert does not exist and "
                "CREATE_TABLE is off: start Pocket once with CREATE_TABLE on, "
                "which creates Pocket's tables and functions"
            )
            raise ProgrammingError(msg)
        with self.datastore.transaction(commit=True) as curs:
            curs.execute("SELECT pg_advisory_xact_lock(hashtext('pocket-schema'))")
            curs.execute(self.create_insert_function_statement)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Inserts events in one transaction; returns their notification ids.

        Besides the events, kwargs may give: guards (checked first, see
        pocket.guards); priors, the SHA-256 of the stored event each aggregate's
        new events were decided on; and answered, the ids of stored aggregates
        an answer was read from (keyed commands' records), which the server must
        hold, and its synchronous standbys once this commits (see the insert
        function).

        A write is answered only once its commit is confirmed: a commit whose
        wait for the synchronous standby was cut short (by the watchdog, past
        the commit timeout, or by anyone: the server then sends a WARNING) is
        on the primary alone, and raises WriteNotConfirmed.

        A link lost after the statement was sent leaves its outcome unknown: the
        server may have committed before the reply was lost, or may still be
        waiting (for the table lock, or for the standby) and commit later. So
        before anything is looked at or retried, the statement's backend is
        terminated and waited for: once it has gone, its transaction has ended
        one way or the other, for good. Only then does a look at the table say
        whether the events are in; if they are, they count only once the
        standbys are known to have them too (see _already_written); if not, the
        insert is tried once more.
        """
        if kwargs.get("tracking") is not None:
            # Not Pocket's application recorder's job (it records no tracking).
            raise NotImplementedError
        guards: Sequence[TokenGuard] = kwargs.get("guards") or ()
        priors: Mapping[UUID, bytes] = kwargs.get("priors") or {}
        answered: Sequence[UUID] = kwargs.get("answered") or ()
        if not stored_events and not guards and not answered:
            return []
        arrays = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
            [g.user_id for g in guards],
            [g.token_hash for g in guards],
            list(priors),
            list(priors.values()),
            list(answered),
        )
        for attempt in range(1, INSERT_ATTEMPTS + 1):
            in_doubt: list[Backend] = []
            try:
                return self._insert(arrays, in_doubt)
            except (WriteNotConfirmed, WritesStalled):
                raise  # Operational errors, but never to be tried again blind.
            except (InterfaceError, OperationalError):
                if attempt == INSERT_ATTEMPTS:
                    raise
                replace_connections(self.datastore)
                if in_doubt:
                    self._settle(in_doubt[0])
                    written = self._already_written(stored_events)
                    if written is not None:
                        return written
                else:
                    # Refused before it ran (no connection, a lock timeout):
                    # nothing was inserted.
                    time.sleep(0.1)
        raise AssertionError  # pragma: no cover

    def _insert(self, arrays: tuple[Any, ...], in_doubt: list[Backend]) -> list[int]:
        """One call of the insert function, bounded by the commit timeout (or
        the caller's deadline, if sooner: see pocket.deadlines).

        On failure, in_doubt names the backend whose transaction may yet commit:
        the one the call was sent to, unless that backend answered with an error
        (an implicit transaction that fails is rolled back).
        """
        watchdog = self.watchdog
        for attempt in range(2):
            try:
                with (
                    watchdog.deadline(self.commit_timeout),
                    self.datastore.get_connection() as conn,
                ):
                    backend = self._backend_of(conn)
                    expired = watchdog.expired()
                    if expired is not None:
                        # No time left: not sent, so surely not made.
                        msg = (
                            f"The database did not answer within {expired.seconds:g} s"
                        )
                        raise WritesStalled(msg)
                    with watchdog.write(conn):
                        try:
                            with conn.cursor() as curs:
                                curs.execute(
                                    self.insert_call_statement, arrays, prepare=True
                                )
                                rows = curs.fetchall()
                        except psycopg.Error as error:
                            if error.sqlstate == GUARD_SQLSTATE:
                                # Refused before anything was written.
                                users = parse_user_ids(error.diag.message_detail)
                                raise GuardsBroken(users) from None
                            if conn.broken or conn.closed:
                                in_doubt.append(backend)
                            raise
                    return [row["notification_id"] for row in rows]
            except ProgrammingError as error:
                # The server refused the call before running it: nothing was
                # inserted. Tables made without Pocket lack the function.
                if attempt or not isinstance(error.__cause__, UndefinedFunction):
                    raise
            self._create_insert_function()
        raise AssertionError  # pragma: no cover

    def _backend_of(self, conn: Connection[Any]) -> Backend:
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

    def _terminate(self, conn: Connection[Any], backend: Backend) -> Any:
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

    def _settle(self, backend: Backend) -> None:
        """Ends the backend a lost statement went to, and waits until it is gone.

        Raises OutcomeUnknown when that cannot be done (the server cannot be
        reached, or the backend does not go) within SETTLE_SECONDS, or by the
        deadline of the command it is for, if that comes first.
        """
        deadline = time.monotonic() + SETTLE_SECONDS
        command = self.watchdog.current()
        if command is not None:
            deadline = min(deadline, command.at)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with self.datastore.get_connection() as conn:
                    while time.monotonic() < deadline:
                        row = self._terminate(conn, backend)
                        if row is None:
                            return
                        time.sleep(0.02)
            except PersistenceError as error:
                last = error
                time.sleep(0.1)
        raise OutcomeUnknown(backend, last)

    def _already_written(
        self, stored_events: Sequence[StoredEvent]
    ) -> list[int] | None:
        """The batch's notification ids if it was committed; None if not.

        Found, they count only once the synchronous standbys are known to have
        them: the transaction that finds them also writes a message to the WAL,
        so its commit waits for the standbys, on the very server that holds
        them (raises WriteNotConfirmed past the commit timeout). Raises
        IntegrityError if another writer holds some of its versions.
        """
        watchdog = self.watchdog
        with (
            watchdog.deadline(self.commit_timeout),
            self.datastore.get_connection() as conn,
            watchdog.write(conn),
            conn.transaction(),
            conn.cursor() as curs,
        ):
            curs.execute(
                self.find_written_statement,
                (
                    [e.originator_id for e in stored_events],
                    [e.originator_version for e in stored_events],
                ),
            )
            rows = {
                (row["originator_id"], row["originator_version"]): row
                for row in curs.fetchall()
            }
            if rows:
                curs.execute(f"SELECT {CONFIRM_CALL}")
        if not rows:
            return None
        found = [
            rows.get((e.originator_id, e.originator_version)) for e in stored_events
        ]
        ids = [
            int(row["notification_id"])
            for row, event in zip(found, stored_events, strict=True)
            if row is not None and bytes(row["state"]) == event.state
        ]
        if len(ids) == len(stored_events):
            return ids
        msg = "Another writer recorded some of these versions"
        raise IntegrityError(msg)

    select_events = once_more(PostgresAggregateRecorder.select_events)
    select_notifications = once_more(PostgresApplicationRecorder.select_notifications)
    max_notification_id = once_more(PostgresApplicationRecorder.max_notification_id)


def libpq_options(env: Mapping[str, str]) -> dict[str, Any]:
    """The libpq parameters Pocket adds to the library's (dbname, host, port,
    user, password): the URL's target_session_attrs, if any, connect_timeout, and
    TCP settings that find a dead link within seconds. Pocket's own variables,
    see pocket.config."""
    get = env.get
    options: dict[str, Any] = {
        "connect_timeout": int(get(HOST_CONNECT_TIMEOUT_KEY) or HOST_CONNECT_TIMEOUT),
        **DEAD_LINK_OPTIONS,
    }
    attrs = get(TARGET_SESSION_ATTRS_KEY)
    if attrs:
        options["target_session_attrs"] = attrs
    return options


class Factory(PostgresFactory):
    """The library's PostgreSQL factory, building Pocket's recorders."""

    aggregate_recorder_class = AggregateRecorder
    application_recorder_class = ApplicationRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        """The library's datastore, its pool's connections given Pocket's libpq
        options too: with target_session_attrs=read-write each new connection
        goes to whichever server of a multi-host URL is the primary now.
        Pocket's own connections (locks, LISTEN, probes) copy the pool's
        settings (connect_kwargs), so they follow it as well."""
        super().__init__(env)
        kwargs = self.datastore.pool.kwargs
        assert isinstance(kwargs, dict)
        kwargs.update(libpq_options(self.env))
        # Shared by the recorder and Pocket's own tables (pocket.database).
        self.commit_timeout = commit_timeout(self.env.get(COMMIT_TIMEOUT_KEY))
        self.watchdog = Watchdog()
        bound_connections(self.datastore, self.watchdog)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        """The snapshots recorder, told who bounds commands: its reads are not
        tried again once a command's deadline has passed (see once_more)."""
        recorder = super().aggregate_recorder(purpose)
        assert isinstance(recorder, AggregateRecorder)
        recorder.watchdog = self.watchdog
        return recorder

    def application_recorder(self) -> ApplicationRecorder:
        """The events recorder, told whether it may create its insert function,
        how long a write may wait for its commit, and who interrupts it then."""
        recorder = super().application_recorder()
        assert isinstance(recorder, ApplicationRecorder)
        recorder.may_create_function = self.env_create_table()
        recorder.commit_timeout = self.commit_timeout
        recorder.watchdog = self.watchdog
        return recorder


def bound_connections(datastore: PostgresDatastore, watchdog: Watchdog) -> None:
    """Makes every connection the datastore hands out (the library's reads and
    writes, and Pocket's) watched until its thread's deadline, if it has one:
    a command's work (its reads, its insert) is bounded by the commit timeout
    as a whole (see pocket.deadlines). The library has no hook for this, so its
    get_connection is wrapped, on this datastore alone."""
    take = datastore.get_connection

    @contextlib.contextmanager
    def get_connection() -> Iterator[Connection[DictRow]]:
        with take() as conn, watchdog.bound(conn):
            yield conn

    datastore.get_connection = get_connection  # type: ignore[method-assign]


def connect_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """The library pool's connection settings, for a connection of one's own
    (LISTEN, an advisory lock, a probe): the same servers, database, user and
    target_session_attrs, with psycopg's default rows; the caller gives its own
    connect_timeout."""
    pool_kwargs = datastore.pool.kwargs
    assert isinstance(pool_kwargs, dict)
    mine = ("row_factory", "connect_timeout")
    return {k: v for k, v in pool_kwargs.items() if k not in mine}


def latest_states_statement(
    datastore: PostgresDatastore, events_table: str, snapshots_table: str
) -> Composed:
    """One statement for many aggregates' current states: each one's latest
    snapshot (kind 0) and its events from the snapshot's own on (kind 1), in
    order. The event the snapshot was taken at is read for its identity (the
    aggregate's head, see pocket.groupcommit), not applied again."""
    # LATERAL subqueries, so that each aggregate's latest snapshot and its
    # events after it are found by index ranges, however long its history.
    return SQL(
        "WITH snap AS (SELECT i.id AS originator_id, s.originator_version, "
        "s.topic, s.state FROM unnest(%(ids)s::{id_type}[]) AS i(id) "
        "LEFT JOIN LATERAL (SELECT originator_version, topic, state "
        "FROM {snapshots} WHERE originator_id = i.id "
        "ORDER BY originator_version DESC LIMIT 1) AS s ON true) "
        "SELECT 0 AS kind, originator_id, originator_version, topic, state "
        "FROM snap WHERE originator_version IS NOT NULL "
        "UNION ALL "
        "SELECT 1, e.originator_id, e.originator_version, e.topic, e.state "
        "FROM snap CROSS JOIN LATERAL (SELECT originator_id, originator_version, "
        "topic, state FROM {events} WHERE originator_id = snap.originator_id "
        "AND originator_version >= coalesce(snap.originator_version, 0)) AS e "
        "ORDER BY originator_id, kind, originator_version"
    ).format(
        id_type=Identifier(datastore.originator_id_type),
        snapshots=Identifier(datastore.schema, snapshots_table),
        events=Identifier(datastore.schema, events_table),
    )


def newer_events_statement(datastore: PostgresDatastore, events_table: str) -> Composed:
    """One statement for many aggregates' events from the versions given on: the
    event at the version given is read for its identity (is it the one the
    caller holds?), the ones after it to be applied."""
    return SQL(
        "SELECT e.originator_id, e.originator_version, e.topic, e.state "
        "FROM unnest(%(ids)s::{id_type}[], %(versions)s::bigint[]) AS k(id, version) "
        "CROSS JOIN LATERAL (SELECT originator_id, originator_version, topic, state "
        "FROM {events} WHERE originator_id = k.id "
        "AND originator_version >= k.version) AS e "
        "ORDER BY e.originator_id, e.originator_version"
    ).format(
        id_type=Identifier(datastore.originator_id_type),
        events=Identifier(datastore.schema, events_table),
    )
