"""The wallet_records projection, the follower that feeds it, and its runners.

The projection is built on the library's 9.5 projection classes (a `Projection`
writing to a `TrackingRecorder` view) rather than a `ProcessApplication`: it
emits no events, so a process application's own events table would sit empty,
and its one-transaction-per-event recording is what batching must replace.

Exactly-once: each batch's row changes and its tracking position commit in one
transaction, and the position only moves by compare-and-set from the position the
batch was read after, so a second follower, a crash or a retry can never apply an
event twice or skip one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    IntegrityError,
    Notification,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from pocket.application import Pocket
from pocket.database import Database, Transaction, as_decimal, as_uuid
from pocket.domainmodel import ZERO, Wallet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalletRecord:
    """One row of wallet_records."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int


@dataclass
class WalletChanges:
    """What a batch of events does to wallet_records, folded per wallet."""

    opened: dict[UUID, tuple[str, int]] = field(default_factory=dict)
    deltas: dict[UUID, tuple[Decimal, int]] = field(default_factory=dict)

    def open(self, wallet_id: UUID, user_id: str, version: int) -> None:
        """A wallet was created."""
        self.opened[wallet_id] = (user_id, version)

    def move(self, wallet_id: UUID, amount: Decimal, version: int) -> None:
        """Money moved in (positive) or out (negative) of a wallet."""
        delta, _ = self.deltas.get(wallet_id, (ZERO, 0))
        self.deltas[wallet_id] = (delta + amount, version)


class ProjectionError(PersistenceError):
    """The projection's table disagrees with the events applied to it."""


