"""The library's PostgreSQL infrastructure, with retries that give up in bounded time.

The library retries each recorder call ten times on a connection error, and each
attempt may wait POSTGRES_CONNECT_TIMEOUT (30 s by default) for a connection: a
request made while the database is down would hang for minutes. Pocket's
recorders retry once (enough to replace a connection the server dropped), and
Pocket's default connection timeout is a few seconds, so a caller hears 503 soon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from eventsourcing.utils import retry

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
    """Events: the library's recorder with bounded retries."""

    insert_events = once_more(PostgresApplicationRecorder.insert_events)
    select_events = once_more(PostgresAggregateRecorder.select_events)
    select_notifications = once_more(PostgresApplicationRecorder.select_notifications)
    max_notification_id = once_more(PostgresApplicationRecorder.max_notification_id)


class Factory(PostgresFactory):
    """The library's PostgreSQL factory, building Pocket's recorders."""

    aggregate_recorder_class = AggregateRecorder
    application_recorder_class = ApplicationRecorder
