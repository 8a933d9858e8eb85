"""The Wallet aggregate on its own: no database, no application."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.application import project_aggregate

from pocket.domainmodel import (
    MAX_AMOUNT,
    Cause,
    CommandRecord,
    Wallet,
    check_amount,
    check_text,
    transfer,
)
from pocket.errors import (
    InsufficientFunds,
    InvalidAmount,
    InvalidText,
    SameWallet,
    WalletClosed,
    WalletNotEmpty,
)

CAUSE = Cause(actor="user:7", correlation_id="req-1")


def new_wallet(balance: str = "0") -> Wallet:
    wallet = Wallet.open("7", uuid4(), CAUSE)
    if Decimal(balance):
        wallet.add_money(Decimal(balance), "seed", CAUSE)
    return wallet


def test_a_new_wallet_is_empty_and_belongs_to_its_user() -> None:
    wallet = new_wallet()
    assert wallet.balance == Decimal("0.00")
    assert wallet.user_id == "7"
    (created,) = wallet.collect_events()
    assert isinstance(created, Wallet.Created)
    assert created.user_id == "7"


def test_adding_money_raises_the_balance_and_records_the_source() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("20"), "API", CAUSE)
    assert wallet.balance == Decimal("20.00")
    event = wallet.collect_events()[-1]
    assert isinstance(event, Wallet.MoneyAdded)
    assert (event.amount, event.source, event.balance) == (
        Decimal("20.00"),
        "API",
        Decimal("20.00"),
    )
    assert (event.actor, event.correlation_id) == ("user:7", "req-1")


def test_drawing_money_lowers_the_balance_and_records_the_destination() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("20"), "API", CAUSE)
    wallet.draw_money(Decimal("5"), "ATM", CAUSE)
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
    wallet.add_money(Decimal("10.00"), "API", CAUSE)
    wallet.collect_events()
    with pytest.raises(InsufficientFunds) as caught:
        wallet.draw_money(Decimal("10.01"), "ATM", CAUSE)
    assert caught.value.balance == Decimal("10.00")
    assert wallet.balance == Decimal("10.00")
    assert wallet.collect_events() == []


def test_drawing_the_whole_balance_leaves_exactly_zero() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("0.10"), "a", CAUSE)
    wallet.add_money(Decimal("0.20"), "b", CAUSE)
    wallet.draw_money(Decimal("0.30"), "c", CAUSE)
    assert wallet.balance == Decimal("0.00")


def test_replaying_the_events_rebuilds_the_same_wallet() -> None:
    wallet = new_wallet()
    wallet.add_money(Decimal("100.10"), "API", CAUSE)
    wallet.draw_money(Decimal("0.05"), "shop", CAUSE)
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
        wallet.add_money(amount, "API", CAUSE)
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


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("\u202enimda", "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
        ("Ann\u202a", "U+202A (LEFT-TO-RIGHT EMBEDDING)"),
        ("Ann\u2066x", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("Ann\u2069", "U+2069 (POP DIRECTIONAL ISOLATE)"),
        ("\u200eAnn", "U+200E (LEFT-TO-RIGHT MARK)"),
        ("\u200fAnn", "U+200F (RIGHT-TO-LEFT MARK)"),
        ("\u061cAnn", "U+061C (ARABIC LETTER MARK)"),
        ("ad\u200bmin", "U+200B (ZERO WIDTH SPACE)"),
        ("ad\u200dmin", "U+200D (ZERO WIDTH JOINER)"),
        ("Ann\u2060", "U+2060 (WORD JOINER)"),
        ("\ufeffAnn", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
        ("Ann\U000e0041", "U+E0041 (TAG LATIN CAPITAL LETTER A)"),
        ("Ann\u2028Bob", "U+2028 (LINE SEPARATOR)"),
        ("Ann\u3164", "U+3164 (HANGUL FILLER)"),
        ("Ann\tBob", "U+0009"),
    ],
)
def test_a_text_that_could_show_as_another_is_refused_naming_the_character(
    text: str, named: str
) -> None:
    with pytest.raises(InvalidText, match=re.escape(named)) as refused:
        check_text("name", text)
    assert refused.value.field == "name"


@pytest.mark.parametrize(
    "text", ["Zoë Ångström", "محمد", "שלום", "山田 太郎", "O'Brien-Smith", "Ann 🙂"]
)
def test_names_in_any_script_are_accepted(text: str) -> None:
    assert check_text("name", text) == text


def send(sender: Wallet, receiver: Wallet, amount: str) -> None:
    transfer(
        sender,
        receiver,
        amount=Decimal(amount),
        description="rent",
        transfer_id=TRANSFER_ID,
        cause=CAUSE,
    )


TRANSFER_ID = uuid4()


def test_a_transfer_records_both_sides_naming_each_other() -> None:
    sender, receiver = new_wallet("50"), new_wallet()
    sender.collect_events()
    receiver.collect_events()
    send(sender, receiver, "20.5")
    (sent,) = sender.collect_events()
    (received,) = receiver.collect_events()
    assert isinstance(sent, Wallet.TransferSent)
    assert isinstance(received, Wallet.TransferReceived)
    assert (sent.transfer_id, received.transfer_id) == (TRANSFER_ID, TRANSFER_ID)
    assert (sent.counterparty_wallet_id, received.counterparty_wallet_id) == (
        receiver.id,
        sender.id,
    )
    assert (sent.balance, received.balance) == (Decimal("29.50"), Decimal("20.50"))
    assert sent.description == received.description == "rent"


@pytest.mark.parametrize(
    ("amount", "error"),
    [("50.01", InsufficientFunds), ("0", InvalidAmount), ("0.001", InvalidAmount)],
)
def test_a_refused_transfer_records_nothing_on_either_side(
    amount: str, error: type[Exception]
) -> None:
    sender, receiver = new_wallet("50"), new_wallet()
    sender.collect_events()
    receiver.collect_events()
    with pytest.raises(error):
        send(sender, receiver, amount)
    assert sender.collect_events() == receiver.collect_events() == []
    assert (sender.balance, receiver.balance) == (Decimal("50.00"), Decimal("0.00"))


def test_a_wallet_cannot_transfer_to_itself() -> None:
    wallet = new_wallet("10")
    with pytest.raises(SameWallet):
        send(wallet, wallet, "1")


def test_only_an_empty_wallet_closes() -> None:
    wallet = new_wallet("0.01")
    with pytest.raises(WalletNotEmpty):
        wallet.close(CAUSE)
    wallet.draw_money(Decimal("0.01"), "out", CAUSE)
    wallet.close(CAUSE)
    assert wallet.closed
    assert isinstance(wallet.collect_events()[-1], Wallet.Closed)


def test_a_closed_wallet_takes_no_money_in_or_out_and_stays_closed() -> None:
    wallet, other = new_wallet(), new_wallet("5")
    wallet.close(CAUSE)
    wallet.collect_events()
    with pytest.raises(WalletClosed):
        wallet.add_money(Decimal("1"), "API", CAUSE)
    with pytest.raises(WalletClosed):
        wallet.draw_money(Decimal("1"), "API", CAUSE)
    with pytest.raises(WalletClosed):
        send(other, wallet, "1")
    with pytest.raises(WalletClosed):
        wallet.close(CAUSE)
    assert wallet.collect_events() == []


def test_a_command_record_id_depends_only_on_the_command_id() -> None:
    assert CommandRecord.id_for("user:1:k") == CommandRecord.id_for("user:1:k")
    assert CommandRecord.id_for("user:1:k") != CommandRecord.id_for("user:2:k")
