"""The wallet_records projector's recorder on SQLite: a batch's row changes and its
tracking position in one transaction, the position moved by compare-and-set.

The library's SQLite factory gives every process recorder the same two tables
(`stored_events` and `tracking`), so two applications in one file would share a
position; Pocket's factory names them after the projector, as the library's
PostgreSQL factory does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    ProcessRecorder,
    StoredEvent,
    Tracking,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
    SQLiteProcessRecorder,
)

from pocket.domainmodel import ZERO
from pocket.walletrecords import (
    PROJECTION,
    Batch,
    ProjectionError,
    ProjectionSwitched,
    WalletChanges,
    has_closed,
    has_holds,
    version_of,
)

# SQLite allows a limited number of parameters in one statement.
CHUNK = 500


class WalletRecordsSQLiteRecorder(SQLiteProcessRecorder):
    """One version of wallet_records: the library's process recorder with tables
    of its own, applying each batch's changes to the version's rows in the
    transaction that records its tracking position."""

    def __init__(
        self,
        datastore: SQLiteDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "tracking",
    ) -> None:
        # Read by the table statements the library builds while constructing.
        self.tracking_table_name = tracking_table_name
        super().__init__(datastore, events_table_name=events_table_name)
        table = tracking_table_name
        self.insert_tracking_statement = (
            f"INSERT INTO {table} VALUES (:application_name, :notification_id) "
            "ON CONFLICT (application_name) DO UPDATE "
            "SET notification_id = :notification_id "
            f"WHERE {table}.notification_id < :notification_id "
            "RETURNING notification_id"
        )
        self.select_max_tracking_id_statement = (
            f"SELECT MAX(notification_id) FROM {table} WHERE application_name=?"
        )
        self.rows_table = tracking_table_name.removesuffix("_tracking")
        self.version = version_of(self.rows_table)
        self.holds = self.version is not None and has_holds(self.version)

    def construct_create_table_statements(self) -> list[str]:
        statements = [
            s
            for s in super().construct_create_table_statements()
            if "CREATE TABLE IF NOT EXISTS tracking " not in s
        ]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {self.tracking_table_name} ("
            "application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID"
        )
        return statements

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        batch: Batch | None = kwargs.get("batch")
        tracking: Tracking | None = kwargs.get("tracking")
        if batch is None or tracking is None:
            # The library's semantics: any position ahead of the last.
            return super()._insert_events(c, stored_events, **kwargs)
        returning = SQLiteApplicationRecorder._insert_events(
            self, c, stored_events, **kwargs
        )
        self._advance(c, tracking, batch.after)
        if batch.live_only:
            self._check_live(c)
        self._apply(c, batch.changes)
        return returning

    def _advance(self, c: SQLiteCursor, tracking: Tracking, after: int | None) -> None:
        """Moves the position from after to the tracking's, or raises
        IntegrityError (changing nothing) when it is no longer at after."""
        if after is not None and tracking.notification_id <= after:
            msg = f"Position {tracking.notification_id} is not after {after}"
            raise IntegrityError(msg)
        table = self.tracking_table_name
        name, position = tracking.application_name, tracking.notification_id
        if after is None:
            c.execute(
                f"INSERT INTO {table} (application_name, notification_id) "
                "VALUES (?, ?) ON CONFLICT (application_name) DO NOTHING "
                "RETURNING notification_id",
                (name, position),
            )
        else:
            c.execute(
                f"UPDATE {table} SET notification_id = ? "
                "WHERE application_name = ? AND notification_id = ? "
                "RETURNING notification_id",
                (position, name, after),
            )
        if c.fetchone() is None:
            msg = f"{self.rows_table} is no longer at position {after}"
            raise IntegrityError(msg)

    def _check_live(self, c: SQLiteCursor) -> None:
        """A switch of the live version waits for this write transaction."""
        c.execute(
            "SELECT live_version FROM pocket_projections WHERE name = ?",
            (PROJECTION,),
        )
        row = c.fetchone()
        live = None if row is None else int(row[0])
        if live != self.version:
            msg = f"{PROJECTION} v{live} is live, not v{self.version}"
            raise ProjectionSwitched(msg)

    def _apply(self, c: SQLiteCursor, changes: WalletChanges) -> None:
        table = self.rows_table
        if changes.opened:
            c.executemany(
                f"INSERT INTO {table} (aggregate_id, user_id, balance, version) "
                "VALUES (?, ?, '0.00', ?)",
                [(str(i), u, v) for i, (u, v) in changes.opened.items()],
            )
        if changes.deltas:
            # SQLite has no exact decimal arithmetic: add in Python, in the same
            # write transaction that holds the database's lock.
            figures = self._figures(c, list(changes.deltas))
            missing = len(changes.deltas) - len(figures)
            if missing:
                msg = f"{table} lacks rows for {missing} wallet(s)"
                raise ProjectionError(msg)
            if self.holds:
                c.executemany(
                    f"UPDATE {table} SET balance = ?, held = ?, available = ?, "
                    "credit_limit = ?, version = ? WHERE aggregate_id = ?",
                    [
                        (*figures[i].changed(d, i, changes), v, str(i))
                        for i, (d, v) in changes.deltas.items()
                    ],
                )
            else:
                c.executemany(
                    f"UPDATE {table} SET balance = ?, version = ? "
                    "WHERE aggregate_id = ?",
                    [
                        (str(figures[i].balance + d), v, str(i))
                        for i, (d, v) in changes.deltas.items()
                    ],
                )
        if changes.closed and self.version is not None and has_closed(self.version):
            c.executemany(
                f"UPDATE {table} SET closed = 1 WHERE aggregate_id = ?",
                [(str(i),) for i in changes.closed],
            )

    def _figures(self, c: SQLiteCursor, ids: list[UUID]) -> dict[UUID, Figures]:
        """The amounts of the rows of ids (held and the credit limit 0 in
        versions without them)."""
        columns = "balance, held, credit_limit" if self.holds else "balance"
        figures: dict[UUID, Figures] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            c.execute(
                f"SELECT aggregate_id, {columns} FROM {self.rows_table} "
                f"WHERE aggregate_id IN ({marks})",
                [str(i) for i in chunk],
            )
            for row in c.fetchall():
                amounts = [Decimal(value) for value in tuple(row)[1:]]
                figures[UUID(row[0])] = Figures(*amounts)
        return figures


@dataclass(frozen=True)
class Figures:
    """A row's amounts, as read before a batch changes them."""

    balance: Decimal
    held: Decimal = ZERO
    credit_limit: Decimal = ZERO

    def changed(
        self, delta: Decimal, wallet_id: UUID, changes: WalletChanges
    ) -> tuple[str, str, str, str]:
        """balance, held, available and credit_limit after a batch's changes."""
        balance = self.balance + delta
        held = self.held + changes.held.get(wallet_id, ZERO)
        credit_limit = changes.credit_limits.get(wallet_id, self.credit_limit)
        available = balance - held + credit_limit
        return str(balance), str(held), str(available), str(credit_limit)


class WalletRecordsSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory; process recorders get tables of their own."""

    process_recorder_class: type[WalletRecordsSQLiteRecorder] = (
        WalletRecordsSQLiteRecorder
    )

    def process_recorder(self) -> ProcessRecorder:
        """A process recorder (process_recorder_class: wallet_records', or the
        hold-expiry follower's) whose tables are named after its application."""
        prefix = self.env.name.lower() or "stored"
        recorder = self.process_recorder_class(
            self.datastore,
            events_table_name=f"{prefix}_events",
            tracking_table_name=f"{prefix}_tracking",
        )
        if self.env_create_table():
            recorder.create_table()
        return recorder
