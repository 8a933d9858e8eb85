"""The library's PostgreSQL infrastructure, with retries that give up in bounded time.

The library retries each recorder call ten times on a connection error, and each
attempt may wait POSTGRES_CONNECT_TIMEOUT (30 s by default) for a connection: a
request made while the database is down would hang for minutes. Pocket's
recorders retry once (enough to replace a connection the server dropped), and
Pocket's default connection timeout is a few seconds, so a caller hears 503 soon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.errors import UndefinedFunction
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

# Connection settings Pocket chooses unless the environment says otherwise.
POSTGRES_DEFAULTS = {
    # Also how long a request waits for a free pooled connection.
    "POSTGRES_CONNECT_TIMEOUT": "3",
}


def once_more(method: Any) -> Any:
    """The library's method without its own retries, retried once on a lost link."""
    unwrapped: Callable[..., Any] = method.__wrapped__
    retried: Callable[..., Any] = retry(
        (InterfaceError, OperationalError), max_attempts=2, wait=0.1
    )(unwrapped)
    return retried


class AggregateRecorder(PostgresAggregateRecorder):
    """Snapshots: the library's recorder with bounded retries."""

    insert_events = once_more(PostgresAggregateRecorder.insert_events)
    select_events = once_more(PostgresAggregateRecorder.select_events)


class ApplicationRecorder(PostgresApplicationRecorder):
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
        self.create_insert_function_statement = SQL(
            "CREATE OR REPLACE FUNCTION {function}("
            "ids {id_type}[], versions bigint[], topics text[], states bytea[]) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM set_config('lock_timeout', {timeout}, true); "
            "LOCK TABLE {table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY INSERT INTO {table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(ids, versions, topics, states) "
            "RETURNING notification_id; "
            "END $$"
        ).format(
            function=function,
            id_type=Identifier(datastore.originator_id_type),
            timeout=Literal(f"{datastore.lock_timeout}s"),
            table=Identifier(datastore.schema, events_table_name),
            channel=Identifier(self.channel_name),
        )
        self.insert_call_statement = SQL(
            "SELECT * FROM {function}(%s, %s, %s, %s) AS notification_id"
        ).format(function=function)
        self.find_written_statement = SQL(
            "SELECT originator_id, originator_version, notification_id, state "
            "FROM {table} WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::{id_type}[], %s::bigint[]))"
        ).format(
            table=Identifier(datastore.schema, events_table_name),
            id_type=Identifier(datastore.originator_id_type),
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # Serialized, so that processes starting together do not collide.
        curs.execute("SELECT pg_advisory_xact_lock(hashtext('pocket-schema'))")
        super()._create_table(curs)
        curs.execute(self.create_insert_function_statement)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Inserts events in one transaction; returns their notification ids.

        A link lost during the insert leaves its outcome unknown: the server may
        have committed before the reply was lost. So, unlike the library, this
        does not simply insert again (which would fail on the rows it had
        written, and be taken for another writer's conflict): it first looks.
        """
        if kwargs.get("tracking") is not None:
            # Not Pocket's application recorder's job (it records no tracking).
            raise NotImplementedError
        if not stored_events:
            return []
        try:
            return self._insert(stored_events)
        except (InterfaceError, OperationalError):
            time.sleep(0.1)
            written = self._already_written(stored_events)
            if written is not None:
                return written
            return self._insert(stored_events)

    def _insert(self, stored_events: Sequence[StoredEvent]) -> list[int]:
        arrays = (
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(self.insert_call_statement, arrays, prepare=True)
                return [row["notification_id"] for row in curs.fetchall()]
        except ProgrammingError as error:
            if not isinstance(error.__cause__, UndefinedFunction):
                raise
        # Tables made with the library's CREATE_TABLE=no lack the function.
        with self.datastore.transaction(commit=True) as curs:
            self._create_table(curs)
        return self._insert(stored_events)

    def _already_written(
        self, stored_events: Sequence[StoredEvent]
    ) -> list[int] | None:
        """The batch's notification ids if it was committed; None if not.

        Raises IntegrityError if another writer holds some of its versions.
        """
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
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


class Factory(PostgresFactory):
    """The library's PostgreSQL factory, building Pocket's recorders."""

    aggregate_recorder_class = AggregateRecorder
    application_recorder_class = ApplicationRecorder
