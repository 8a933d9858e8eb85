"""What users, wallets, transfers and transactions look like as JSON: money as
strings with two places; a user's id an integer wherever it appears, wallet and
transfer ids UUID strings."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any

from pocket.application import HistoryEntry, HoldInfo, TransferInfo, WalletInfo
from pocket.service import Account
from pocket.users import User
from pocket.walletrecords import WalletRecord


def money(amount: Decimal) -> str:
    """Money as it leaves the API: a string with two places."""
    return f"{amount:.2f}"


@functools.lru_cache(maxsize=4096)
def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it (users seldom change: kept for the next answer)."""
    return {
        "id": user.id,
        "name": user.name,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def user_id(text: str) -> int:
    """A user's id as the API shows it: the users table's integer. The wallet
    aggregate and its events keep it as text (as the seed did); every wallet is
    opened for a row of the users table, so the text is that row's id."""
    return int(text)


def wallet_json(wallet: WalletInfo) -> dict[str, Any]:
    """A wallet as the API shows it: its balance, what open holds reserve of it
    (held), what it may spend (available), and its limits (a credit limit of
    0.00 lets it go below zero not at all; a daily limit of null: none)."""
    return {
        "aggregate_id": str(wallet.aggregate_id),
        "user_id": user_id(wallet.user_id),
        "balance": money(wallet.balance),
        "version": wallet.version,
        "closed": wallet.closed,
        "held": money(wallet.held),
        "available": money(wallet.available),
        "credit_limit": money(wallet.credit_limit),
        "daily_limit": optional_money(wallet.daily_limit),
        "alert_below": optional_money(wallet.alert_below),
    }


def optional_money(amount: Decimal | None) -> str | None:
    """Money, or null where there is none."""
    return None if amount is None else money(amount)


def moment(when: datetime | None) -> str | None:
    """A date and time as the API shows it (ISO 8601, with its offset), or null."""
    return None if when is None else when.isoformat()


def hold_json(hold: HoldInfo) -> dict[str, Any]:
    """A hold as its owner sees it: with their wallet as the command that answers
    with it left it (not the receiver's, whose balance is theirs alone)."""
    counterparty = None
    if hold.counterparty_user_id is not None:
        counterparty = {
            "user_id": user_id(hold.counterparty_user_id),
            "wallet_id": str(hold.counterparty_wallet_id),
        }
    shown: dict[str, Any] = {
        "id": str(hold.id),
        "status": hold.status,
        "amount": money(hold.amount),
        "expires_at": hold.expires_at.isoformat(),
        "destination": hold.destination,
        "counterparty": counterparty,
        "description": hold.description,
        "placed_on": hold.placed_on.isoformat(),
        "captured": optional_money(hold.captured),
        "released": optional_money(hold.released),
        "ended_on": moment(hold.ended_on),
        "transfer_id": None if hold.transfer_id is None else str(hold.transfer_id),
    }
    if hold.wallet is not None:
        shown["wallet"] = wallet_json(hold.wallet)
    return shown


def record_json(record: WalletRecord | None) -> dict[str, Any] | None:
    """A wallet as the projection has it (None until the projection reaches it)."""
    if record is None:
        return None
    row: dict[str, Any] = {
        "aggregate_id": str(record.aggregate_id),
        "user_id": user_id(record.user_id),
        "balance": money(record.balance),
        "version": record.version,
    }
    if record.closed is not None:  # versions of wallet_records that keep it
        row["closed"] = record.closed
    if record.held is not None and record.available is not None:  # from v3 on
        row.update(held=money(record.held), available=money(record.available))
    return row


def account_json(account: Account) -> dict[str, Any]:
    """The seed's response shape: the user and their wallet."""
    return {"user": user_json(account.user), "wallet": wallet_json(account.wallet)}


def transfer_json(result: TransferInfo, from_user: int, to_user: int) -> dict[str, Any]:
    """A transfer as its sender sees it."""
    return {
        "id": str(result.id),
        "from_user_id": from_user,
        "to_user_id": to_user,
        "amount": money(result.amount),
        "description": result.description,
        "date": result.sender.modified_on.isoformat(),
    }


def transaction_json(transaction: HistoryEntry) -> dict[str, Any]:
    """One entry of the transactions list."""
    entry: dict[str, Any] = {
        "id": transaction.id,
        "type": transaction.type,
        "amount": money(transaction.amount),
        "balance": money(transaction.balance),
        "date": transaction.date.isoformat(),
    }
    if transaction.source is not None:
        entry["source"] = transaction.source
    if transaction.destination is not None:
        entry["destination"] = transaction.destination
    if transaction.transfer_id is not None:
        entry["transfer_id"] = str(transaction.transfer_id)
    if transaction.counterparty_user_id is not None:
        # A transfer's events, and a hold's for another user, name both sides.
        entry["counterparty"] = {
            "user_id": user_id(transaction.counterparty_user_id),
            "wallet_id": str(transaction.counterparty_wallet_id),
        }
    if transaction.description is not None:
        entry["description"] = transaction.description
    if transaction.hold_id is not None:
        entry["hold_id"] = str(transaction.hold_id)
    if transaction.expires_at is not None:
        entry["expires_at"] = transaction.expires_at.isoformat()
    if transaction.outcome is not None:
        entry["outcome"] = transaction.outcome
    if transaction.released is not None:
        entry["released"] = money(transaction.released)
    entry["actor"] = transaction.actor
    entry["correlation_id"] = transaction.correlation_id
    return entry
