"""What the admin does with webhooks (through the API, the console, or embedded):
subscribe a receiver, see where each subscription stands, look at its deliveries,
replay it from a position of the log, and unsubscribe."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

from pocket.application import Pocket
from pocket.catalog import tracked_position
from pocket.database import Database
from pocket.errors import InvalidWebhook, WebhookNotFound
from pocket.feed import ALL_TYPES, EVENT_TYPES, money
from pocket.webhook_store import (
    DELIVERIES,
    STATUSES,
    Delivery,
    QueueFigures,
    Subscription,
    add_subscription,
    create_tables,
    deliveries,
    queue_figures,
    remove_subscription,
    request_replay,
    subscription,
    subscriptions,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 200


@dataclass(frozen=True)
class SubscriptionStatus:
    """A subscription with where its deliveries stand."""

    subscription: Subscription
    queue: QueueFigures
    # Every event up to here is delivered or parked; lag: events after it.
    position: int
    head: int

    def as_json(self, *, secret: bool = False) -> dict[str, Any]:
        """As the admin API shows it (the secret only when it is made)."""
        sub = self.subscription
        shown: dict[str, Any] = {
            "id": str(sub.id),
            "url": sub.url,
            "events": list(sub.events),
            "user_id": sub.user_id,
            "alert_below": money(sub.alert_below),
            "description": sub.description,
            "created_at": sub.created_at,
            "start_position": sub.start_position,
            "position": self.position,
            "lag": max(0, self.head - self.position),
            "pending": self.queue.pending,
            "parked": self.queue.parked,
            "last_delivered_at": sub.last_delivered_at,
            "last_error": sub.last_error,
            "last_error_at": sub.last_error_at,
            "replay": None
            if self.queue.replay is None
            else {"after": self.queue.replay[0], "until": self.queue.replay[1]},
        }
        if secret:
            shown["secret"] = sub.secret
        return shown


class Webhooks:
    """The admin's webhook operations on Pocket's database."""

    def __init__(self, pocket: Pocket, db: Database) -> None:
        self.pocket = pocket
        self.db = db

    @classmethod
    def of(cls, pocket: Pocket) -> Webhooks:
        """On the application's database, the tables made if need be."""
        webhooks = cls(pocket, Database.of(pocket))
        with webhooks.db.transaction() as tx:
            create_tables(tx)
        return webhooks

    def subscribe(
        self,
        url: str,
        events: list[str] | None = None,
        *,
        user_id: int | None = None,
        alert_below: Decimal | None = None,
        description: str = "",
    ) -> SubscriptionStatus:
        """A new subscription to events after the log's head now; its status
        (with the secret its deliveries are signed with)."""
        check_url(url)
        wanted = check_events(events)
        if len(description) > MAX_DESCRIPTION_LENGTH:
            msg = f"At most {MAX_DESCRIPTION_LENGTH} characters."
            raise InvalidWebhook("description", msg)
        head = self.pocket.recorder.max_notification_id() or 0
        sub = Subscription(
            id=uuid4(),
            url=url,
            events=wanted,
            user_id=user_id,
            alert_below=alert_below,
            description=description,
            secret=SECRET_PREFIX + secrets.token_urlsafe(32),
            start_position=head,
            created_at=time.time(),
        )
        with self.db.transaction() as tx:
            add_subscription(tx, sub)
        return self.status(sub.id)

    def all(self) -> list[SubscriptionStatus]:
        """Every subscription's status, oldest first."""
        head = self.head()
        with self.db.transaction(commit=False) as tx:
            followed = tracked_position(tx, DELIVERIES) or 0
            return [
                self._status(sub, queue_figures(tx, sub.id), followed, head)
                for sub in subscriptions(tx)
            ]

    def status(self, subscription_id: UUID) -> SubscriptionStatus:
        """One subscription's status."""
        head = self.head()
        with self.db.transaction(commit=False) as tx:
            sub = subscription(tx, subscription_id)
            if sub is None:
                raise WebhookNotFound(f"No webhook {subscription_id}.")
            followed = tracked_position(tx, DELIVERIES) or 0
            return self._status(sub, queue_figures(tx, sub.id), followed, head)

    def _status(
        self, sub: Subscription, queue: QueueFigures, followed: int, head: int
    ) -> SubscriptionStatus:
        position = followed if queue.first_pending is None else queue.first_pending - 1
        position = max(position, min(sub.start_position, followed))
        return SubscriptionStatus(sub, queue, position, head)

    def head(self) -> int:
        """The last position of Pocket's log."""
        return self.pocket.recorder.max_notification_id() or 0

    def unsubscribe(self, subscription_id: UUID) -> None:
        """Deletes a subscription and its queue."""
        with self.db.transaction() as tx:
            if not remove_subscription(tx, subscription_id):
                raise WebhookNotFound(f"No webhook {subscription_id}.")

    def deliveries_of(
        self,
        subscription_id: UUID,
        status: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[Delivery]:
        """A subscription's deliveries, newest first (status: only those)."""
        if status is not None and status not in STATUSES:
            msg = f"One of {', '.join(STATUSES)}."
            raise InvalidWebhook("status", msg)
        self.status(subscription_id)  # 404 for an unknown one.
        with self.db.transaction(commit=False) as tx:
            return deliveries(tx, subscription_id, status, limit, before)

    def replay(self, subscription_id: UUID, from_position: int) -> tuple[int, int]:
        """Sends the subscription's events from a position of the log again (up
        to where the follower has queued; it queues the later ones itself), and
        its balance alerts there; returns the range (after, until)."""
        if from_position < 1:
            raise InvalidWebhook("from_position", "A position from 1 up.")
        now = time.time()
        with self.db.transaction() as tx:
            # A write first: on SQLite, a transaction that read first cannot
            # write once another has (it would be refused at once, not wait).
            request_replay(tx, subscription_id, 0, 0, now)
            if subscription(tx, subscription_id) is None:
                raise WebhookNotFound(f"No webhook {subscription_id}.")
            until = tracked_position(tx, DELIVERIES) or 0
            after = min(from_position - 1, until)
            request_replay(tx, subscription_id, after, until, now)
        return after, until


def check_url(url: str) -> None:
    """An http or https URL with a host (and no credentials in it)."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook("url", f"A URL of at most {MAX_URL_LENGTH} characters.")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as error:
        raise InvalidWebhook("url", f"The port is not a number: {error}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidWebhook("url", "An http:// or https:// URL with a host.")
    if parts.username or parts.password:
        msg = "No credentials in the URL: the signature says it is Pocket."
        raise InvalidWebhook("url", msg)
    if any(ch.isspace() for ch in url):
        raise InvalidWebhook("url", "A URL has no spaces.")


def check_events(events: list[str] | None) -> tuple[str, ...]:
    """The event types asked for: known ones, at least one ("*": all)."""
    if events is None:
        return (ALL_TYPES,)
    if not events:
        raise InvalidWebhook("events", 'At least one event type, or "*".')
    unknown = [e for e in events if e != ALL_TYPES and e not in EVENT_TYPES]
    if unknown:
        names = ", ".join(map(repr, unknown))
        msg = f'Unknown event type(s) {names}: one of {", ".join(EVENT_TYPES)} or "*".'
        raise InvalidWebhook("events", msg)
    return tuple(dict.fromkeys(events))
