"""What Pocket's commands and queries answer: frozen views of a wallet, a transfer
and a wallet's history, made from the aggregate and its events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pocket.domainmodel import Wallet


@dataclass(frozen=True)
class WalletInfo:
    """A wallet as a caller sees it right after reading or changing it."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int
    closed: bool
    modified_on: datetime
    # True when this is the answer an earlier run of the same keyed command gave.
    replayed: bool = field(default=False, compare=False)

    @classmethod
    def of(cls, wallet: Wallet) -> WalletInfo:
        """The caller's view of a wallet aggregate."""
        return cls(
            wallet.id,
            wallet.user_id,
            wallet.balance,
            wallet.version,
            wallet.closed,
            wallet.modified_on,
        )


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


Result = WalletInfo | TransferInfo


@dataclass(frozen=True)
class HistoryEntry:
    """One movement of money, as recorded in the wallet's history."""

    id: int
    type: Literal["IN", "OUT"]
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


@dataclass(frozen=True)
class HistoryPage:
    """Consecutive entries of a wallet's history, and whether more follow."""

    wallet: WalletInfo
    transactions: list[HistoryEntry]
    has_more: bool


def to_history_entry(event: object) -> HistoryEntry | None:
    """The history entry for a money event; None for other events."""
    common: dict[str, Any] = {}
    if isinstance(
        event,
        Wallet.MoneyAdded
        | Wallet.MoneyDrawn
        | Wallet.TransferSent
        | Wallet.TransferReceived,
    ):
        common = {
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
    return None
