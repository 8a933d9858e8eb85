"""The change feed: what Pocket tells the systems around a wallet, each event of
its log as a JSON document with a stable id, a type and a routing key.

The webhook follower (pocket.system.WebhookFeed) turns each wallet event into a
delivery for each subscription that wants it (and a balance alert where the
available amount crosses below a subscription's threshold); the broker publisher
(pocket.broker) sends the same documents to a message broker. Both name an event
by the same id, derived from the event itself (its wallet and version), so a
receiver that deduplicates by id sees each event once, however often it is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid5

from pocket.domainmodel import ZERO, Wallet
from pocket.walletrecords import WALLET_EVENTS

# The namespace of the feed's event ids (uuid5 of wallet id and version).
FEED_NAMESPACE = UUID("6c1e0b57-3f4e-4f7e-9d7a-5b0e2f1c9a41")

# Each wallet event's type in the feed, which is also its routing key on the
# broker (consumers bind hold.# or money.*).
FEED_TYPES: dict[type[Any], str] = {
    Wallet.Created: "wallet.opened",
    Wallet.MoneyAdded: "money.added",
    Wallet.MoneyDrawn: "money.drawn",
    Wallet.TransferSent: "transfer.sent",
    Wallet.TransferReceived: "transfer.received",
    Wallet.Closed: "wallet.closed",
    Wallet.HoldPlaced: "hold.placed",
    Wallet.HoldCaptured: "hold.captured",
    Wallet.HoldVoided: "hold.voided",
    Wallet.HoldExpired: "hold.expired",
    Wallet.CreditLimitSet: "limit.credit_set",
    Wallet.DailyLimitSet: "limit.daily_set",
    Wallet.AlertThresholdSet: "limit.alert_set",
}
assert set(FEED_TYPES) == set(WALLET_EVENTS), "every wallet event has a feed type"
# Not a wallet event: the webhook follower's alert that a wallet's available
# amount went below a subscription's threshold.
BALANCE_LOW = "balance.low"
# What a subscription may ask for ("*": all of them).
EVENT_TYPES = (*FEED_TYPES.values(), BALANCE_LOW)
ALL_TYPES = "*"


def event_id(wallet_id: UUID, version: int, suffix: str = "") -> UUID:
    """An event's id in the feed: the same every time it is sent (suffix: an
    alert's, which names its subscription)."""
    return uuid5(FEED_NAMESPACE, f"{wallet_id}/{version}{suffix}")


def user_number(user_id: str) -> int | None:
    """A wallet's owner as the feed names users: the users table's integer id
    (a wallet embedded under another kind of name has none)."""
    return int(user_id) if user_id.isascii() and user_id.isdigit() else None


def money(value: Decimal | None) -> str | None:
    """An amount as the API writes it: two places, as a string."""
    return None if value is None else f"{value:.2f}"


def event_data(event: Any) -> dict[str, Any]:
    """What is particular to one kind of event (the rest is common to all)."""
    data: dict[str, Any] = {}
    for name in (
        "source",
        "destination",
        "transfer_id",
        "hold_id",
        "counterparty_wallet_id",
        "counterparty_user_id",
        "description",
        "expires_at",
        "released",
        "held",
        "credit_limit",
        "daily_limit",
        "alert_below",
    ):
        if not hasattr(event, name):
            continue
        value = getattr(event, name)
        if isinstance(value, Decimal):
            value = money(value)
        elif name == "counterparty_user_id" and value is not None:
            value = int(value)
        elif value is not None and not isinstance(value, str):
            value = str(value) if not hasattr(value, "isoformat") else iso(value)
        data[name] = value
    return data


def iso(moment: Any) -> str:
    """A moment as the API writes it (ISO 8601, UTC)."""
    return str(moment.isoformat())


@dataclass(frozen=True)
class FeedEvent:
    """One event of the feed: a wallet event as receivers see it."""

    id: UUID
    type: str
    position: int
    wallet_id: UUID
    sequence: int
    body: dict[str, Any]

    def encoded(self) -> bytes:
        """The JSON body sent (compact, keys in a fixed order)."""
        return json.dumps(self.body, separators=(",", ":")).encode()


