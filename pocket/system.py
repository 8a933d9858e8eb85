"""The wallet_records projection, its versions, the follower that feeds it, and its
runners.

The projection is built on the library's 9.5 projection classes (a `Projection`
writing to a `TrackingRecorder` view) rather than a `ProcessApplication`: it
emits no events, so a process application's own events table would sit empty,
and its one-transaction-per-event recording is what batching must replace.

Exactly-once: each batch's row changes and its tracking position commit in one
transaction, and the position only moves by compare-and-set from the position the
batch was read after, so a second follower, a crash or a retry can never apply an
event twice or skip one.

Versions: each version of the projection has tables of its own
(`wallet_records_v<n>`) and a tracking row of its own. Readers use the SQL view
`wallet_records`, which points at the live version; `pocket migrate` builds a new
version beside the live one and switches the view, the live version and the
followers over in one transaction.
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
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.projection import Projection
from eventsourcing.utils import get_topic

from pocket.application import Pocket
from pocket.database import (
    Database,
    Row,
    Transaction,
    as_decimal,
    as_uuid,
    connect_kwargs,
)
from pocket.domainmodel import ZERO, Wallet
from pocket.locks import ProcessLock

log = logging.getLogger(__name__)

PROJECTION = "wallet_records"
# The versions of wallet_records this code can build and follow. Version 2 added
# the closed column (wallets can close); bump this, describe the new version's
# columns below, and run `pocket migrate` to rebuild live.
LATEST_VERSION = 2
VERSIONS: dict[int, str] = {
    1: "aggregate_id, user_id, balance, version",
    2: "aggregate_id, user_id, balance, version, closed",
}


@dataclass(frozen=True)
class WalletRecord:
    """One row of wallet_records (closed is None in versions without it)."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int
    closed: bool | None = None


@dataclass
class WalletChanges:
    """What a batch of events does to wallet_records, folded per wallet."""

    opened: dict[UUID, tuple[str, int]] = field(default_factory=dict)
    deltas: dict[UUID, tuple[Decimal, int]] = field(default_factory=dict)
    closed: set[UUID] = field(default_factory=set)

    def open(self, wallet_id: UUID, user_id: str, version: int) -> None:
        """A wallet was created."""
        self.opened[wallet_id] = (user_id, version)

    def move(self, wallet_id: UUID, amount: Decimal, version: int) -> None:
        """Money moved in (positive) or out (negative) of a wallet."""
        delta, _ = self.deltas.get(wallet_id, (ZERO, 0))
        self.deltas[wallet_id] = (delta + amount, version)

    def close(self, wallet_id: UUID, version: int) -> None:
        """A wallet was closed."""
        self.move(wallet_id, ZERO, version)
        self.closed.add(wallet_id)


class ProjectionError(PersistenceError):
    """The projection's table disagrees with the events applied to it."""


class ProjectionSwitched(IntegrityError):
    """The live version changed: this follower must follow the new one."""


