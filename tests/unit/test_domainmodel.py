"""The Wallet aggregate on its own: no database, no application."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import project_aggregate

from pocket.domainmodel import (
    MAX_AMOUNT,
    InsufficientFunds,
    InvalidAmount,
    InvalidText,
    Wallet,
    check_amount,
    check_text,
)


def new_wallet() -> Wallet:
    return Wallet(user_id="7", id=uuid4())


def test_a_new_wallet_is_empty_and_belongs_to_its_user() -> None:
    wallet = new_wallet()
    assert wallet.balance == Decimal("0.00")
    assert wallet.user_id == "7"
    (created,) = wallet.collect_events()
    assert isinstance(created, Wallet.Created)
    assert created.user_id == "7"


def test_adding_money_raises_the_balance_and_records_the_source() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("20"), "API")
    assert wallet.balance == Decimal("20.00")
    event = wallet.collect_events()[-1]
    assert isinstance(event, Wallet.MoneyAdded)
    assert (event.amount, event.source, event.balance) == (
        Decimal("20.00"),
        "API",
        Decimal("20.00"),
    )


def test_drawing_money_lowers_the_balance_and_records_the_destination() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("20"), "API")
    wallet.draw_money(Decimal("5"), "ATM")
    assert wallet.balance == Decimal("15.00")
    event = wallet.collect_events()[-1]
    assert isinstance(event, Wallet.MoneyDrawn)
    assert (event.amount, event.destination, event.balance) == (
        Decimal("5.00"),
        "ATM",
        Decimal("15.00"),
    )


def test_drawing_more_than_the_balance_is_refused_and_records_nothing() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("10.00"), "API")
    wallet.collect_events()
    with pytest.raises(InsufficientFunds) as caught:
        wallet.draw_money(Decimal("10.01"), "ATM")
    assert caught.value.balance == Decimal("10.00")
    assert wallet.balance == Decimal("10.00")
    assert wallet.collect_events() == []


def test_drawing_the_whole_balance_leaves_exactly_zero() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("0.10"), "a")
    wallet.add_money(Decimal("0.20"), "b")
    wallet.draw_money(Decimal("0.30"), "c")
    assert wallet.balance == Decimal("0.00")


def test_replaying_the_events_rebuilds_the_same_wallet() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("100.10"), "API")
    wallet.draw_money(Decimal("0.05"), "shop")
    copy = project_aggregate(None, wallet.collect_events())
    assert isinstance(copy, Wallet)
    assert (copy.id, copy.user_id, copy.balance, copy.version) == (
        wallet.id,
        wallet.user_id,
        wallet.balance,
        wallet.version,
    )


@pytest.mark.parametrize(
    "amount",
    [
        0.1,
        "10",
        True,
        None,
        Decimal("0"),
        Decimal("-1"),
        Decimal("0.001"),
        Decimal("NaN"),
        Decimal("Infinity"),
        MAX_AMOUNT + Decimal("0.01"),
        Decimal("1E+100"),
        Decimal("1.123456789012345678901234567890123"),
    ],
)
def test_amounts_that_break_the_money_rules_are_refused(amount: Any) -> None:
    wallet = new_wallet()
    with pytest.raises(InvalidAmount):
        wallet.add_money(amount, "API")
    assert wallet.collect_events()[1:] == []


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("0.01"), "0.01"),
        (Decimal("20"), "20.00"),
        (Decimal("20.000"), "20.00"),
        (7, "7.00"),
        (MAX_AMOUNT, "1000000000.00"),
    ],
)
def test_valid_amounts_are_kept_with_two_places(amount: Any, expected: str) -> None:
    assert str(check_amount(amount)) == expected


@pytest.mark.parametrize("text", ["", "   ", "x" * 256, "a\x00b", "\ud800", 5, None])
def test_texts_that_cannot_be_stored_faithfully_are_refused(text: Any) -> None:
    with pytest.raises(InvalidText):
        check_text("source", text)


def test_a_text_of_255_characters_is_accepted() -> None:
    assert check_text("source", "é" * 255) == "é" * 255
