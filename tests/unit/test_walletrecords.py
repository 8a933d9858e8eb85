"""What a batch of wallet events does to wallet_records' rows, folded without a
database."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

from eventsourcing.domain import DomainEvent

from pocket.domainmodel import Cause, Wallet, capture_hold, utcnow
from pocket.walletrecords import WALLET_EVENTS, WalletChanges

CAUSE = Cause(actor="admin", correlation_id="req-1")


def folded(wallet: Wallet) -> WalletChanges:
    changes = WalletChanges()
    for event in wallet.collect_events():
        changes.fold(event)
    return changes


def funded(amount: str = "100") -> Wallet:
    wallet = Wallet.open("7", uuid4(), CAUSE)
    wallet.add_money(Decimal(amount), "seed", CAUSE)
    return wallet


def test_the_projector_reads_every_event_a_wallet_records() -> None:
    events = {
        value
        for value in vars(Wallet).values()
        if isinstance(value, type) and issubclass(value, DomainEvent)
    }
    events.discard(Wallet.Event)  # the library's base class, never recorded
    assert events == set(WALLET_EVENTS)


def test_a_capture_takes_its_amount_out_of_the_balance() -> None:
    wallet = funded()
    hold_id = uuid4()
    wallet.place_hold(
        hold_id=hold_id,
        amount=Decimal("30"),
        expires_at=utcnow() + timedelta(hours=1),
        destination="shop",
        cause=CAUSE,
    )
    capture_hold(
        wallet,
        None,
        hold_id=hold_id,
        amount=Decimal("25"),
        transfer_id=uuid4(),
        cause=CAUSE,
    )
    changes = folded(wallet)
    assert changes.deltas[wallet.id] == (Decimal("75.00"), wallet.version)
    assert wallet.balance == Decimal("75.00")


def test_events_that_move_no_money_still_move_the_version() -> None:
    wallet = funded()
    hold_id = uuid4()
    wallet.place_hold(
        hold_id=hold_id,
        amount=Decimal("30"),
        expires_at=utcnow() + timedelta(hours=1),
        destination="shop",
        cause=CAUSE,
    )
    wallet.void_hold(hold_id, CAUSE)
    wallet.set_credit_limit(Decimal("50"), CAUSE)
    wallet.set_daily_limit(Decimal("20"), CAUSE)
    changes = folded(wallet)
    assert wallet.version == 6
    assert changes.deltas[wallet.id] == (Decimal("100.00"), 6)


def test_holds_fold_into_what_they_reserve_and_a_capture_ends_all_its_hold() -> None:
    wallet = funded()
    soon = utcnow() + timedelta(hours=1)
    kept, taken, dropped = uuid4(), uuid4(), uuid4()
    for hold_id, amount in [(kept, "10"), (taken, "30"), (dropped, "5")]:
        wallet.place_hold(
            hold_id=hold_id,
            amount=Decimal(amount),
            expires_at=soon,
            destination="shop",
            cause=CAUSE,
        )
    capture_hold(
        wallet,
        None,
        hold_id=taken,
        amount=Decimal("12"),  # the other 18.00 is released
        transfer_id=uuid4(),
        cause=CAUSE,
    )
    wallet.void_hold(dropped, CAUSE)
    wallet.set_credit_limit(Decimal("50"), CAUSE)
    wallet.set_credit_limit(Decimal("40"), CAUSE)
    changes = folded(wallet)
    assert changes.held[wallet.id] == Decimal("10.00")
    assert changes.credit_limits[wallet.id] == Decimal("40.00")
    assert changes.deltas[wallet.id] == (Decimal("88.00"), wallet.version)
