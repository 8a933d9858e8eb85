"""Holds and limits on the Wallet aggregate alone, at given moments: placing,
capturing, voiding and expiring a hold, what it reserves, the credit limit, the
daily limit, and snapshots that keep all of it. No database, no application."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.application import project_aggregate
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    UUIDAsHex,
)

from pocket.domainmodel import (
    MAX_HOLD,
    Cause,
    Wallet,
    capture_hold,
    transfer,
    utcnow,
)
from pocket.errors import (
    CaptureExceedsHold,
    DailyLimitExceeded,
    HoldEnded,
    HoldNotDue,
    HoldNotFound,
    HoldsOpen,
    InsufficientFunds,
    InvalidExpiry,
    InvalidLimit,
)

CAUSE = Cause(actor="admin", correlation_id="req-1")
D = Decimal


def new_wallet(balance: str = "0", user_id: str = "7") -> Wallet:
    wallet = Wallet.open(user_id, uuid4(), CAUSE)
    if D(balance):
        wallet.add_money(D(balance), "seed", CAUSE)
    return wallet


def hold(
    wallet: Wallet,
    amount: str,
    *,
    now: datetime,
    lasts: timedelta = timedelta(hours=1),
    receiver: Wallet | None = None,
) -> UUID:
    hold_id = uuid4()
    wallet.place_hold(
        hold_id=hold_id,
        amount=D(amount),
        expires_at=now + lasts,
        cause=CAUSE,
        destination=None if receiver else "shop",
        receiver=receiver,
        now=now,
    )
    return hold_id


def capture(
    wallet: Wallet,
    hold_id: UUID,
    amount: str | None = None,
    *,
    now: datetime,
    receiver: Wallet | None = None,
) -> Decimal:
    return capture_hold(
        wallet,
        receiver,
        hold_id=hold_id,
        amount=None if amount is None else D(amount),
        transfer_id=uuid4(),
        cause=CAUSE,
        now=now,
    )


# Placing, and what a hold reserves


def test_a_hold_reserves_its_amount_and_moves_nothing() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold(wallet, "30.50", now=now)
    assert wallet.balance == D("100.00")
    assert wallet.held(now) == D("30.50")
    assert wallet.available(now) == D("69.50")
    placed = wallet.collect_events()[-1]
    assert isinstance(placed, Wallet.HoldPlaced)
    assert (placed.amount, placed.held, placed.balance) == (
        D("30.50"),
        D("30.50"),
        D("100.00"),
    )


def test_a_hold_past_its_expiry_reserves_nothing_before_its_expiry_is_recorded() -> (
    None
):
    wallet = new_wallet("100")
    now = utcnow()
    hold(wallet, "30", now=now, lasts=timedelta(seconds=5))
    assert wallet.held(now + timedelta(seconds=4.999)) == D("30.00")
    assert wallet.held(now + timedelta(seconds=5)) == D("0.00")
    assert wallet.available(now + timedelta(seconds=5)) == D("100.00")
    # A draw of all of it passes once the hold has passed its expiry.
    wallet.draw_money(D("100"), "ATM", CAUSE, now=now + timedelta(seconds=5))
    assert wallet.balance == D("0.00")


def test_a_hold_beyond_what_is_available_is_refused_and_records_nothing() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold(wallet, "60", now=now)
    wallet.collect_events()
    with pytest.raises(InsufficientFunds) as refused:
        hold(wallet, "40.01", now=now)
    assert (refused.value.held, refused.value.available) == (D("60.00"), D("40.00"))
    assert wallet.collect_events() == []
    assert wallet.held(now) == D("60.00")


def test_a_draw_may_not_take_what_a_hold_reserves() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold(wallet, "60", now=now)
    with pytest.raises(InsufficientFunds):
        wallet.draw_money(D("40.01"), "ATM", CAUSE, now=now)
    wallet.draw_money(D("40"), "ATM", CAUSE, now=now)
    assert (wallet.balance, wallet.available(now)) == (D("60.00"), D("0.00"))


@pytest.mark.parametrize(
    ("lasts", "valid"),
    [
        (timedelta(seconds=1), True),
        (MAX_HOLD, True),
        (timedelta(seconds=0.999), False),
        (timedelta(0), False),
        (timedelta(seconds=-1), False),
        (MAX_HOLD + timedelta(microseconds=1), False),
    ],
)
def test_a_hold_lasts_between_a_second_and_the_maximum(
    lasts: timedelta, valid: bool
) -> None:
    wallet = new_wallet("100")
    now = utcnow()
    if valid:
        hold(wallet, "1", now=now, lasts=lasts)
        assert wallet.holds
        return
    with pytest.raises(InvalidExpiry):
        hold(wallet, "1", now=now, lasts=lasts)
    assert not wallet.holds


def test_a_hold_needs_an_expiry_with_its_offset() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    with pytest.raises(InvalidExpiry):
        wallet.place_hold(
            hold_id=uuid4(),
            amount=D("1"),
            expires_at=(now + timedelta(hours=1)).replace(tzinfo=None),
            cause=CAUSE,
            destination="shop",
            now=now,
        )


# Ending a hold: captured, voided or expired, once


def test_capturing_a_whole_hold_moves_its_amount_out() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now)
    assert capture(wallet, hold_id, now=now) == D("30.00")
    assert (wallet.balance, wallet.held(now), wallet.holds) == (
        D("70.00"),
        D("0.00"),
        {},
    )
    captured = wallet.collect_events()[-1]
    assert isinstance(captured, Wallet.HoldCaptured)
    assert (captured.amount, captured.released, captured.balance) == (
        D("30.00"),
        D("0.00"),
        D("70.00"),
    )


def test_capturing_part_of_a_hold_releases_the_rest() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now)
    assert capture(wallet, hold_id, "12.34", now=now) == D("12.34")
    assert wallet.balance == D("87.66")
    assert wallet.available(now) == D("87.66")
    captured = wallet.collect_events()[-1]
    assert isinstance(captured, Wallet.HoldCaptured)
    assert captured.released == D("17.66")


def test_a_capture_of_more_than_the_hold_is_refused_and_records_nothing() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now)
    wallet.collect_events()
    with pytest.raises(CaptureExceedsHold) as refused:
        capture(wallet, hold_id, "30.01", now=now)
    assert (refused.value.held, refused.value.amount) == (D("30.00"), D("30.01"))
    assert wallet.collect_events() == []
    assert wallet.held(now) == D("30.00")


def test_voiding_a_hold_frees_its_amount_and_moves_nothing() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now)
    wallet.void_hold(hold_id, CAUSE, now=now)
    assert (wallet.balance, wallet.available(now)) == (D("100.00"), D("100.00"))
    voided = wallet.collect_events()[-1]
    assert isinstance(voided, Wallet.HoldVoided)
    assert voided.amount == D("30.00")


def test_a_hold_expires_at_its_expiry_not_before() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now, lasts=timedelta(seconds=2))
    with pytest.raises(HoldNotDue):
        wallet.expire_hold(hold_id, CAUSE, now=now + timedelta(seconds=1.999))
    wallet.expire_hold(hold_id, CAUSE, now=now + timedelta(seconds=2))
    expired = wallet.collect_events()[-1]
    assert isinstance(expired, Wallet.HoldExpired)
    assert (expired.amount, wallet.balance, wallet.holds) == (
        D("30.00"),
        D("100.00"),
        {},
    )


@pytest.mark.parametrize("ending", ["capture", "void", "expire"])
def test_a_hold_ends_only_once(ending: str) -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now, lasts=timedelta(seconds=2))
    later = now + timedelta(seconds=3)
    end: dict[str, Callable[[datetime], object]] = {
        "capture": lambda at: capture(wallet, hold_id, now=at),
        "void": lambda at: wallet.void_hold(hold_id, CAUSE, now=at),
        "expire": lambda at: wallet.expire_hold(hold_id, CAUSE, now=at),
    }
    end[ending](later if ending == "expire" else now)
    balance = wallet.balance
    wallet.collect_events()
    for again in end.values():
        with pytest.raises(HoldNotFound):
            again(later)
    assert wallet.collect_events() == []
    assert wallet.balance == balance


@pytest.mark.parametrize("ending", ["capture", "void"])
def test_a_hold_past_its_expiry_cannot_be_captured_or_voided(ending: str) -> None:
    wallet = new_wallet("100")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now, lasts=timedelta(seconds=2))
    at_expiry = now + timedelta(seconds=2)
    wallet.collect_events()
    ends: dict[str, Callable[[], object]] = {
        "capture": lambda: capture(wallet, hold_id, now=at_expiry),
        "void": lambda: wallet.void_hold(hold_id, CAUSE, now=at_expiry),
    }
    with pytest.raises(HoldEnded) as refused:
        ends[ending]()
    assert refused.value.status == "expired"
    assert wallet.collect_events() == []
    assert wallet.balance == D("100.00")


def test_a_wallet_with_open_holds_does_not_close() -> None:
    wallet = new_wallet("30")
    now = utcnow()
    hold_id = hold(wallet, "30", now=now)
    capture(wallet, hold_id, "10", now=now)
    hold(wallet, "20", now=now, lasts=timedelta(seconds=2))
    with pytest.raises(HoldsOpen):
        wallet.close(CAUSE, now=now)
    # Past its expiry the hold holds nothing back: then only the balance does.
    wallet.draw_money(D("20"), "ATM", CAUSE, now=now + timedelta(seconds=2))
    wallet.close(CAUSE, now=now + timedelta(seconds=2))
    assert wallet.closed


def test_a_hold_for_another_wallet_captured_in_part_is_a_transfer() -> None:
    sender, receiver = new_wallet("100", "7"), new_wallet("5", "8")
    now = utcnow()
    hold_id = hold(sender, "40", now=now, receiver=receiver)
    assert receiver.collect_events()[-1].originator_version == 2  # Nothing yet.
    capture(sender, hold_id, "25", now=now, receiver=receiver)
    assert (sender.balance, sender.available(now)) == (D("75.00"), D("75.00"))
    assert receiver.balance == D("30.00")
    sent, received = sender.collect_events()[-1], receiver.collect_events()[-1]
    assert isinstance(sent, Wallet.HoldCaptured)
    assert isinstance(received, Wallet.TransferReceived)
    assert sent.transfer_id == received.transfer_id
    assert (sent.counterparty_wallet_id, received.counterparty_wallet_id) == (
        receiver.id,
        sender.id,
    )
    assert (sent.amount, sent.released, received.amount) == (
        D("25.00"),
        D("15.00"),
        D("25.00"),
    )


def test_replaying_the_events_rebuilds_the_holds_and_limits() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    kept = hold(wallet, "10", now=now)
    ended = hold(wallet, "20", now=now)
    capture(wallet, ended, "5", now=now)
    wallet.set_credit_limit(D("50"), CAUSE)
    wallet.set_daily_limit(D("500"), CAUSE)
    copy = project_aggregate(None, wallet.collect_events())
    assert isinstance(copy, Wallet)
    assert same_state(copy, wallet)
    assert list(copy.holds) == [str(kept)]


# The credit limit


def test_a_credit_limit_lets_the_available_amount_go_that_far_below_zero() -> None:
    wallet = new_wallet("100")
    wallet.set_credit_limit(D("50"), CAUSE)
    now = utcnow()
    hold(wallet, "30", now=now)
    assert wallet.available(now) == D("120.00")
    with pytest.raises(InsufficientFunds) as refused:
        wallet.draw_money(D("120.01"), "ATM", CAUSE, now=now)
    assert refused.value.credit_limit == D("50.00")
    assert "credit limit of 50.00" in str(refused.value)
    wallet.draw_money(D("120"), "ATM", CAUSE, now=now)
    assert (wallet.balance, wallet.available(now)) == (D("-20.00"), D("0.00"))


def test_lowering_the_credit_limit_takes_nothing_back_but_refuses_more() -> None:
    wallet = new_wallet("10")
    wallet.set_credit_limit(D("50"), CAUSE)
    wallet.draw_money(D("40"), "ATM", CAUSE)
    wallet.set_credit_limit(D("0"), CAUSE)
    assert wallet.balance == D("-30.00")
    with pytest.raises(InsufficientFunds):
        wallet.draw_money(D("0.01"), "ATM", CAUSE)
    wallet.add_money(D("30.01"), "top-up", CAUSE)
    wallet.draw_money(D("0.01"), "ATM", CAUSE)
    assert wallet.balance == D("0.00")


@pytest.mark.parametrize("limit", [D("-1"), D("0.001"), D("NaN"), 1.5, "10", True])
def test_limits_that_break_the_money_rules_are_refused(limit: Any) -> None:
    wallet = new_wallet()
    with pytest.raises(InvalidLimit):
        wallet.set_credit_limit(limit, CAUSE)
    with pytest.raises(InvalidLimit):
        wallet.set_daily_limit(limit, CAUSE)
    assert (wallet.credit_limit, wallet.daily_limit) == (D("0.00"), None)


# The daily limit


def test_the_daily_limit_counts_draws_transfers_captures_and_open_holds() -> None:
    wallet, other = new_wallet("1000"), new_wallet("0", "8")
    wallet.set_daily_limit(D("100"), CAUSE)
    today = wallet.modified_on
    wallet.draw_money(D("10"), "ATM", CAUSE, now=today)
    transfer(
        wallet,
        other,
        amount=D("20"),
        description="",
        transfer_id=uuid4(),
        cause=CAUSE,
        now=today,
    )
    captured = hold(wallet, "30", now=today)
    capture(wallet, captured, "25", now=today)  # 5 released: not spent.
    hold(wallet, "40", now=today)
    today = wallet.modified_on
    assert wallet.spent_today(today) == D("95.00")
    with pytest.raises(DailyLimitExceeded) as refused:
        wallet.draw_money(D("5.01"), "ATM", CAUSE, now=today)
    assert (refused.value.limit, refused.value.spent, refused.value.amount) == (
        D("100.00"),
        D("95.00"),
        D("5.01"),
    )
    assert "100.00 a day" in str(refused.value)
    with pytest.raises(DailyLimitExceeded):
        hold(wallet, "5.01", now=today)
    wallet.draw_money(D("5"), "ATM", CAUSE, now=today)
    assert wallet.spent_today(today) == D("100.00")


def test_voiding_a_hold_frees_the_days_room() -> None:
    wallet = new_wallet("1000")
    wallet.set_daily_limit(D("100"), CAUSE)
    today = wallet.modified_on
    held = hold(wallet, "80", now=today)
    with pytest.raises(DailyLimitExceeded):
        wallet.draw_money(D("20.01"), "ATM", CAUSE, now=today)
    wallet.void_hold(held, CAUSE, now=today)
    wallet.draw_money(D("100"), "ATM", CAUSE, now=today)
    assert wallet.spent_today(today) == D("100.00")


def test_a_new_utc_day_resets_what_was_spent_but_open_holds_still_count() -> None:
    wallet = new_wallet("1000")
    wallet.set_daily_limit(D("100"), CAUSE)
    today = wallet.modified_on
    wallet.draw_money(D("50"), "ATM", CAUSE, now=today)
    hold(wallet, "30", now=today, lasts=timedelta(days=2))
    hold(wallet, "20", now=today, lasts=timedelta(seconds=1))
    today = wallet.modified_on
    assert wallet.spent_today(today) == D("100.00")
    tomorrow = midnight_after(today)
    # Yesterday's draw no longer counts, nor the hold that expired; the open one does.
    assert wallet.spent_today(tomorrow) == D("30.00")
    assert wallet.spent_today(tomorrow - timedelta(microseconds=1)) == D("80.00")
    with pytest.raises(DailyLimitExceeded):
        wallet.draw_money(D("70.01"), "ATM", CAUSE, now=tomorrow)
    wallet.draw_money(D("70"), "ATM", CAUSE, now=tomorrow)


def test_lifting_the_daily_limit_lets_the_wallet_spend_what_it_has() -> None:
    wallet = new_wallet("1000")
    wallet.set_daily_limit(D("0"), CAUSE)
    with pytest.raises(DailyLimitExceeded):
        wallet.draw_money(D("0.01"), "ATM", CAUSE)
    wallet.set_daily_limit(None, CAUSE)
    wallet.draw_money(D("1000"), "ATM", CAUSE)
    assert wallet.balance == D("0.00")


# Snapshots


def test_a_snapshot_keeps_holds_limits_and_the_days_spending() -> None:
    wallet = new_wallet("1000")
    wallet.set_credit_limit(D("50.25"), CAUSE)
    wallet.set_daily_limit(D("700"), CAUSE)
    now = wallet.modified_on
    hold(wallet, "10", now=now)
    hold(wallet, "20.02", now=now, receiver=new_wallet("0", "8"))
    wallet.draw_money(D("3"), "ATM", CAUSE, now=now)
    copy = through_json(Snapshot.take(wallet)).mutate(None)
    assert isinstance(copy, Wallet)
    assert same_state(copy, wallet)
    now = wallet.modified_on
    assert (copy.held(now), copy.available(now), copy.spent_today(now)) == (
        D("30.02"),
        D("1017.23"),
        D("33.02"),
    )


def test_a_snapshot_keeps_the_holds_as_they_were_when_it_was_taken() -> None:
    wallet = new_wallet("100")
    now = utcnow()
    first = hold(wallet, "10", now=now)
    snapshot = Snapshot.take(wallet)
    # Snapshots are put after the batch's write, by when the wallet has moved on.
    hold(wallet, "20", now=now)
    capture(wallet, first, now=now)
    taken = snapshot.mutate(None)
    assert isinstance(taken, Wallet)
    assert list(taken.holds) == [str(first)]
    assert taken.held(now) == D("10.00")
    # Loading from it, the later events replay onto it.
    later = [e for e in wallet.collect_events() if e.originator_version > 3]
    replayed = project_aggregate(taken, later)
    assert isinstance(replayed, Wallet)
    assert same_state(replayed, wallet)


def test_a_snapshot_from_before_holds_upcasts_to_no_holds_and_no_limits() -> None:
    wallet = new_wallet("100")
    snapshot = Snapshot.take(wallet)
    state = {
        k: v
        for k, v in snapshot.state.items()
        if k
        not in (
            "holds",
            "credit_limit",
            "daily_limit",
            "spent_on",
            "spent",
            "alert_below",
        )
    }
    state["class_version"] = 2
    old = through_json(dataclasses.replace(snapshot, state=state))
    copy = old.mutate(None)
    assert isinstance(copy, Wallet)
    assert (copy.holds, copy.credit_limit, copy.daily_limit) == ({}, D("0.00"), None)
    now = utcnow()
    assert (copy.held(now), copy.available(now), copy.spent_today(now)) == (
        D("0.00"),
        D("100.00"),
        D("0.00"),
    )
    copy.set_daily_limit(D("40"), CAUSE)
    hold(copy, "40", now=now)
    assert copy.spent_today(now) == D("40.00")


def test_a_snapshot_from_before_balance_alerts_upcasts_to_no_threshold() -> None:
    wallet = new_wallet("100")
    snapshot = Snapshot.take(wallet)
    state = {k: v for k, v in snapshot.state.items() if k != "alert_below"}
    state["class_version"] = 3
    copy = through_json(dataclasses.replace(snapshot, state=state)).mutate(None)
    assert isinstance(copy, Wallet)
    assert copy.alert_below is None
    assert copy.balance == D("100.00")
    copy.set_alert_threshold(D("10"), CAUSE)
    assert copy.alert_below == D("10.00")


# Helpers


def same_state(one: Wallet, other: Wallet) -> bool:
    names = ("id", "version", "balance", "credit_limit", "daily_limit", "closed")
    return all(getattr(one, n) == getattr(other, n) for n in names) and (
        one.holds,
        one.spent_on,
        one.spent,
    ) == (other.holds, other.spent_on, other.spent)


def through_json(snapshot: Snapshot) -> Snapshot:
    """A snapshot as a store keeps it and gives it back (the application's
    transcodings)."""
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[UUID] = Mapper(transcoder=transcoder)
    copy = mapper.to_domain_event(mapper.to_stored_event(snapshot))
    assert isinstance(copy, Snapshot)
    return copy


def midnight_after(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