class WalletRecordsView(TrackingRecorder):
    """One version of wallet_records and the position in Pocket's log it reflects."""

    def __init__(self, db: Database, version: int = LATEST_VERSION) -> None:
        if version not in VERSIONS:
            msg = f"wallet_records has no version {version} (known: {sorted(VERSIONS)})"
            raise ValueError(msg)
        self.db = db
        self.version = version
        self.table = f"{PROJECTION}_v{version}"

    def create_table(self) -> None:
        """Creates this version's table (and the shared tracking table)."""
        pg = self.db.dialect == "postgres"
        columns = [
            f"aggregate_id {'uuid' if pg else 'TEXT'} PRIMARY KEY",
            "user_id text NOT NULL",
            f"balance {'numeric(20, 2)' if pg else 'TEXT'} NOT NULL",
            "version bigint NOT NULL",
        ]
        if self.version >= 2:
            columns.append("closed boolean NOT NULL DEFAULT false")
        with self.db.transaction() as tx:
            tx.lock_schema()
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ({', '.join(columns)})"
            )
            tx.execute(
                "CREATE TABLE IF NOT EXISTS projection_tracking ("
                "projection text PRIMARY KEY, "
                "application_name text NOT NULL, "
                "notification_id bigint NOT NULL)"
            )

    def drop_table(self) -> None:
        """Drops this version's table and its position."""
        with self.db.transaction() as tx:
            tx.execute(f"DROP TABLE IF EXISTS {self.table}")
            tx.execute(
                "DELETE FROM projection_tracking WHERE projection = %s", [self.table]
            )

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification of the named application this view reflects."""
        with self.db.transaction(commit=False) as tx:
            return self.position(tx, application_name)

    def insert_tracking(self, tracking: Tracking) -> None:
        """Moves the position forward with no row changes (never backwards)."""
        after = self.max_tracking_id(tracking.application_name)
        self.apply(WalletChanges(), tracking, after, live_only=False)

    def apply(
        self,
        changes: WalletChanges,
        tracking: Tracking,
        after: int | None,
        *,
        live_only: bool,
    ) -> None:
        """Applies a batch's changes and moves the position from after to tracking.

        Raises IntegrityError, changing nothing, when the position is not where
        the batch was read from (another follower got there first), and
        ProjectionSwitched when live_only and this version is no longer live.
        """
        with self.db.transaction() as tx:
            self._advance(tx, tracking, after)
            if live_only:
                live = live_version(tx, for_share=True)
                if live != self.version:
                    msg = f"wallet_records v{live} is live, not v{self.version}"
                    raise ProjectionSwitched(msg)
            if changes.opened:
                tx.executemany(
                    f"INSERT INTO {self.table} "
                    "(aggregate_id, user_id, balance, version) VALUES (%s, %s, %s, %s)",
                    [(i, u, ZERO, v) for i, (u, v) in changes.opened.items()],
                )
            if changes.deltas:
                self._add_deltas(tx, changes.deltas)
            if changes.closed and self.version >= 2:
                tx.executemany(
                    f"UPDATE {self.table} SET closed = true WHERE aggregate_id = %s",
                    [(i,) for i in changes.closed],
                )

    def get(self, aggregate_id: UUID) -> WalletRecord | None:
        """The row for one wallet, if the projection has reached it."""
        return self.get_many([aggregate_id]).get(aggregate_id)

    def get_many(self, ids: list[UUID]) -> dict[UUID, WalletRecord]:
        """The rows for some wallets, by id (missing ones left out)."""
        with self.db.transaction(commit=False) as tx:
            return {
                record.aggregate_id: record
                for record in map(to_record, select_in(tx, self.table, "*", ids))
            }

    def all(self) -> list[WalletRecord]:
        """Every row, in no particular order."""
        return [to_record(row) for row in self.db.query(f"SELECT * FROM {self.table}")]

    def position(self, tx: Transaction, application_name: str = "Pocket") -> int | None:
        """This version's position, read inside a transaction."""
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
            balances = {
                as_uuid(row["aggregate_id"]): as_decimal(row["balance"])
                for row in select_in(
                    tx, self.table, "aggregate_id, balance", list(deltas)
                )
            }
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


def select_in(
    tx: Transaction, table: str, columns: str, ids: list[UUID]
) -> Iterator[Row]:
    """Rows of a table whose aggregate_id is one of ids."""
    # In chunks: SQLite allows a limited number of parameters per statement.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join(["%s"] * len(chunk))
        yield from tx.execute(
            f"SELECT {columns} FROM {table} WHERE aggregate_id IN ({marks})", chunk
        )


def to_record(row: Row) -> WalletRecord:
    """A WalletRecord from a row of any version, on either database."""
    closed = row.get("closed")
    return WalletRecord(
        aggregate_id=as_uuid(row["aggregate_id"]),
        user_id=str(row["user_id"]),
        balance=as_decimal(row["balance"]).quantize(Decimal("0.01")),
        version=int(row["version"]),
        closed=None if closed is None else bool(closed),
    )


def live_records(db: Database, ids: list[UUID]) -> dict[UUID, WalletRecord]:
    """Rows of whichever version is live, through the view readers use."""
    with db.transaction(commit=False) as tx:
        return {
            record.aggregate_id: record
            for record in map(to_record, select_in(tx, PROJECTION, "*", ids))
        }


def live_version(tx: Transaction, *, for_share: bool = False) -> int:
    """The version readers and followers use, read inside a transaction."""
    lock = " FOR SHARE" if for_share and tx.dialect == "postgres" else ""
    rows = tx.execute(
        f"SELECT live_version FROM pocket_projections WHERE name = %s{lock}",
        [PROJECTION],
    )
    if not rows:
        msg = "The projection catalogue is empty: start Pocket once to create it."
        raise ProjectionError(msg)
    return int(rows[0]["live_version"])


