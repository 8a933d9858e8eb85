"""A history of holds and limits written through the Python API, for the tests
of wallet_records and pocket verify: events that move money (captures, in part
and to another wallet) and events that move only a wallet's version."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pocket.application import Pocket
from pocket.commands import (
    AddMoney,
    CaptureHold,
    OpenWallet,
    PlaceHold,
    SetCreditLimit,
    SetDailyLimit,
    VoidHold,
)

# What hold_history leaves in the payer's wallet.
PAYER_BALANCE = Decimal("20.00") - Decimal("3.10") - Decimal("3.50")
PAYER_HELD = Decimal("2.25")
PAYER_CREDIT_LIMIT = Decimal("5.00")


def hold_history(pocket: Pocket, payer: UUID | None = None) -> tuple[UUID, UUID]:
    """A payer with 20.00 places four holds: one captured in part, one captured
    whole to the payee's wallet, one voided, one left open; limits set on the
    way. Returns the payer's and the payee's wallet ids."""
    if payer is None:
        payer = pocket.open_wallet(OpenWallet(user_id="1"))
    payee = pocket.open_wallet(OpenWallet(user_id="2"))
    pocket.add_money(AddMoney(wallet_id=payer, amount=Decimal(20), source="API"))
    pocket.set_credit_limit(SetCreditLimit(wallet_id=payer, credit_limit=Decimal(5)))
    pocket.set_daily_limit(SetDailyLimit(wallet_id=payer, daily_limit=Decimal(500)))
    shop = place(pocket, payer, "4.00", destination="shop")
    friend = place(pocket, payer, "3.50", receiver_id=payee)
    kept = place(pocket, payer, "2.25", destination="cafe")
    dropped = place(pocket, payer, "1.00", destination="bar")
    pocket.capture_hold(
        CaptureHold(wallet_id=payer, hold_id=shop, amount=Decimal("3.10"))
    )
    pocket.capture_hold(CaptureHold(wallet_id=payer, hold_id=friend))
    pocket.void_hold(VoidHold(wallet_id=payer, hold_id=dropped))
    assert pocket.hold(payer, kept).status == "open"
    return payer, payee


def place(
    pocket: Pocket,
    wallet_id: UUID,
    amount: str,
    *,
    destination: str | None = None,
    receiver_id: UUID | None = None,
    expires_in: int = 3600,
) -> UUID:
    """Places a hold; returns its id."""
    hold = pocket.place_hold(
        PlaceHold(
            wallet_id=wallet_id,
            amount=Decimal(amount),
            destination=destination,
            receiver_id=receiver_id,
            expires_in=expires_in,
        )
    )
    return hold.id
