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


class QueuesSections:
    """What both recorders do with a section's changes in its transaction."""

    # Whether the last section with wallet events found a subscription (True
    # until one is read): the follower's thread gathers longer while none does.
    subscribed = True

    def queue(self, tx: Transaction, changes: Any) -> None:
        assert isinstance(changes, FeedChanges)
        self.subscribed = queue_section(tx, changes, time.time(), self.subscribed)


class WebhookPostgresRecorder(QueuesSections, WalletRecordsPostgresRecorder):
    """The follower's tracking position and the webhooks' tables."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        self.sql_create_statements.extend(
            SQL(s).format() for s in webhook_ddl("postgres")
        )

    def _apply(self, curs: Cursor[DictRow], changes: Any) -> None:
        self.queue(Transaction(curs, "postgres"), changes)


class WebhookSQLiteRecorder(QueuesSections, WalletRecordsSQLiteRecorder):
    """The follower's tracking position and the webhooks' tables."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), *webhook_ddl("sqlite")]

    def _apply(self, c: SQLiteCursor, changes: Any) -> None:
        self.queue(Transaction(getattr(c, "sqlite_cursor", c), "sqlite"), changes)


class WebhookPostgresFactory(WalletRecordsPostgresFactory):
    """Pocket's PostgreSQL factory, whose process recorder is the follower's."""

    process_recorder_class = WebhookPostgresRecorder


class WebhookSQLiteFactory(WalletRecordsSQLiteFactory):
    """Pocket's SQLite factory, whose process recorder is the follower's."""

    process_recorder_class = WebhookSQLiteRecorder
