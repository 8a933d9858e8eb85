"""The library's PostgreSQL infrastructure, with retries that give up in bounded time.

The library retries each recorder call ten times on a connection error, and each
attempt may wait POSTGRES_CONNECT_TIMEOUT (30 s by default) for a connection: a
request made while the database is down would hang for minutes. Pocket's
recorders retry once (enough to replace a connection the server dropped), and
Pocket's default connection timeout is a few seconds, so a caller hears 503 soon.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
)
from eventsourcing.utils import retry
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

F = TypeVar("F", bound=Callable[..., Any])

# Connection settings Pocket chooses unless the environment says otherwise.
POSTGRES_DEFAULTS = {
    # Also how long a request waits for a free pooled connection.
    "POSTGRES_CONNECT_TIMEOUT": "3",
    # Checks a pooled connection before use, so one the server dropped during a
    # restart is replaced instead of failing a request.
    "POSTGRES_PRE_PING": "y",
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
    """Events: the library's recorder with bounded retries and a faster insert."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_arrays_statement = SQL(
            "INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%s::{id_type}[], %s::bigint[], %s::text[], "
            "%s::bytea[]) RETURNING notification_id"
        ).format(
            schema=Identifier(datastore.schema),
            table=Identifier(events_table_name),
            id_type=Identifier(datastore.originator_id_type),
        )

    def _insert_stored_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any
    ) -> None:
        # The library sends one array of a composite type, which psycopg encodes
        # row by row in Python; four arrays of plain types encode in C, which is
        # most of a batch's insert time saved. Same table lock, same NOTIFY.
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self.insert_arrays_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
        )

    insert_events = once_more(PostgresApplicationRecorder.insert_events)
    select_events = once_more(PostgresAggregateRecorder.select_events)
    select_notifications = once_more(PostgresApplicationRecorder.select_notifications)
    max_notification_id = once_more(PostgresApplicationRecorder.max_notification_id)


class Factory(PostgresFactory):
    """The library's PostgreSQL factory, building Pocket's recorders."""

    aggregate_recorder_class = AggregateRecorder
    application_recorder_class = ApplicationRecorder
