"""What wallet_records must hold, worked out from the event store alone."""

from __future__ import annotations

from uuid import UUID

from pocket.application import Pocket
from pocket.walletrecords import LATEST_VERSION, WalletRecord


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
        try:
            wallet = pocket.get_wallet(wallet_id)
        except LookupError:
            continue  # a command record, not a wallet
        wallets[wallet_id] = WalletRecord(
            wallet.aggregate_id,
            wallet.user_id,
            wallet.balance,
            wallet.version,
            wallet.closed if version >= 2 else None,
        )
    return wallets
