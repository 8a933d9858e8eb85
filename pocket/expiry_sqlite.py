"""The hold-expiry follower's recorder on SQLite: the open holds of a section of
the log, applied in the transaction that moves its tracking position by
compare-and-set (as wallet_records' recorder does, which this extends), and the
reads of the holds that are due. Expiries are kept as UTC ISO text, which sorts
as time does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.sqlite import SQLiteCursor

from pocket.expiry import DueHold, HoldChanges
from pocket.walletrecords_sqlite import (
    WalletRecordsSQLiteFactory,
    WalletRecordsSQLiteRecorder,
)


def utc_text(moment: datetime) -> str:
    """A moment as the table keeps it: UTC, ISO, fixed width (sorts as time)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


class HoldExpirySQLiteRecorder(WalletRecordsSQLiteRecorder):
    """The follower's tracking position and its table of open holds."""

    def construct_create_table_statements(self) -> list[str]:
        holds = self.tracking_table_name.removesuffix("_tracking")
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {holds} (hold_id TEXT PRIMARY KEY, "
            "wallet_id TEXT NOT NULL, expires_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {holds}_due ON {holds} (expires_at)",
        ]

    def _apply(self, c: SQLiteCursor, changes: Any) -> None:
        assert isinstance(changes, HoldChanges)
        table = self.rows_table
        if changes.placed:
            c.executemany(
                f"INSERT INTO {table} (hold_id, wallet_id, expires_at) "
                "VALUES (?, ?, ?) ON CONFLICT (hold_id) DO NOTHING",
                [(str(h), str(w), utc_text(e)) for h, (w, e) in changes.placed.items()],
            )
        if changes.ended:
            c.executemany(
                f"DELETE FROM {table} WHERE hold_id = ?",
                [(str(h),) for h in changes.ended],
            )

    def due(self, now: datetime, limit: int) -> list[DueHold]:
        """The open holds whose expiry has come by now, soonest first."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT hold_id, wallet_id, expires_at FROM {self.rows_table} "
                "WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
                (utc_text(now), limit),
            )
            return [
                DueHold(UUID(h), UUID(w), datetime.fromisoformat(e))
                for h, w, e in c.fetchall()
            ]

    def next_expiry(self) -> datetime | None:
        """When the soonest open hold expires (None: no open holds)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT min(expires_at) FROM {self.rows_table}")
            row = c.fetchone()
            return (
                None
                if row is None or row[0] is None
                else datetime.fromisoformat(row[0])
            )

    def open_count(self) -> int:
        """How many open holds the follower knows of."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT count(*) FROM {self.rows_table}")
            row = c.fetchone()
            return 0 if row is None else int(row[0])


class HoldExpirySQLiteFactory(WalletRecordsSQLiteFactory):
    """Pocket's SQLite factory, whose process recorder is the follower's."""

    process_recorder_class = HoldExpirySQLiteRecorder
