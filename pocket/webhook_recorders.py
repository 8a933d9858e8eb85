"""The webhook follower's recorders, on PostgreSQL and on SQLite: a section's
deliveries queued (pocket.webhook_queue) in the transaction that moves its tracking
position by compare-and-set, as wallet_records' recorders do, which these extend."""

from __future__ import annotations

import time
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteCursor
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL

from pocket.database import Transaction
from pocket.feed import FeedChanges
from pocket.walletrecords_postgres import (
    WalletRecordsPostgresFactory,
    WalletRecordsPostgresRecorder,
)
from pocket.walletrecords_sqlite import (
    WalletRecordsSQLiteFactory,
    WalletRecordsSQLiteRecorder,
)
from pocket.webhook_queue import queue_section
from pocket.webhook_store import webhook_ddl


class WebhookPostgresRecorder(WalletRecordsPostgresRecorder):
    """The follower's tracking position and the webhooks' tables."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.subscribed = True
        self.sql_create_statements.extend(
            SQL(s).format() for s in webhook_ddl("postgres")
        )

    def _apply(self, curs: Cursor[DictRow], changes: Any) -> None:
        assert isinstance(changes, FeedChanges)
        self.subscribed = queue_section(
            Transaction(curs, "postgres"), changes, time.time(), self.subscribed
        )


class WebhookSQLiteRecorder(WalletRecordsSQLiteRecorder):
    """The follower's tracking position and the webhooks' tables."""

    subscribed = True

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *webhook_ddl("sqlite")]

    def _apply(self, c: SQLiteCursor, changes: Any) -> None:
        assert isinstance(changes, FeedChanges)
        cursor = getattr(c, "sqlite_cursor", c)
        self.subscribed = queue_section(
            Transaction(cursor, "sqlite"), changes, time.time(), self.subscribed
        )


class WebhookPostgresFactory(WalletRecordsPostgresFactory):
    """Pocket's PostgreSQL factory, whose process recorder is the follower's."""

    process_recorder_class = WebhookPostgresRecorder


class WebhookSQLiteFactory(WalletRecordsSQLiteFactory):
    """Pocket's SQLite factory, whose process recorder is the follower's."""

    process_recorder_class = WebhookSQLiteRecorder
