"""What Pocket's commands and queries answer: frozen views of a wallet, a transfer
and a wallet's history, made from the aggregate and its events."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pocket.domainmodel import (
    CAPTURED,
    EXPIRED,
    OPEN,
    VOIDED,
    ZERO,
    Wallet,
    utcnow,
)


@dataclass(frozen=True)
class WalletInfo:
    """A wallet as a caller sees it right after reading or changing it: its
    balance, what its open holds reserve (held), and what it may spend
    (available: the balance, less held, plus its credit limit)."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int
    closed: bool
    modified_on: datetime
    held: Decimal = ZERO
    credit_limit: Decimal = ZERO
    daily_limit: Decimal | None = None
    alert_below: Decimal | None = None
    # True when this is the answer an earlier run of the same keyed command gave.
    replayed: bool = field(default=False, compare=False)

    @property
    def available(self) -> Decimal:
        """What the wallet may spend (as of this view)."""
        return self.balance - self.held + self.credit_limit

    @classmethod
    def of(cls, wallet: Wallet, now: datetime | None = None) -> WalletInfo:
        """The caller's view of a wallet aggregate, at a moment (now by default:
        a hold past its expiry is not counted as held)."""
        return cls(
            wallet.id,
            wallet.user_id,
            wallet.balance,
            wallet.version,
            wallet.closed,
            wallet.modified_on,
            wallet.held(now),
            wallet.credit_limit,
            wallet.daily_limit,
            wallet.alert_below,
        )


HoldStatus = Literal["open", "captured", "voided", "expired"]


@dataclass(frozen=True)
class HoldInfo:
    """A hold: what it reserves, for whom, until when, and how it ended (if it
    has); with the wallet as the command that answers with it left it."""

    id: UUID
    status: HoldStatus
    amount: Decimal
    expires_at: datetime
    destination: str | None
    counterparty_wallet_id: UUID | None
    counterparty_user_id: str | None
    description: str
    placed_on: datetime
    # How it ended: what a capture took and released (a void or an expiry
    # releases it all), when, and the transfer a capture to a wallet made.
    captured: Decimal | None = None
    released: Decimal | None = None
    ended_on: datetime | None = None
    transfer_id: UUID | None = None
    # The wallet (and, for a capture to a wallet, the receiver's) as left by the
    # command that answers with this hold; None in lists of holds.
    wallet: WalletInfo | None = None
    receiver: WalletInfo | None = None
    # True when this is the answer an earlier run of the same keyed command gave.
    replayed: bool = field(default=False, compare=False)

    @classmethod
    def open_of(cls, hold_id: str | UUID, hold: dict[str, Any]) -> HoldInfo:
        """An open hold, as a wallet keeps it (marked expired once past its
        expiry, whether or not the expiry is recorded yet)."""
        expired = hold["expires_at"] <= utcnow()
        return cls(
            id=hold_id if isinstance(hold_id, UUID) else UUID(hold_id),
            status=EXPIRED if expired else OPEN,
            amount=hold["amount"],
            expires_at=hold["expires_at"],
            destination=hold["destination"],
            counterparty_wallet_id=hold["counterparty_wallet_id"],
            counterparty_user_id=hold["counterparty_user_id"],
            description=hold["description"],
            placed_on=hold["placed_on"],
            released=hold["amount"] if expired else None,
        )

    @classmethod
    def from_events(cls, events: list[object]) -> HoldInfo | None:
        """A hold from its events (placed, then its ending if any), or None."""
        placed = next((e for e in events if isinstance(e, Wallet.HoldPlaced)), None)
        if placed is None:
            return None
        info = cls(
            id=placed.hold_id,
            status=OPEN,
            amount=placed.amount,
            expires_at=placed.expires_at,
            destination=placed.destination,
            counterparty_wallet_id=placed.counterparty_wallet_id,
            counterparty_user_id=placed.counterparty_user_id,
            description=placed.description,
            placed_on=placed.timestamp,
        )
        for ending in events:
            if isinstance(ending, Wallet.HoldCaptured):
                return info.ended(
                    CAPTURED,
                    ending.timestamp,
                    captured=ending.amount,
                    released=ending.released,
                    transfer_id=ending.transfer_id,
                )
            if isinstance(ending, Wallet.HoldVoided):
                return info.ended(VOIDED, ending.timestamp, released=ending.amount)
            if isinstance(ending, Wallet.HoldExpired):
                return info.ended(EXPIRED, ending.timestamp, released=ending.amount)
        if placed.expires_at <= utcnow():
            return info.ended(EXPIRED, None, released=placed.amount)
        return info

    def ended(
        self,
        status: HoldStatus,
        on: datetime | None,
        *,
        released: Decimal,
        captured: Decimal | None = None,
        transfer_id: UUID | None = None,
    ) -> HoldInfo:
        """The hold as it ended."""
        return replace(
            self,
            status=status,
            ended_on=on,
            captured=captured,
            released=released,
            transfer_id=transfer_id,
        )

    def answer(
        self, wallet: WalletInfo, receiver: WalletInfo | None = None
    ) -> HoldInfo:
        """The hold as a command's answer, with the wallets it left."""
        return replace(self, wallet=wallet, receiver=receiver)


