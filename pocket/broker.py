"""The broker publisher: a follower of Pocket's log that publishes every wallet
event, as the change feed's document (pocket.feed), to a RabbitMQ topic exchange,
and moves its tracking position only past what the broker has confirmed.

At least once: a section of the log is published whole and confirmed before its
position is recorded (by compare-and-set, as every follower's), so a crash, a
broker that fails, or a standby taking over sends again at most the section in
hand. Each message's id is its event's feed id, the same every time it is sent,
by which consumers deduplicate. In order per wallet: one publisher at a time (the
follower's lock) publishes the log in order, a section only after the one before
it was confirmed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import LocalNotificationLog, ProcessingEvent
from eventsourcing.persistence import Recording
from eventsourcing.system import System
from eventsourcing.utils import get_topic

from pocket.amqp import ConfirmedPublisher, Message
from pocket.application import Pocket
from pocket.config import DEFAULT_AMQP_EXCHANGE
from pocket.domainmodel import Wallet
from pocket.feed import FeedChanges, FeedEvent, feed_event, user_number
from pocket.system import SectionFollower, system
from pocket.walletrecords import WALLET_EVENTS, Batch
from pocket.walletrecords_postgres import (
    WalletRecordsPostgresFactory,
    WalletRecordsPostgresRecorder,
)
from pocket.walletrecords_sqlite import (
    WalletRecordsSQLiteFactory,
    WalletRecordsSQLiteRecorder,
)

# The follower's name (and so its tracking table, broker_publisher_tracking, and
# its lock, follower-broker_publisher).
PUBLISHER = "broker_publisher"
AMQP_URL_KEY = "POCKET_AMQP_URL"
AMQP_EXCHANGE_KEY = "POCKET_AMQP_EXCHANGE"
# Wallets whose owner the publisher remembers (a miss is one indexed read).
OWNERS_REMEMBERED = 100_000


def publishes(env: Mapping[str, str]) -> bool:
    """Whether the configuration names a broker to publish to."""
    return bool(env.get(AMQP_URL_KEY))


def system_for(env: Mapping[str, str]) -> System:
    """The system `pocket serve` and `pocket follow` run: Pocket's, and the
    broker publisher following Pocket when POCKET_AMQP_URL is set."""
    if not publishes(env):
        return system
    pipes = [[system.get_app_cls(a), system.get_app_cls(b)] for a, b in system.edges]
    return System(pipes=[*pipes, [Pocket, EventPublisher]])


def message_of(document: FeedEvent, timestamp: int) -> Message:
    """A feed document as the broker gets it: routed by its type, named by its id."""
    return Message(document.type, str(document.id), document.encoded(), timestamp)


class PublisherPostgresRecorder(WalletRecordsPostgresRecorder):
    """The publisher's position on PostgreSQL, moved by compare-and-set (it
    keeps no rows: what it sends is the broker's)."""

    def _apply(self, curs: Any, changes: Any) -> None:
        pass


class PublisherSQLiteRecorder(WalletRecordsSQLiteRecorder):
    """The publisher's position on SQLite, moved by compare-and-set."""

    def _apply(self, c: Any, changes: Any) -> None:
        pass


class PublisherPostgresFactory(WalletRecordsPostgresFactory):
    """Pocket's PostgreSQL factory, whose process recorder is the publisher's."""

    process_recorder_class = PublisherPostgresRecorder


class PublisherSQLiteFactory(WalletRecordsSQLiteFactory):
    """Pocket's SQLite factory, whose process recorder is the publisher's."""

    process_recorder_class = PublisherSQLiteRecorder


class EventPublisher(SectionFollower):
    """Publishes each section of Pocket's log to the broker, then records its
    position; the runner's PublisherThread runs it."""

    name = PUBLISHER
    topics = tuple(get_topic(cls) for cls in WALLET_EVENTS)
    changes_class = FeedChanges
    postgres_factory = PublisherPostgresFactory
    sqlite_factory = PublisherSQLiteFactory

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self.broker = ConfirmedPublisher(
            self.env.get(AMQP_URL_KEY) or "",
            self.env.get(AMQP_EXCHANGE_KEY) or DEFAULT_AMQP_EXCHANGE,
            interrupt=self.stopping,
        )
        # Each wallet's owner, as its Created event says (oldest first out).
        self.owners: OrderedDict[UUID, int | None] = OrderedDict()
        # Messages this object published and the broker confirmed (for metrics).
        self.published = 0

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Publishes the section's events and waits for the broker's confirms,
        then records the position: nothing is counted as sent that the broker
        has not confirmed (a BrokerUnavailable leaves the position where it was)."""
        batch = processing_event.saved_kwargs.get("batch")
        messages = []
        if isinstance(batch, Batch) and isinstance(batch.changes, FeedChanges):
            messages = [
                message_of(
                    feed_event(position, event, self.owner(event)),
                    int(event.timestamp.timestamp()),
                )
                for position, event in batch.changes.events
            ]
        if messages:
            self.broker.publish(messages)
        recordings = super()._record(processing_event)
        self.published += len(messages)
        return recordings

    def owner(self, event: Any) -> int | None:
        """The user whose wallet the event is of: the wallet's Created event says
        (remembered, or read again from the log: the first event of the wallet)."""
        wallet_id: UUID = event.originator_id
        if isinstance(event, Wallet.Created):
            owner = user_number(event.user_id)
        elif wallet_id in self.owners:
            self.owners.move_to_end(wallet_id)
            return self.owners[wallet_id]
        else:
            owner = self.read_owner(wallet_id)
        self.owners[wallet_id] = owner
        if len(self.owners) > OWNERS_REMEMBERED:
            self.owners.popitem(last=False)
        return owner

    def read_owner(self, wallet_id: UUID) -> int | None:
        """The owner its Created event, the wallet's first, names."""
        log = self.readers[Pocket.name].notification_log
        if not isinstance(log, LocalNotificationLog):
            return None
        first = log.recorder.select_events(wallet_id, lte=1)
        if not first:
            return None
        created = self.mappers[Pocket.name].to_domain_event(first[0])
        return user_number(cast(Wallet.Created, created).user_id)

    def close(self) -> None:
        """Closes the broker connection and the database's."""
        self.broker.close()
        super().close()
