"""What wallet_records must hold, worked out from the event store alone."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pocket.application import Pocket
from pocket.domainmodel import ZERO, Wallet
from pocket.walletrecords import LATEST_VERSION, WalletRecord, has_closed, has_holds


def replayed_records(
    pocket: Pocket, version: int = LATEST_VERSION
) -> dict[UUID, WalletRecord]:
    """Every wallet as its events say, as a row of that projection version."""
    wallets: dict[UUID, WalletRecord] = {}
    head = pocket.recorder.max_notification_id() or 0
    for notification in pocket.recorder.select_notifications(start=1, limit=head):
        wallet_id = UUID(str(notification.originator_id))
        if wallet_id in wallets:
            continue
        wallet: object = pocket.repository.get(wallet_id)
        if not isinstance(wallet, Wallet):
            continue  # a command record, not a wallet
        wallets[wallet_id] = record_of(wallet, version)
    return wallets


def record_of(wallet: Wallet, version: int) -> WalletRecord:
    """A wallet aggregate as a row of a version: held counts every hold its
    events have not ended, past its expiry or not (as the projection does)."""
    held = sum((Decimal(h["amount"]) for h in wallet.holds.values()), ZERO)
    holds = has_holds(version)
    return WalletRecord(
        wallet.id,
        wallet.user_id,
        wallet.balance,
        wallet.version,
        wallet.closed if has_closed(version) else None,
        held=held if holds else None,
        available=wallet.balance - held + wallet.credit_limit if holds else None,
        credit_limit=wallet.credit_limit if holds else None,
    )
