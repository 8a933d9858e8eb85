"""The system the design card names: Pocket leads, and the wallet_records
projector, a process application, follows its event log into a balance table.

Each version of wallet_records has a projector of its own, a module-level
subclass named after its table (`wallet_records_v2`), so each version has its own
tracking position. Every version follows Pocket; only the live one applies events
(the others stand by), so that `pocket migrate` can build a version beside the
live one and switch readers and followers to it without stopping anything.

Exactly-once: a projector applies a section of Pocket's log (up to a thousand
notifications) as one processing event, recorded in one transaction with its
tracking position; the position moves by compare-and-set from where the section
was read, so a second follower, a crash or a retry never applies an event twice.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import InfrastructureFactory, Notification, Tracking
from eventsourcing.system import ProcessApplication, System
from eventsourcing.utils import Environment, get_topic

from pocket.application import Pocket
from pocket.expiry import EXPIRY, EXPIRY_BATCH, HOLD_EVENTS, DueHold, HoldChanges
from pocket.expiry_postgres import HoldExpiryPostgresFactory
from pocket.expiry_sqlite import HoldExpirySQLiteFactory
from pocket.feed import FeedChanges
from pocket.postgres_pool import POSTGRES_DEFAULTS
from pocket.walletrecords import (
    COLUMNS,
    WALLET_EVENTS,
    Batch,
    WalletChanges,
    table_of,
)
from pocket.walletrecords_postgres import WalletRecordsPostgresFactory
from pocket.walletrecords_sqlite import WalletRecordsSQLiteFactory
from pocket.webhook_recorders import WebhookPostgresFactory, WebhookSQLiteFactory
from pocket.webhook_store import DELIVERIES


class SectionFollower(ProcessApplication[UUID]):
    """A process application that follows Pocket's log a section at a time: folds
    each section's events into one batch of changes (changes_class), which its
    recorder applies in the transaction that moves its tracking position by
    compare-and-set. The projector and the hold-expiry follower are two."""

    changes_class: ClassVar[type[Any]]
    # The factories whose process recorders apply its batches.
    postgres_factory: ClassVar[type[WalletRecordsPostgresFactory]] = (
        WalletRecordsPostgresFactory
    )
    sqlite_factory: ClassVar[type[WalletRecordsSQLiteFactory]] = (
        WalletRecordsSQLiteFactory
    )
    # Notifications applied in one transaction, at most (the library's: 10).
    pull_section_size = 1000
    # One thread uses a projector: it needs few connections.
    env: ClassVar[dict[str, str]] = {
        **POSTGRES_DEFAULTS,
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "2",
    }

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.batch_size = self.pull_section_size
        # Projectors apply only while their version is live; pocket migrate
        # builds a version that is not live yet.
        self.live_only = False
        # Set to end pull_and_process between two transactions.
        self.stopping = threading.Event()
        # Sections applied by this object, and the notifications they covered
        # (for metrics).
        self.sections_applied = 0
        self.notifications_applied = 0
        # Where this object last moved the position to: the next section is read
        # from there without asking the database first. Only a hint: the
        # compare-and-set still checks it, and any failure forgets it.
        self.known_position: int | None = None

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        """Pocket's factories: recorders that apply the followers' batches (each
        follower names its own, postgres_factory and sqlite_factory)."""
        module = env.get("PERSISTENCE_MODULE")
        if module == "eventsourcing.postgres":
            return self.postgres_factory(env)
        if module == "eventsourcing.sqlite":
            return self.sqlite_factory(env)
        return super().construct_factory(env)

    def policy(
        self,
        domain_event: DomainEventProtocol[UUID],
        processing_event: ProcessingEvent[UUID],
    ) -> None:
        """Folds one event into the processing event's batch of changes, which
        reaches the recorder as a keyword argument of collect_events."""
        batch = processing_event.saved_kwargs.get("batch")
        if batch is None:
            # One event through the library's process_event: it must come right
            # after the position.
            tracking = processing_event.tracking
            assert tracking is not None
            after = self.recorder.max_tracking_id(tracking.application_name)
            batch = Batch(self.changes_class(), after, live_only=False)
            processing_event.collect_events(batch=batch)
        assert isinstance(batch, Batch)
        batch.changes.fold(domain_event)

    def pull_and_process(
        self, leader_name: str, start: int | None = None, stop: int | None = None
    ) -> None:
        """Applies the leader's new events, a section to a transaction (the
        library's one event to a transaction is what a catch-up cannot afford),
        until none are left, stop is reached, or stopping is set.

        start is not used: a section is always read from this version's
        position, which the compare-and-set must start from.
        """
        self.catch_up(leader_name, stop)

    def catch_up(self, leader_name: str, until: int | None = None) -> int:
        """Applies sections until none are left, the position reaches until, or
        stopping is set; returns how many notifications they covered."""
        covered = 0
        while not self.stopping.is_set():
            if until is not None and (self.position or 0) >= until:
                break
            count = self.process_section(leader_name)
            covered += count
            if count < self.batch_size:
                break  # A short section ends the log as it stood: no empty read.
        return covered

    def process_section(self, leader_name: str, stop: int | None = None) -> int:
        """Applies the next section of the leader's log in one transaction;
        returns how many notifications it covered (0: none left)."""
        try:
            return self._process_section(leader_name, stop)
        except BaseException:
            self.forget_position()  # Moved by another, perhaps: read it again.
            raise

    def forget_position(self) -> None:
        """Reads the position from the database before the next section (another
        process may have moved it: a follower that held the lock before, a
        rebuild)."""
        self.known_position = None

    def _process_section(self, leader_name: str, stop: int | None) -> int:
        after = self.known_position
        if after is None:
            after = self.recorder.max_tracking_id(leader_name)
        reader = self.readers[leader_name]
        notifications = reader.notification_log.select(
            start=after, limit=self.batch_size, stop=stop, inclusive_of_start=False
        )
        if not notifications:
            self.known_position = after
            return 0
        processing_event = ProcessingEvent[UUID](
            Tracking(leader_name, notifications[-1].id)
        )
        processing_event.collect_events(
            batch=Batch(self.changes_class(), after, live_only=self.live_only)
        )
        for notification in notifications:
            if notification.topic in self.topics:
                self.fold_notification(leader_name, notification, processing_event)
        self._record(processing_event)
        self.known_position = notifications[-1].id
        self.sections_applied += 1
        self.notifications_applied += len(notifications)
        return len(notifications)

    def fold_notification(
        self,
        leader_name: str,
        notification: Notification,
        processing_event: ProcessingEvent[UUID],
    ) -> None:
        """Folds one notification of a section into its batch (the change
        feed's followers also note where in the log each event is: their
        documents say so)."""
        batch = processing_event.saved_kwargs.get("batch")
        if isinstance(batch, Batch) and isinstance(batch.changes, FeedChanges):
            batch.changes.position = notification.id
        event = self.mappers[leader_name].to_domain_event(notification)
        self.policy(event, processing_event)

    @property
    def position(self) -> int | None:
        """The last notification of Pocket's log this follower has applied."""
        return self.recorder.max_tracking_id(Pocket.name)