class WalletRecordsView(TrackingRecorder):
    """The wallet_records table and the position in Pocket's log it reflects."""

    def __init__(self, db: Database, version: int = 1) -> None:
        self.db = db
        self.version = version
        self.table = f"wallet_records_v{version}"

    def create_table(self) -> None:
        """Creates the table, its tracking row's table and the wallet_records view."""
        pg = self.db.dialect == "postgres"
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            f"aggregate_id {'uuid' if pg else 'TEXT'} PRIMARY KEY, "
            "user_id text NOT NULL, "
            f"balance {'numeric(20, 2)' if pg else 'TEXT'} NOT NULL, "
            "version bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS projection_tracking ("
            "projection text PRIMARY KEY, "
            "application_name text NOT NULL, "
            "notification_id bigint NOT NULL)",
        ]
        # Readers use the wallet_records view, so a rebuilt version can replace
        # the live table in one step.
        select = f"SELECT aggregate_id, user_id, balance, version FROM {self.table}"
        if pg:
            statements.append(f"CREATE OR REPLACE VIEW wallet_records AS {select}")
        else:
            statements.append(f"CREATE VIEW IF NOT EXISTS wallet_records AS {select}")
        with self.db.transaction() as tx:
            tx.lock_schema()
            for statement in statements:
                tx.execute(statement)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification of the named application this view reflects."""
        with self.db.transaction(commit=False) as tx:
            return self._position(tx, application_name)

    def insert_tracking(self, tracking: Tracking) -> None:
        """Moves the position forward with no row changes (never backwards)."""
        self.apply(
            WalletChanges(), tracking, self.max_tracking_id(tracking.application_name)
        )

    def apply(
        self, changes: WalletChanges, tracking: Tracking, after: int | None
    ) -> None:
        """Applies a batch's changes and moves the position from after to tracking.

        Raises IntegrityError, changing nothing, when the position is not where
        the batch was read from (another follower got there first).
        """
        with self.db.transaction() as tx:
            self._advance(tx, tracking, after)
            if changes.opened:
                tx.executemany(
                    f"INSERT INTO {self.table} "
                    "(aggregate_id, user_id, balance, version) VALUES (%s, %s, %s, %s)",
                    [(i, u, ZERO, v) for i, (u, v) in changes.opened.items()],
                )
            if changes.deltas:
                self._add_deltas(tx, changes.deltas)

    def get(self, aggregate_id: UUID) -> WalletRecord | None:
        """The row for one wallet, if the projection has reached it."""
        rows = self.db.query(
            f"SELECT * FROM {self.table} WHERE aggregate_id = %s", [aggregate_id]
        )
        return to_record(rows[0]) if rows else None

    def get_many(self, ids: list[UUID]) -> dict[UUID, WalletRecord]:
        """The rows for some wallets, by id (missing ones left out)."""
        with self.db.transaction(commit=False) as tx:
            return {
                record.aggregate_id: record
                for record in map(to_record, self._select_in(tx, "*", ids))
            }

    def all(self) -> list[WalletRecord]:
        """Every row, in no particular order."""
        return [to_record(row) for row in self.db.query(f"SELECT * FROM {self.table}")]

    def _position(self, tx: Transaction, application_name: str) -> int | None:
        rows = tx.execute(
            "SELECT notification_id FROM projection_tracking "
            "WHERE projection = %s AND application_name = %s",
            [self.table, application_name],
        )
        return int(rows[0]["notification_id"]) if rows else None

    def _advance(self, tx: Transaction, tracking: Tracking, after: int | None) -> None:
        if after is not None and tracking.notification_id <= after:
            msg = f"Position {tracking.notification_id} is not after {after}"
            raise IntegrityError(msg)
        if after is None:
            # A second follower inserting the first row fails on the primary key.
            tx.execute(
                "INSERT INTO projection_tracking "
                "(projection, application_name, notification_id) VALUES (%s, %s, %s)",
                [self.table, tracking.application_name, tracking.notification_id],
            )
            return
        tx.execute(
            "UPDATE projection_tracking SET notification_id = %s "
            "WHERE projection = %s AND application_name = %s AND notification_id = %s",
            [tracking.notification_id, self.table, tracking.application_name, after],
        )
        if tx.rowcount != 1:
            msg = f"{self.table} is no longer at position {after}"
            raise IntegrityError(msg)

    def _add_deltas(
        self, tx: Transaction, deltas: dict[UUID, tuple[Decimal, int]]
    ) -> None:
        if tx.dialect == "postgres":
            tx.execute(
                f"UPDATE {self.table} AS t SET balance = t.balance + d.delta, "
                "version = d.version FROM unnest(%s::uuid[], %s::numeric[], "
                "%s::bigint[]) AS d(id, delta, version) WHERE t.aggregate_id = d.id",
                [
                    list(deltas),
                    [d for d, _ in deltas.values()],
                    [v for _, v in deltas.values()],
                ],
            )
            updated = tx.rowcount
        else:
            # SQLite has no exact decimal arithmetic: add in Python, in the
            # same write transaction that holds the database lock.
            balances = self._balances(tx, list(deltas))
            tx.executemany(
                f"UPDATE {self.table} SET balance = %s, version = %s "
                "WHERE aggregate_id = %s",
                [
                    (balances[i] + d, v, i)
                    for i, (d, v) in deltas.items()
                    if i in balances
                ],
            )
            updated = len(balances)
        if updated != len(deltas):
            msg = f"{self.table} lacks rows for {len(deltas) - updated} wallet(s)"
            raise ProjectionError(msg)

    def _balances(self, tx: Transaction, ids: list[UUID]) -> dict[UUID, Decimal]:
        return {
            as_uuid(row["aggregate_id"]): as_decimal(row["balance"])
            for row in self._select_in(tx, "aggregate_id, balance", ids)
        }

    def _select_in(
        self, tx: Transaction, columns: str, ids: list[UUID]
    ) -> Iterator[dict[str, Any]]:
        # In chunks: SQLite allows a limited number of parameters per statement.
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            yield from tx.execute(
                f"SELECT {columns} FROM {self.table} WHERE aggregate_id IN ({marks})",
                chunk,
            )


def to_record(row: dict[str, Any]) -> WalletRecord:
    """A WalletRecord from a row of either database."""
    return WalletRecord(
        aggregate_id=as_uuid(row["aggregate_id"]),
        user_id=str(row["user_id"]),
        balance=as_decimal(row["balance"]).quantize(Decimal("0.01")),
        version=int(row["version"]),
    )


class WalletProjection(Projection[WalletRecordsView]):
    """Folds Pocket's wallet events into wallet_records."""

    name = "wallet_records"
    topics = tuple(
        get_topic(cls)
        for cls in (
            Wallet.Created,
            Wallet.MoneyAdded,
            Wallet.MoneyDrawn,
            Wallet.TransferSent,
            Wallet.TransferReceived,
            Wallet.Closed,
        )
    )

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Applies one event (the library's interface; followers use batches)."""
        after = self.view.max_tracking_id(tracking.application_name)
        self.process_batch([domain_event], tracking, after)

    def process_batch(
        self,
        events: Sequence[DomainEventProtocol[UUID]],
        tracking: Tracking,
        after: int | None,
    ) -> None:
        """Applies consecutive events in one transaction, ending at tracking."""
        changes = WalletChanges()
        for event in events:
            fold(changes, event)
        self.view.apply(changes, tracking, after)


def fold(changes: WalletChanges, event: object) -> None:
    """Adds one event's effect to a batch's changes."""
    if isinstance(event, Wallet.Created):
        changes.open(event.originator_id, event.user_id, event.originator_version)
    elif isinstance(event, Wallet.MoneyAdded | Wallet.TransferReceived):
        changes.move(event.originator_id, event.amount, event.originator_version)
    elif isinstance(event, Wallet.MoneyDrawn | Wallet.TransferSent):
        changes.move(event.originator_id, -event.amount, event.originator_version)
    elif isinstance(event, Wallet.Closed):
        changes.move(event.originator_id, ZERO, event.originator_version)


class ProjectionFollower:
    """Feeds Pocket's log to the projection, a batch per transaction."""

    def __init__(
        self,
        pocket: Pocket,
        projection: WalletProjection,
        *,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> None:
        self.pocket = pocket
        self.projection = projection
        self.batch_size = batch_size
        # PostgreSQL wakes the follower with NOTIFY, so its poll is only a safety
        # net; SQLite cannot notify other processes, so it is polled.
        listens = isinstance(pocket.recorder, PostgresApplicationRecorder)
        self.poll_interval = poll_interval or (30.0 if listens else 0.5)
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        pocket.add_save_listener(self.wakeup.set)

    @property
    def position(self) -> int | None:
        """The last notification the projection has applied."""
        return self.projection.view.max_tracking_id(self.pocket.name)

    def pull(self) -> int:
        """Applies the next batch; returns how many notifications it covered."""
        after = self.position
        notifications = self.pocket.recorder.select_notifications(
            start=after, limit=self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        self.projection.process_batch(
            self._events(notifications),
            Tracking(self.pocket.name, notifications[-1].id),
            after,
        )
        return len(notifications)

    def catch_up(self) -> int:
        """Applies batches until the log is exhausted; returns how many."""
        total = 0
        while not self.stopping.is_set() and (count := self.pull()):
            total += count
        return total

    def run(self) -> None:
        """Follows the log until stop(): catches up, then waits to be woken."""
        failures = 0
        with self._listening():
            while not self.stopping.is_set():
                self.wakeup.clear()
                try:
                    applied = self.catch_up()
                except Exception as error:
                    # Nothing was applied: the failed batch rolled back whole. An
                    # IntegrityError means another follower moved the position.
                    failures += 1
                    delay = min(30.0, 0.05 * 2 ** min(failures, 10))
                    log.warning(
                        "Follower batch failed (%s: %s); again in %.2fs",
                        type(error).__name__,
                        error,
                        delay,
                        exc_info=not isinstance(error, IntegrityError),
                    )
                    self.stopping.wait(delay)
                    continue
                if applied:
                    log.debug(
                        "Applied %d notifications, now at %s", applied, self.position
                    )
                failures = 0
                self.wakeup.wait(self.poll_interval)

    def stop(self) -> None:
        """Asks run() to return after the batch in hand commits."""
        self.stopping.set()
        self.wakeup.set()

    def _events(self, notifications: Sequence[Notification]) -> list[Any]:
        topics = self.projection.topics
        mapper = self.pocket.mapper
        return [mapper.to_domain_event(n) for n in notifications if n.topic in topics]

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        recorder = self.pocket.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            yield
            return
        listener = PostgresListener(recorder, self.wakeup.set, self.stopping)
        listener.start()
        try:
            yield
        finally:
            self.stop()
            listener.join()


class PostgresListener(threading.Thread):
    """Wakes the follower on each NOTIFY of Pocket's events channel.

    The library's subscription yields one event at a time and ends for good on a
    dropped connection; this keeps a LISTEN connection of its own and reconnects.
    """

    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        notify: Callable[[], None],
        stopping: threading.Event,
    ) -> None:
        super().__init__(name="pocket-listen", daemon=True)
        self.datastore: PostgresDatastore = recorder.datastore
        self.channel = recorder.channel_name
        self.notify = notify
        self.stopping = stopping

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as error:
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                log.warning("LISTEN connection lost (%s); again in %.1fs", error, delay)
                self.stopping.wait(delay)

    def _listen(self) -> None:
        # The same connection settings as the library's pool, minus its rows.
        pool_kwargs = self.datastore.pool.kwargs
        assert isinstance(pool_kwargs, dict)
        kwargs = {k: v for k, v in pool_kwargs.items() if k != "row_factory"}
        with psycopg.connect(autocommit=True, connect_timeout=5, **kwargs) as conn:
            conn.execute(
                psycopg.sql.SQL("LISTEN {}").format(
                    psycopg.sql.Identifier(self.channel)
                )
            )
            # Events written while we were not listening are found by this pull.
            self.notify()
            while not self.stopping.is_set():
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    self.notify()


class ThreadedRunner:
    """Runs a follower in a background thread of this process (pocket serve)."""

    def __init__(self, follower: ProjectionFollower) -> None:
        self.follower = follower
        self.thread = threading.Thread(
            target=follower.run, name="pocket-follow", daemon=True
        )

    def start(self) -> None:
        """Starts following."""
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops after the batch in hand and waits for the thread."""
        self.follower.stop()
        self.thread.join(timeout)
