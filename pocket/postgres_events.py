"""Pocket's events and snapshots recorders on PostgreSQL: a one-trip insert that
checks what the events were decided on, and a lost insert settled before
anything is retried."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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
)
from psycopg import Cursor
from psycopg.errors import UndefinedFunction
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from pocket.config import (
    commit_timeout,
)
from pocket.deadlines import (
    Watchdog,
    WriteNotConfirmed,
    WritesStalled,
)
from pocket.guards import GuardsBroken, TokenGuard, parse_user_ids
from pocket.postgres_pool import once_more, replace_connections
from pocket.postgres_processes import Backend, ServerProcesses

# The advisory lock between committing commands (shared, in the insert function)
# and replacing a token (exclusive: pocket.database.Transaction.lock_tokens).

# The advisory lock between committing commands (shared, in the insert function)
# and replacing a token (exclusive: pocket.database.Transaction.lock_tokens).
TOKENS_LOCK = "pocket-tokens"

# An insert is tried at most this often; a lost link in between is settled first.
INSERT_ATTEMPTS = 2

# How long to wait for the backend of a lost insert to end.
SETTLE_SECONDS = 5.0

# The SQLSTATE the insert function raises when a command's guard does not hold.
GUARD_SQLSTATE = "PKG01"

# A small transaction of Pocket's own that writes WAL, so that its commit waits
# for the synchronous standbys as any write's does: once it returns (without a
# WARNING), they have everything committed before it. (txid_current() alone
# would not wait: a transaction that writes no WAL skips the wait.)
CONFIRM_CALL = "pg_logical_emit_message(true, 'pocket', 'confirm')"


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


class SnapshotsRecorder(SerializedSchema):
    """Snapshots: the library's recorder with bounded retries."""

    # Who bounds commands (the factory's): see once_more.
    watchdog: Watchdog | None = None

    insert_events = once_more(PostgresAggregateRecorder.insert_events)
    select_events = once_more(PostgresAggregateRecorder.select_events)


class PocketEventsRecorder(SerializedSchema, PostgresApplicationRecorder):
    """Events: the library's recorder with bounded retries and a one-trip insert.

    The library inserts in psycopg's pipeline mode, in a transaction of several
    round trips, and sends the events as one array of a composite type that
    psycopg encodes row by row in Python. Pocket sends the same work (the table
    lock that keeps notification ids in commit order, the NOTIFY, the INSERT)
    as one call of a database function in one implicit transaction, with the
    events as four arrays of plain types that encode in C: one round trip per
    group commit, and a fraction of the CPU.
    """

    # Whether this recorder refuses events that do not follow a stored one (the
    # insert function also checks the one they were decided on).
    checks_follows = True

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
        # Whether Pocket may create its insert function (the library's
        # CREATE_TABLE setting, which the factory passes on).
        self.may_create_function = True
        # Which server process each pooled connection talks to, to end the one
        # a lost statement went to.
        self.processes = ServerProcesses(datastore)
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
                    backend = self.processes.of(conn)
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
                        row = self.processes.end(conn, backend)
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