class WalletRecords(SectionFollower):
    """Folds Pocket's wallet events into one version of wallet_records."""

    version: ClassVar[int]
    topics = tuple(get_topic(cls) for cls in WALLET_EVENTS)
    changes_class = WalletChanges

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.live_only = True


class WalletRecordsV1(WalletRecords):
    """wallet_records as first built: each wallet's owner, balance and version."""

    name = table_of(1)
    version = 1


class WalletRecordsV2(WalletRecords):
    """Version 2: and whether the wallet is closed."""

    name = table_of(2)
    version = 2


class HoldExpiry(SectionFollower):
    """The hold-expiry follower: keeps the open holds (each one's wallet and
    expiry) from Pocket's log, and its runner thread (pocket.runner) records
    each hold's expiry, through Pocket's expire_hold, when its time comes.

    Exactly once: a hold ends once in its wallet (a second ending is refused
    there), and every follower sends a hold's expiry under the same idempotency
    key (pocket.commands.expiry_key)."""

    name = EXPIRY
    topics = tuple(get_topic(cls) for cls in HOLD_EVENTS)
    changes_class = HoldChanges
    postgres_factory = HoldExpiryPostgresFactory
    sqlite_factory = HoldExpirySQLiteFactory

    def due(self, now: datetime, limit: int = EXPIRY_BATCH) -> list[DueHold]:
        """The open holds whose expiry has come by now, soonest first."""
        return self.recorder.due(now, limit)  # type: ignore[attr-defined,no-any-return]

    def next_expiry(self) -> datetime | None:
        """When the soonest open hold it knows of expires."""
        return self.recorder.next_expiry()  # type: ignore[attr-defined,no-any-return]

    def open_count(self) -> int:
        """How many open holds it knows of."""
        return self.recorder.open_count()  # type: ignore[attr-defined,no-any-return]


class WebhookFeed(SectionFollower):
    """The webhook follower: queues a delivery of each wallet event of Pocket's
    log for each subscription that wants it, and each balance alert, in the
    transaction that moves its position (exactly once); its runner thread
    (pocket.runner.WebhookThread) sends them (pocket.webhooks), at least once."""

    name = DELIVERIES
    topics = tuple(get_topic(cls) for cls in WALLET_EVENTS)
    changes_class = FeedChanges
    postgres_factory = WebhookPostgresFactory
    sqlite_factory = WebhookSQLiteFactory

    @property
    def subscribed(self) -> bool:
        """Whether the last section with events found a subscription (so far as
        this process saw; True until then): its runner thread gathers longer
        while none exists."""
        return bool(getattr(self.recorder, "subscribed", True))


class WalletRecordsV3(WalletRecords):
    """Version 3: and what open holds reserve, the credit limit, and what the
    wallet may spend (available)."""

    name = table_of(3)
    version = 3


VERSIONS: dict[int, type[WalletRecords]] = {
    1: WalletRecordsV1,
    2: WalletRecordsV2,
    3: WalletRecordsV3,
}
assert VERSIONS.keys() == COLUMNS.keys(), "each version needs a projector"


def projector_of(
    pocket: Pocket, version: int, *, batch_size: int = 1000, live_only: bool = True
) -> WalletRecords:
    """A version's projector following Pocket's log, outside any runner (for
    pocket migrate, benchmarks and tests), its tables made; close it after use."""
    # Even where Pocket's own tables must already exist (pocket migrate): a
    # version being built gets its tables here.
    env = {**dict(pocket.env), "CREATE_TABLE": "yes"}
    projector = VERSIONS[version](env=env)
    projector.follow(pocket.name, pocket.notification_log)
    projector.batch_size = min(batch_size, pocket.log_section_size)
    projector.live_only = live_only
    return projector


# Pocket leads; every version of the projector follows it (only the live one
# applies events), and so do the hold-expiry and webhook followers. `pocket serve` and
# `pocket follow` run this system.
PIPES: list[list[type[Application[Any]]]] = [
    [Pocket, projector] for projector in VERSIONS.values()
]
system = System(pipes=[*PIPES, [Pocket, HoldExpiry], [Pocket, WebhookFeed]])
# Pocket alone: `pocket serve --no-follower`, and the operator commands.
writer = System(pipes=[[Pocket]])
