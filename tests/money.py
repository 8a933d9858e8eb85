"""A user's money commands, made through the service as the routes make them
(pocket/web/money.py): the user's wallet (opened first if a crash left it
unopened), the command from pocket.commands, and the user with what it left."""

from __future__ import annotations

from decimal import Decimal

from pocket.application import TransferInfo
from pocket.commands import AddMoney, CloseWallet, DrawMoney, Transfer
from pocket.guards import TokenGuard
from pocket.service import Account, PocketService
from pocket.users import User


def add_money(
    service: PocketService,
    user: User | int,
    amount: Decimal,
    source: str,
    *,
    command_id: str | None = None,
    guard: TokenGuard | None = None,
) -> Account:
    """Puts money into the user's wallet."""
    owner = service.user(user)
    wallet = service.pocket.add_money(
        AddMoney(
            wallet_id=owner.wallet_id,
            amount=amount,
            source=source,
            command_id=command_id,
            guard=guard,
        )
    )
    return Account(owner, wallet)


def draw_money(
    service: PocketService,
    user: User | int,
    amount: Decimal,
    destination: str,
    *,
    guard: TokenGuard | None = None,
) -> Account:
    """Takes money out of the user's wallet, never below zero."""
    owner = service.user(user)
    wallet = service.pocket.draw_money(
        DrawMoney(
            wallet_id=owner.wallet_id,
            amount=amount,
            destination=destination,
            guard=guard,
        )
    )
    return Account(owner, wallet)


def transfer(
    service: PocketService,
    user: User | int,
    to_user_id: int,
    amount: Decimal,
    description: str = "",
    *,
    guard: TokenGuard | None = None,
) -> tuple[Account, TransferInfo]:
    """Moves money from the user's wallet to another user's; RecipientNotFound
    when there is no such user."""
    sender = service.user(user)
    receiver = service.recipient(to_user_id)
    result = service.pocket.transfer(
        Transfer(
            sender_id=sender.wallet_id,
            receiver_id=receiver.wallet_id,
            amount=amount,
            description=description,
            guard=guard,
        )
    )
    return Account(sender, result.sender), result


def close_wallet(
    service: PocketService, user: User | int, *, guard: TokenGuard | None = None
) -> Account:
    """Closes the user's empty wallet for good."""
    owner = service.user(user)
    wallet = service.pocket.close_wallet(
        CloseWallet(wallet_id=owner.wallet_id, guard=guard)
    )
    return Account(owner, wallet)
