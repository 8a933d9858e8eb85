"""Pocket's own tables (users, projections) over the library's datastores.

The eventsourcing library already owns a connection pool for the event store, and
translates each driver's errors into its own exception classes. Pocket's tables
use that same pool, so this module only adds what the library does not have: one
way to run a statement on either PostgreSQL or SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from pocket.config import DEFAULT_COMMIT_TIMEOUT
from pocket.deadlines import CHECK_FIRST, Watchdog
from pocket.postgres_events import TOKENS_LOCK
from pocket.postgres_pool import replace_connections

Row = dict[str, Any]
Dialect = Literal["postgres", "sqlite"]


class UnsupportedStore(RuntimeError):
    """The application's store has no SQL (POPO): Pocket's tables need one."""


class Database:
    """Runs SQL written in PostgreSQL's placeholder style on either database."""

    def __init__(
        self,
        datastore: PostgresDatastore | SQLiteDatastore,
        *,
        watchdog: Watchdog | None = None,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
    ) -> None:
        self.datastore = datastore
        self.dialect: Dialect = (
            "postgres" if isinstance(datastore, PostgresDatastore) else "sqlite"
        )
        # What bounds the writes made for a request (see transaction).
        self.watchdog = watchdog
        self.commit_timeout = commit_timeout

    @classmethod
    def of(cls, app: Application[Any]) -> Database:
        """The database behind an application's event store, its writes bounded
        as the application's are (pocket.postgres.PocketPostgresFactory)."""
        datastore = getattr(app.factory, "datastore", None)
        if not isinstance(datastore, PostgresDatastore | SQLiteDatastore):
            msg = "Pocket's tables need SQLite or PostgreSQL, not in-memory storage."
            raise UnsupportedStore(msg)
        return cls(
            datastore,
            watchdog=getattr(app.factory, "watchdog", None),
            commit_timeout=getattr(
                app.factory, "commit_timeout", DEFAULT_COMMIT_TIMEOUT
            ),
        )

    def replace_broken_connections(self) -> None:
        """Replaces pooled connections a lost link broke (PostgreSQL's only)."""
        if isinstance(self.datastore, PostgresDatastore):
            replace_connections(self.datastore)

    def leave_server(self) -> None:
        """Replaces every pooled connection, for the server refused a write as
        read-only (PostgreSQL's only; see pocket.postgres_pool.replace_connections)."""
        if isinstance(self.datastore, PostgresDatastore):
            replace_connections(self.datastore)

    @contextmanager
    def transaction(
        self, *, commit: bool = True, bounded: bool = False
    ) -> Iterator[Transaction]:
        """One transaction: committed at the end, rolled back on error.

        bounded, for a request's writes on PostgreSQL: the transaction, its
        commit included, may take the commit timeout at most, and the commit
        counts only once confirmed (see pocket.deadlines.Watchdog.write): else
        WriteNotConfirmed, and whether it was made is not known.
        """
        if bounded and commit and self.watchdog is not None:
            assert isinstance(self.datastore, PostgresDatastore)
            with (
                self.watchdog.deadline(self.commit_timeout),
                self.datastore.get_connection() as conn,
                self.watchdog.write(conn, CHECK_FIRST),
                conn.transaction(),
            ):
                yield Transaction(conn.cursor(), self.dialect)
            return
        with self.datastore.transaction(commit=commit) as cursor:
            # The library wraps sqlite3's cursor; its wrapper hides description.
            yield Transaction(getattr(cursor, "sqlite_cursor", cursor), self.dialect)

    def execute(
        self, sql: str, params: Sequence[Any] = (), *, bounded: bool = False
    ) -> list[Row]:
        """Runs one statement in a transaction of its own and returns its rows
        (bounded: see transaction)."""
        with self.transaction(bounded=bounded) as tx:
            return tx.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Runs one read-only statement and returns its rows.

        On PostgreSQL the pool's connections are in autocommit mode, so a single
        read needs no BEGIN and ROLLBACK around it: one round trip, not three.
        A read is safe to repeat, so a connection the server dropped (after a
        restart, say) is replaced and the read tried once more.
        """
        try:
            return self._query(sql, params)
        except (InterfaceError, OperationalError):
            if not isinstance(self.datastore, PostgresDatastore):
                raise
            self.replace_broken_connections()
            return self._query(sql, params)

    def _query(self, sql: str, params: Sequence[Any]) -> list[Row]:
        if isinstance(self.datastore, PostgresDatastore):
            with self.datastore.get_connection() as conn, conn.cursor() as cursor:
                return Transaction(cursor, self.dialect).execute(sql, params)
        with self.transaction(commit=False) as tx:
            return tx.execute(sql, params)


class Transaction:
    """A cursor inside an open transaction."""

    def __init__(self, cursor: Any, dialect: Dialect) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.rowcount = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Runs a statement and returns its rows (empty when it returns none)."""
        if self.dialect == "sqlite":
            sql = sql.replace("%s", "?")
            params = [_sqlite_param(p) for p in params]
        self.cursor.execute(sql, params)
        self.rowcount = self.cursor.rowcount
        if self.cursor.description is None:
            return []
        return [dict(row) for row in self.cursor.fetchall()]

    def has_column(self, table: str, column: str) -> bool:
        """Whether a table of Pocket's already has a column (for migrations)."""
        if self.dialect == "postgres":
            rows = self.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = %s AND column_name = %s",
                [table, column],
            )
            return bool(rows)
        return any(
            row["name"] == column for row in self.execute(f"PRAGMA table_info({table})")
        )

    def has_table(self, name: str) -> bool:
        """Whether a table exists (in the current schema)."""
        return self._has("BASE TABLE", "table", name)

    def has_view(self, name: str) -> bool:
        """Whether a view exists (in the current schema)."""
        return self._has("VIEW", "view", name)

    def _has(self, pg_type: str, sqlite_type: str, name: str) -> bool:
        if self.dialect == "postgres":
            sql = (
                "SELECT 1 FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_type = %s AND table_name = %s"
            )
            return bool(self.execute(sql, [pg_type, name]))
        sql = "SELECT 1 FROM sqlite_master WHERE type = %s AND name = %s"
        return bool(self.execute(sql, [sqlite_type, name]))

    def lock_schema(self) -> None:
        """Serializes schema changes between processes starting at once."""
        if self.dialect == "postgres":
            self.execute("SELECT pg_advisory_xact_lock(hashtext('pocket-schema'))")

    def lock_tokens(self) -> None:
        """Waits for the commands being committed with tokens checked (see
        pocket.guards), and holds back new ones until this transaction ends: a
        token replaced here is seen by every command that commits after it."""
        if self.dialect == "postgres":
            self.execute(f"SELECT pg_advisory_xact_lock(hashtext('{TOKENS_LOCK}'))")

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Runs a statement once for each row of parameters."""
        if self.dialect == "sqlite":
            sql = sql.replace("%s", "?")
            rows = [[_sqlite_param(p) for p in row] for row in rows]
        self.cursor.executemany(sql, list(rows))


def _sqlite_param(value: Any) -> Any:
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def as_uuid(value: Any) -> UUID:
    """A UUID from either database's representation."""
    return value if isinstance(value, UUID) else UUID(str(value))


def as_decimal(value: Any) -> Decimal:
    """An exact Decimal from either database's representation."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def as_datetime(value: Any) -> datetime:
    """A timezone-aware datetime from either database's representation."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)
