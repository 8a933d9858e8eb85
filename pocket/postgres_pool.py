"""How Pocket connects to PostgreSQL: the libpq options it adds, connections
replaced after a lost link, and reads retried once, never ten times.

The library retries each recorder call ten times on a connection error, and each
attempt may wait POSTGRES_CONNECT_TIMEOUT (30 s by default) for a connection: a
request made while the database is down would hang for minutes. Pocket's
recorders retry once (enough to replace a connection the server dropped), and
Pocket's default connection timeout is a few seconds, so a caller hears 503 soon.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
)
from eventsourcing.postgres import (
    PostgresDatastore,
)
from psycopg import Connection
from psycopg.rows import DictRow

from pocket.config import (
    HOST_CONNECT_TIMEOUT_KEY,
    TARGET_SESSION_ATTRS_KEY,
)
from pocket.deadlines import (
    Watchdog,
    WritesStalled,
)

# The advisory lock between committing commands (shared, in the insert function)
# and replacing a token (exclusive: pocket.database.Transaction.lock_tokens).

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