@dataclass(frozen=True)
class TransferInfo:
    """A transfer as its caller sees it: both wallets as it left them."""

    id: UUID
    amount: Decimal
    description: str
    sender: WalletInfo
    receiver: WalletInfo
    # True when this is the answer an earlier run of the same keyed command gave.
    replayed: bool = field(default=False, compare=False)


Result = WalletInfo | TransferInfo | HoldInfo


@dataclass(frozen=True)
class HistoryEntry:
    """One movement of money, as recorded in the wallet's history."""

    id: int
    # IN, OUT: money came in, went out (a capture too); HOLD: a hold was placed
    # (nothing moved); RELEASE: a hold ended with nothing taken (voided, expired).
    type: Literal["IN", "OUT", "HOLD", "RELEASE"]
    amount: Decimal
    date: datetime
    balance: Decimal
    actor: str | None
    correlation_id: str | None
    source: str | None = None
    destination: str | None = None
    transfer_id: UUID | None = None
    counterparty_user_id: str | None = None
    counterparty_wallet_id: UUID | None = None
    description: str | None = None
    # For a hold's entries: its id; its expiry (HOLD); how it ended (OUT:
    # captured, RELEASE: voided or expired) and what a capture released.
    hold_id: UUID | None = None
    expires_at: datetime | None = None
    outcome: str | None = None
    released: Decimal | None = None


@dataclass(frozen=True)
class HistoryPage:
    """Consecutive entries of a wallet's history, and whether more follow."""

    wallet: WalletInfo
    transactions: list[HistoryEntry]
    has_more: bool


def to_history_entry(event: object) -> HistoryEntry | None:
    """The history entry for a money or hold event; None for other events."""
    if not isinstance(event, MOVEMENTS):
        return None
    common: dict[str, Any] = {
        "id": event.originator_version,
        "amount": event.amount,
        "date": event.timestamp,
        "balance": event.balance,
        "actor": event.actor,
        "correlation_id": event.correlation_id,
    }
    if isinstance(event, Wallet.MoneyAdded):
        return HistoryEntry(type="IN", source=event.source, **common)
    if isinstance(event, Wallet.MoneyDrawn):
        return HistoryEntry(type="OUT", destination=event.destination, **common)
    if isinstance(event, Wallet.TransferSent | Wallet.TransferReceived):
        return HistoryEntry(
            type="OUT" if isinstance(event, Wallet.TransferSent) else "IN",
            transfer_id=event.transfer_id,
            counterparty_user_id=event.counterparty_user_id,
            counterparty_wallet_id=event.counterparty_wallet_id,
            description=event.description,
            **common,
        )
    return hold_entry(event, common)


def hold_entry(event: object, common: dict[str, Any]) -> HistoryEntry:
    """The history entry for a hold's event."""
    if isinstance(event, Wallet.HoldPlaced):
        return HistoryEntry(
            type="HOLD",
            destination=event.destination,
            counterparty_user_id=event.counterparty_user_id,
            counterparty_wallet_id=event.counterparty_wallet_id,
            description=event.description,
            hold_id=event.hold_id,
            expires_at=event.expires_at,
            **common,
        )
    if isinstance(event, Wallet.HoldCaptured):
        return HistoryEntry(
            type="OUT",
            destination=event.destination,
            transfer_id=event.transfer_id,
            counterparty_user_id=event.counterparty_user_id,
            counterparty_wallet_id=event.counterparty_wallet_id,
            description=event.description,
            hold_id=event.hold_id,
            outcome=CAPTURED,
            released=event.released,
            **common,
        )
    assert isinstance(event, Wallet.HoldVoided | Wallet.HoldExpired)
    return HistoryEntry(
        type="RELEASE",
        hold_id=event.hold_id,
        outcome=VOIDED if isinstance(event, Wallet.HoldVoided) else EXPIRED,
        **common,
    )


# The events a wallet's history shows.
MOVEMENTS = (
    Wallet.MoneyAdded,
    Wallet.MoneyDrawn,
    Wallet.TransferSent,
    Wallet.TransferReceived,
    Wallet.HoldPlaced,
    Wallet.HoldCaptured,
    Wallet.HoldVoided,
    Wallet.HoldExpired,
)
