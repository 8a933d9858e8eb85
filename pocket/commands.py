"""Pocket's commands, as data: what a caller asks of a wallet, built once at the
edge (an HTTP route, the CLI, a Python caller) and handed down whole to the
application's handler of the same name (pocket.application).

Every command says, beside its own fields, why it is made (its cause: who, under
which request), the client's id for it if any (its idempotency key: a command
sent again under its key runs once, see pocket.idempotency), and what must still
hold when it commits (its guard: the caller's token, see pocket.guards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID, uuid4

from pocket.domainmodel import Cause, correlation_id
from pocket.guards import TokenGuard
from pocket.idempotency import Idempotency, idempotency


def new_cause() -> Cause:
    """The cause of a change made with no request around it."""
    return Cause(actor="system", correlation_id=correlation_id())


@dataclass(frozen=True, kw_only=True)
class Command:
    """What every command carries beside its own fields."""

    # Who caused it, under which request (by default: the system, a fresh id).
    cause: Cause = field(default_factory=new_cause)
    # The client's id for it (an Idempotency-Key), if it sent one.
    command_id: str | None = None
    # What must still hold when it commits (the token it was sent with), if anything.
    guard: TokenGuard | None = None

    def key(self) -> Idempotency | None:
        """Its idempotency key and fingerprint, if it has a command id."""
        return idempotency(self.command_id, *self.fingerprint())

    def wallet_ids(self) -> tuple[UUID, ...]:
        """The stored wallets it is about (read before its handler runs, with
        the other commands' of its batch, in one read)."""
        raise NotImplementedError

    def fingerprint(self) -> tuple[object, ...]:
        """What it asks for, to tell a resend from another command under the
        same key. The parts, and their order, are those records have been
        written with: changing them would refuse resends of earlier commands."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class OpenWallet(Command):
    """Open an empty wallet for a user."""

    user_id: str
    wallet_id: UUID = field(default_factory=uuid4)

    def wallet_ids(self) -> tuple[UUID, ...]:
        return ()  # A new wallet: there is none to read.

    def fingerprint(self) -> tuple[object, ...]:
        return ("open", self.user_id, self.wallet_id)


@dataclass(frozen=True, kw_only=True)
class AddMoney(Command):
    """Put money into a wallet, from a source (a card, a bank, a bonus)."""

    wallet_id: UUID
    amount: Decimal
    source: str

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("add_money", self.wallet_id, self.amount, self.source)


@dataclass(frozen=True, kw_only=True)
class DrawMoney(Command):
    """Take money out of a wallet, to a destination; never below zero."""

    wallet_id: UUID
    amount: Decimal
    destination: str

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("draw_money", self.wallet_id, self.amount, self.destination)


@dataclass(frozen=True, kw_only=True)
class Transfer(Command):
    """Move money from one wallet to another: both sides, or neither."""

    sender_id: UUID
    receiver_id: UUID
    amount: Decimal
    description: str = ""

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.sender_id, self.receiver_id)

    def fingerprint(self) -> tuple[object, ...]:
        return (
            "transfer",
            self.sender_id,
            self.receiver_id,
            self.amount,
            self.description,
        )


@dataclass(frozen=True, kw_only=True)
class CloseWallet(Command):
    """Close an empty wallet for good (its history stays readable)."""

    wallet_id: UUID

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("close", self.wallet_id)


@dataclass(frozen=True, kw_only=True)
class PlaceHold(Command):
    """Reserve an amount in a wallet until an expiry, for a destination outside
    Pocket or for another wallet (receiver_id), to capture or void later; refused
    as a draw would be. Its expiry is a time (expires_at) or a number of seconds
    from when it runs (expires_in): one of the two."""

    wallet_id: UUID
    amount: Decimal
    destination: str | None = None
    receiver_id: UUID | None = None
    description: str = ""
    expires_at: datetime | None = None
    expires_in: int | None = None

    def wallet_ids(self) -> tuple[UUID, ...]:
        if self.receiver_id is None:
            return (self.wallet_id,)
        return (self.wallet_id, self.receiver_id)

    def fingerprint(self) -> tuple[object, ...]:
        return (
            "place_hold",
            self.wallet_id,
            self.amount,
            self.destination,
            self.receiver_id,
            self.description,
            self.expires_at,
            self.expires_in,
        )


@dataclass(frozen=True, kw_only=True)
class CaptureHold(Command):
    """End an open hold by moving what it holds, or less (amount; the rest is
    released), to its destination or its receiver's wallet."""

    wallet_id: UUID
    hold_id: UUID
    amount: Decimal | None = None

    def wallet_ids(self) -> tuple[UUID, ...]:
        # A capture to a wallet gets the receiver too, once the hold names it.
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("capture_hold", self.wallet_id, self.hold_id, self.amount)


@dataclass(frozen=True, kw_only=True)
class VoidHold(Command):
    """End an open hold with nothing taken."""

    wallet_id: UUID
    hold_id: UUID

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("void_hold", self.wallet_id, self.hold_id)


@dataclass(frozen=True, kw_only=True)
class ExpireHold(Command):
    """Record that a hold reached its expiry (what the hold-expiry follower
    sends, under the key expiry_key() gives it)."""

    wallet_id: UUID
    hold_id: UUID

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("expire_hold", self.wallet_id, self.hold_id)


def expiry_key(hold_id: UUID) -> str:
    """The command id of a hold's expiry: every follower that sends it sends the
    same one, so that it runs once."""
    return f"pocket-expiry-{hold_id}"


@dataclass(frozen=True, kw_only=True)
class SetCreditLimit(Command):
    """Let a wallet's available amount go this far below zero (0: not at all)."""

    wallet_id: UUID
    credit_limit: Decimal

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("set_credit_limit", self.wallet_id, self.credit_limit)


@dataclass(frozen=True, kw_only=True)
class SetDailyLimit(Command):
    """Cap what a wallet spends in a UTC day (None: no cap)."""

    wallet_id: UUID
    daily_limit: Decimal | None

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("set_daily_limit", self.wallet_id, self.daily_limit)


@dataclass(frozen=True, kw_only=True)
class SetAlertThreshold(Command):
    """Ask for a balance.low event when a wallet's available amount goes below
    a threshold (None: never)."""

    wallet_id: UUID
    alert_below: Decimal | None

    def wallet_ids(self) -> tuple[UUID, ...]:
        return (self.wallet_id,)

    def fingerprint(self) -> tuple[object, ...]:
        return ("set_alert_threshold", self.wallet_id, self.alert_below)
