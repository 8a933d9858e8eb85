"""The hold-expiry follower's recorder on PostgreSQL: the open holds of a section
of the log, applied in the transaction that moves its tracking position by
compare-and-set (as wallet_records' recorder does, which this extends), and the
reads of the holds that are due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from pocket.expiry import DueHold, HoldChanges
from pocket.walletrecords_postgres import (
    WalletRecordsPostgresFactory,
    WalletRecordsPostgresRecorder,
)


class HoldExpiryPostgresRecorder(WalletRecordsPostgresRecorder):
    """The follower's tracking position and its table of open holds."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        holds = Identifier(datastore.schema, self.rows_table)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (hold_id uuid PRIMARY KEY, "
                "wallet_id uuid NOT NULL, expires_at timestamptz NOT NULL)"
            ).format(holds)
        )
        self.sql_create_statements.append(
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (expires_at)").format(
                Identifier(f"{self.rows_table}_due"), holds
            )
        )
        self.insert_holds = SQL(
            "INSERT INTO {0} (hold_id, wallet_id, expires_at) "
            "SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::timestamptz[]) "
            "ON CONFLICT (hold_id) DO NOTHING"
        ).format(holds)
        self.delete_holds = SQL(
            "DELETE FROM {0} WHERE hold_id = ANY(%s::uuid[])"
        ).format(holds)
        self.select_due = SQL(
            "SELECT hold_id, wallet_id, expires_at FROM {0} WHERE expires_at <= %s "
            "ORDER BY expires_at LIMIT %s"
        ).format(holds)
        self.select_next = SQL("SELECT min(expires_at) AS next FROM {0}").format(holds)
        self.select_count = SQL("SELECT count(*) AS open FROM {0}").format(holds)

    def _apply(self, curs: Cursor[DictRow], changes: Any) -> None:
        assert isinstance(changes, HoldChanges)
        if changes.placed:
            placed = changes.placed.items()
            curs.execute(
                self.insert_holds,
                (
                    [h for h, _ in placed],
                    [w for _, (w, _) in placed],
                    [e for _, (_, e) in placed],
                ),
                prepare=True,
            )
        if changes.ended:
            curs.execute(self.delete_holds, (list(changes.ended),), prepare=True)

    def due(self, now: datetime, limit: int) -> list[DueHold]:
        """The open holds whose expiry has come by now, soonest first."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_due, (now, limit))
            return [
                DueHold(row["hold_id"], row["wallet_id"], row["expires_at"])
                for row in curs.fetchall()
            ]

    def next_expiry(self) -> datetime | None:
        """When the soonest open hold expires (None: no open holds)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_next)
            row = curs.fetchone()
            return None if row is None else row["next"]

    def open_count(self) -> int:
        """How many open holds the follower knows of."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(self.select_count)
            row = curs.fetchone()
            return 0 if row is None else int(row["open"])


class HoldExpiryPostgresFactory(WalletRecordsPostgresFactory):
    """Pocket's PostgreSQL factory, whose process recorder is the follower's."""

    process_recorder_class = HoldExpiryPostgresRecorder
