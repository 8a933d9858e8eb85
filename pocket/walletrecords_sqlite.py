"""The wallet_records projector's recorder on SQLite: a batch's row changes and its
tracking position in one transaction, the position moved by compare-and-set.

The library's SQLite factory gives every process recorder the same two tables
(`stored_events` and `tracking`), so two applications in one file would share a
position; Pocket's factory names them after the projector, as the library's
PostgreSQL factory does.
"""

from __future__ import annotations

from collections.abc import Sequence
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

from pocket.walletrecords import (
    PROJECTION,
    Batch,
    ProjectionError,
    ProjectionSwitched,
    WalletChanges,
    has_closed,
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
            balances = self._balances(c, list(changes.deltas))
            missing = len(changes.deltas) - len(balances)
            if missing:
                msg = f"{table} lacks rows for {missing} wallet(s)"
                raise ProjectionError(msg)
            c.executemany(
                f"UPDATE {table} SET balance = ?, version = ? WHERE aggregate_id = ?",
                [
                    (str(balances[i] + d), v, str(i))
                    for i, (d, v) in changes.deltas.items()
                ],
            )
        if changes.closed and self.version is not None and has_closed(self.version):
            c.executemany(
                f"UPDATE {table} SET closed = 1 WHERE aggregate_id = ?",
                [(str(i),) for i in changes.closed],
            )

    def _balances(self, c: SQLiteCursor, ids: list[UUID]) -> dict[UUID, Decimal]:
        balances: dict[UUID, Decimal] = {}
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ", ".join("?" * len(chunk))
            c.execute(
                f"SELECT aggregate_id, balance FROM {self.rows_table} "
                f"WHERE aggregate_id IN ({marks})",
                [str(i) for i in chunk],
            )
            for row in c.fetchall():
                balances[UUID(row[0])] = Decimal(row[1])
        return balances


class WalletRecordsSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory; process recorders get tables of their own."""

    process_recorder_class = WalletRecordsSQLiteRecorder

    def process_recorder(self) -> ProcessRecorder:
        """A wallet_records recorder whose tables are named after its application."""
        prefix = self.env.name.lower() or "stored"
        recorder = WalletRecordsSQLiteRecorder(
            self.datastore,
            events_table_name=f"{prefix}_events",
            tracking_table_name=f"{prefix}_tracking",
        )
        if self.env_create_table():
            recorder.create_table()
        return recorder