class ProjectionCatalog:
    """Which version of wallet_records is live, and the switch between versions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self) -> int:
        """Creates the catalogue and the live version's tables; returns it."""
        with self.db.transaction() as tx:
            tx.lock_schema()
            tx.execute(
                "CREATE TABLE IF NOT EXISTS pocket_projections ("
                "name text PRIMARY KEY, live_version integer NOT NULL)"
            )
            rows = tx.execute(
                "SELECT live_version FROM pocket_projections WHERE name = %s",
                [PROJECTION],
            )
            if rows:
                version = int(rows[0]["live_version"])
            else:
                # Databases from before versions were catalogued have version 1.
                version = 1 if tx.has_table(f"{PROJECTION}_v1") else LATEST_VERSION
                tx.execute(
                    "INSERT INTO pocket_projections (name, live_version) "
                    "VALUES (%s, %s)",
                    [PROJECTION, version],
                )
        view = self.view(version)
        view.create_table()
        with self.db.transaction() as tx:
            tx.lock_schema()
            if not tx.has_view(PROJECTION):
                point_readers_at(tx, version)
        return version

    def live_version(self) -> int:
        """The live version."""
        with self.db.transaction(commit=False) as tx:
            return live_version(tx)

    def view(self, version: int) -> WalletRecordsView:
        """One version's view (its tables may not exist yet)."""
        return WalletRecordsView(self.db, version)

    def positions(self) -> dict[int, int | None]:
        """Every version that has tables here, with its position."""
        with self.db.transaction(commit=False) as tx:
            return {
                version: WalletRecordsView(self.db, version).position(tx)
                for version in VERSIONS
                if tx.has_table(f"{PROJECTION}_v{version}")
            }

    def switch(self, target: int) -> bool:
        """Makes target live if it has caught up with the live version.

        In one transaction: the live version, the view readers use, and (through
        the live check in every follower's batch) the followers. Returns False,
        changing nothing, when the target is still behind the live version.
        """
        with self.db.transaction() as tx:
            # Waits for any follower batch in progress, and holds off new ones.
            tx.execute(
                "UPDATE pocket_projections SET live_version = live_version "
                "WHERE name = %s",
                [PROJECTION],
            )
            current = live_version(tx)
            if current == target:
                return True
            live_at = self.view(current).position(tx) or 0
            target_at = self.view(target).position(tx) or 0
            if target_at < live_at:
                return False
            tx.execute(
                "UPDATE pocket_projections SET live_version = %s WHERE name = %s",
                [target, PROJECTION],
            )
            point_readers_at(tx, target)
        return True


def point_readers_at(tx: Transaction, version: int) -> None:
    """(Re)creates the wallet_records SQL view over one version's table."""
    tx.execute(f"DROP VIEW IF EXISTS {PROJECTION}")
    tx.execute(
        f"CREATE VIEW {PROJECTION} AS SELECT {VERSIONS[version]} "
        f"FROM {PROJECTION}_v{version}"
    )


class WalletProjection(Projection[WalletRecordsView]):
    """Folds Pocket's wallet events into wallet_records."""

    name = PROJECTION
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
        self.process_batch([domain_event], tracking, after, live_only=False)

    def process_batch(
        self,
        events: Sequence[DomainEventProtocol[UUID]],
        tracking: Tracking,
        after: int | None,
        *,
        live_only: bool,
    ) -> None:
        """Applies consecutive events in one transaction, ending at tracking."""
        changes = WalletChanges()
        for event in events:
            fold(changes, event)
        self.view.apply(changes, tracking, after, live_only=live_only)


def fold(changes: WalletChanges, event: object) -> None:
    """Adds one event's effect to a batch's changes."""
    if isinstance(event, Wallet.Created):
        changes.open(event.originator_id, event.user_id, event.originator_version)
    elif isinstance(event, Wallet.MoneyAdded | Wallet.TransferReceived):
        changes.move(event.originator_id, event.amount, event.originator_version)
    elif isinstance(event, Wallet.MoneyDrawn | Wallet.TransferSent):
        changes.move(event.originator_id, -event.amount, event.originator_version)
    elif isinstance(event, Wallet.Closed):
        changes.close(event.originator_id, event.originator_version)