def feed_event(position: int, event: Any, user_id: int | None) -> FeedEvent:
    """A wallet event of Pocket's log at position, as the feed sends it."""
    kind = FEED_TYPES[type(event)]
    eid = event_id(event.originator_id, event.originator_version)
    amount = getattr(event, "amount", None)
    body = {
        "id": str(eid),
        "type": kind,
        "created_at": iso(event.timestamp),
        "position": position,
        "wallet_id": str(event.originator_id),
        "user_id": user_id,
        # The wallet's version after the event: consecutive within a wallet, so
        # a receiver can tell a gap from a repeat.
        "sequence": event.originator_version,
        "amount": money(amount) if isinstance(amount, Decimal) else None,
        "balance_after": money(getattr(event, "balance", None)),
        "correlation_id": getattr(event, "correlation_id", None) or None,
        "actor": getattr(event, "actor", None),
        "data": event_data(event),
    }
    return FeedEvent(
        eid, kind, position, event.originator_id, event.originator_version, body
    )


def alert_event(
    cause: FeedEvent,
    subscription_id: UUID,
    threshold: Decimal,
    available: Decimal,
    before: Decimal,
) -> FeedEvent:
    """The alert that the event cause took a wallet's available amount from
    at or above threshold (before) to below it (available)."""
    eid = event_id(cause.wallet_id, cause.sequence, f"/{BALANCE_LOW}/{subscription_id}")
    body = {
        "id": str(eid),
        "type": BALANCE_LOW,
        "created_at": cause.body["created_at"],
        "position": cause.position,
        "wallet_id": cause.body["wallet_id"],
        "user_id": cause.body["user_id"],
        "sequence": cause.sequence,
        "amount": None,
        "balance_after": cause.body["balance_after"],
        "correlation_id": cause.body["correlation_id"],
        "actor": cause.body["actor"],
        "data": {
            "threshold": money(threshold),
            "available_before": money(before),
            "available_after": money(available),
            "caused_by": cause.body["id"],
            "cause_type": cause.type,
        },
    }
    return FeedEvent(
        eid, BALANCE_LOW, cause.position, cause.wallet_id, cause.sequence, body
    )


@dataclass
class WalletFigures:
    """What the webhook follower keeps of a wallet to tell its available amount
    after each event (balance less held plus the credit limit, as the wallet's
    own available(), counting a hold until its ending is recorded)."""

    user_id: int | None
    balance: Decimal = ZERO
    held: Decimal = ZERO
    credit_limit: Decimal = ZERO
    # The wallet's own balance.low threshold (a subscription may set its own).
    alert_below: Decimal | None = None

    @property
    def available(self) -> Decimal:
        return max(ZERO, self.balance - self.held + self.credit_limit)

    def fold(self, event: Any) -> None:
        """Moves the figures past one event."""
        if isinstance(event, Wallet.HoldPlaced):
            self.held = event.held
        elif isinstance(event, Wallet.HoldCaptured):
            self.held -= event.amount + event.released
        elif isinstance(event, Wallet.HoldVoided | Wallet.HoldExpired):
            self.held -= event.amount
        elif isinstance(event, Wallet.CreditLimitSet):
            self.credit_limit = event.credit_limit
        elif isinstance(event, Wallet.AlertThresholdSet):
            self.alert_below = event.alert_below
        balance = getattr(event, "balance", None)
        if isinstance(balance, Decimal):
            self.balance = balance


@dataclass
class FeedChanges:
    """A section of Pocket's log, as the webhook follower folds it: each wallet
    event with its position, in log order (the recorder matches them against the
    subscriptions inside the section's transaction)."""

    events: list[tuple[int, Any]] = field(default_factory=list)
    # The position of the notification being folded (set by the follower).
    position: int = 0

    def fold(self, event: Any) -> None:
        self.events.append((self.position, event))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>.<body>" under the subscription's secret>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0
) -> bool:
    """What a receiver does (docs/webhooks.md shows it): the signature matches
    the body and its timestamp is recent (an old one is a replay)."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before the next try after attempts failed ones: doubling from
    base up to cap, with jitter (a random half to all of it), so that receivers
    coming back are not hit by every retry at once."""
    delay = min(cap, base * 2.0 ** max(0, attempts - 1))
    return delay * rng.uniform(0.5, 1.0)