class ProjectionFollower:
    """Feeds Pocket's log to the projection, a batch per transaction.

    With no version given it follows the live version, and moves to the new one
    when `pocket migrate` switches; with a version, it builds that version (the
    rebuild half of a migration).
    """

    def __init__(
        self,
        pocket: Pocket,
        catalog: ProjectionCatalog,
        *,
        version: int | None = None,
        lock: ProcessLock | None = None,
        batch_size: int = 1000,
        poll_interval: float | None = None,
    ) -> None:
        self.pocket = pocket
        self.catalog = catalog
        self.fixed_version = version
        self.lock = lock
        self.batch_size = batch_size
        # PostgreSQL wakes the follower with NOTIFY, so its poll is only a safety
        # net; SQLite cannot notify other processes, so it is polled.
        listens = isinstance(pocket.recorder, PostgresApplicationRecorder)
        self.poll_interval = poll_interval or (30.0 if listens else 0.5)
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.projection = WalletProjection(
            catalog.view(version or catalog.live_version())
        )

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
        try:
            self.projection.process_batch(
                self._events(notifications),
                Tracking(self.pocket.name, notifications[-1].id),
                after,
                live_only=self.fixed_version is None,
            )
        except ProjectionSwitched:
            version = self.catalog.live_version()
            log.info("wallet_records v%d is live now; following it", version)
            self.projection = WalletProjection(self.catalog.view(version))
            return -1
        return len(notifications)

    def catch_up(self, until: int | None = None) -> int:
        """Applies batches until the log is exhausted (or the position reaches
        until); returns how many notifications that covered."""
        total = 0
        while not self.stopping.is_set():
            if until is not None and (self.position or 0) >= until:
                break
            count = self.pull()
            if not count:
                break
            total += max(count, 0)
        return total

    def run(self) -> None:
        """Follows the log until stop(): takes the lock, catches up, then waits."""
        failures = 0
        self.pocket.add_save_listener(self.wakeup.set)
        with self._listening():
            while not self.stopping.is_set():
                if not self._hold_lock():
                    self.stopping.wait(1.0)
                    continue
                self.wakeup.clear()
                try:
                    applied = self.catch_up()
                except Exception as error:
                    # Nothing was applied: the failed batch rolled back whole. An
                    # IntegrityError means another follower moved the position.
                    failures += 1
                    if is_connection_error(error):
                        # Every pooled connection the failure broke is replaced
                        # now, not found by one slow retry after another.
                        self.catalog.db.replace_broken_connections()
                    delay = min(30.0, 0.05 * 2 ** min(failures, 10))
                    log.warning(
                        "Follower batch failed (%s: %s); again in %.2fs",
                        type(error).__name__,
                        error,
                        delay,
                        exc_info=not isinstance(error, IntegrityError | OSError)
                        and not is_connection_error(error),
                    )
                    self.stopping.wait(delay)
                    continue
                if applied:
                    log.debug("Applied %d notifications", applied)
                if failures:
                    log.info("Follower recovered after %d failed attempt(s)", failures)
                failures = 0
                # A lock holder re-checks its lock at least every few seconds.
                interval = self.poll_interval if self.lock is None else 2.0
                self.wakeup.wait(min(self.poll_interval, interval))
        self.pocket.remove_save_listener(self.wakeup.set)
        if self.lock is not None:
            self.lock.release()

    def stop(self) -> None:
        """Asks run() to return after the batch in hand commits."""
        self.stopping.set()
        self.wakeup.set()

    def _hold_lock(self) -> bool:
        """Takes or keeps the right to apply events; never both followers at once."""
        if self.lock is None:
            return True
        if self.lock.held:
            if self.lock.is_still_held():
                return True
            log.warning("Lost the follower lock (connection dropped); standing by")
        if self.lock.try_acquire():
            log.info("Active: this follower applies events now")
            return True
        return False

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


def is_connection_error(error: BaseException) -> bool:
    """Whether an error says the database could not be reached."""
    return isinstance(
        error, OperationalError | InterfaceError | psycopg.OperationalError
    )


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
        kwargs = connect_kwargs(self.datastore)
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
