"""Ledger features of the application: idempotent commands, transfers, closing,
paged history and balances as of any moment, on POPO, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from pocket.application import Pocket, WalletInfo
from pocket.commands import AddMoney, CloseWallet, DrawMoney, OpenWallet, Transfer
from pocket.config import Settings
from pocket.domainmodel import Cause
from pocket.errors import (
    CommandInFlight,
    IdempotencyKeyReused,
    InsufficientFunds,
    VersionNotFound,
    WalletClosed,
)


@pytest.fixture
def pocket(any_settings: Settings) -> Iterator[Pocket]:
    app = Pocket(env=dict(any_settings.env))
    yield app
    app.close()


def funded(pocket: Pocket, amount: str = "100") -> UUID:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal(amount), source="seed")
    )
    return wallet_id


def head(pocket: Pocket) -> int:
    return pocket.recorder.max_notification_id() or 0


# Idempotency


def test_a_command_retried_with_its_id_runs_once(pocket: Pocket) -> None:
    wallet_id = funded(pocket)
    withdrawal = DrawMoney(
        wallet_id=wallet_id, amount=Decimal("30"), destination="ATM", command_id="k-1"
    )
    first = pocket.draw_money(withdrawal)
    written = head(pocket)
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="later"))
    again = pocket.draw_money(withdrawal)
    assert again == first  # the first answer, not the wallet as it is now
    assert head(pocket) == written + 1
    assert pocket.get_wallet(wallet_id).balance == Decimal("71.00")


def test_a_command_id_reused_for_another_command_is_refused(pocket: Pocket) -> None:
    wallet_id = funded(pocket)
    pocket.draw_money(
        DrawMoney(
            wallet_id=wallet_id,
            amount=Decimal("30"),
            destination="ATM",
            command_id="k-1",
        )
    )
    written = head(pocket)
    with pytest.raises(IdempotencyKeyReused):
        pocket.draw_money(
            DrawMoney(
                wallet_id=wallet_id,
                amount=Decimal("31"),
                destination="ATM",
                command_id="k-1",
            )
        )
    with pytest.raises(IdempotencyKeyReused):
        pocket.add_money(
            AddMoney(
                wallet_id=wallet_id,
                amount=Decimal("30"),
                source="ATM",
                command_id="k-1",
            )
        )
    assert head(pocket) == written


def test_a_refused_command_records_no_key_so_it_can_be_retried(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket, "10")
    withdrawal = DrawMoney(
        wallet_id=wallet_id, amount=Decimal("20"), destination="ATM", command_id="k-2"
    )
    with pytest.raises(InsufficientFunds):
        pocket.draw_money(withdrawal)
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("10"), source="top-up")
    )
    after = pocket.draw_money(withdrawal)
    assert after.balance == Decimal("0.00")


def test_the_same_command_id_at_once_in_threads_moves_money_once(
    pocket: Pocket,
) -> None:
    wallet_id = funded(pocket)
    start = threading.Barrier(8)

    def attempt() -> str:
        start.wait()
        try:
            pocket.draw_money(
                DrawMoney(
                    wallet_id=wallet_id,
                    amount=Decimal("10"),
                    destination="ATM",
                    command_id="same",
                )
            )
        except CommandInFlight:
            return "in flight"
        return "done"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: attempt(), range(8)))
    assert "done" in outcomes
    assert set(outcomes) <= {"done", "in flight"}
    assert pocket.get_wallet(wallet_id).balance == Decimal("90.00")


def test_the_same_command_id_from_two_processes_moves_money_once(
    sql_settings: Settings,
) -> None:
    apps = [Pocket(env=dict(sql_settings.env)) for _ in range(2)]
    wallet_id = funded(apps[0])
    start = threading.Barrier(2)
    results: list[WalletInfo] = []

    def attempt(app: Pocket) -> None:
        start.wait()
        for n in range(20):
            results.append(
                app.draw_money(
                    DrawMoney(
                        wallet_id=wallet_id,
                        amount=Decimal("1"),
                        destination="ATM",
                        command_id=f"k{n}",
                    )
                )
            )

    threads = [threading.Thread(target=attempt, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert apps[1].get_wallet(wallet_id).balance == Decimal("80.00")
    # Both callers of each key were told the same thing.
    by_balance = sorted({r.balance for r in results})
    assert len(by_balance) == 20
    for app in apps:
        app.close()


# Transfers


def transfer(pocket: Pocket, sender: UUID, receiver: UUID, amount: str) -> None:
    pocket.transfer(
        Transfer(
            sender_id=sender,
            receiver_id=receiver,
            amount=Decimal(amount),
            description="test",
        )
    )


def test_a_transfer_moves_money_between_wallets(pocket: Pocket) -> None:
    alice, bob = funded(pocket), funded(pocket, "0.01")
    rent = Transfer(
        sender_id=alice,
        receiver_id=bob,
        amount=Decimal("40"),
        description="rent",
        command_id="t",
    )
    result = pocket.transfer(rent)
    assert (result.sender.balance, result.receiver.balance) == (
        Decimal("60.00"),
        Decimal("40.01"),
    )
    sent = pocket.movements(alice)[-1]
    received = pocket.movements(bob)[-1]
    assert (sent.type, received.type) == ("OUT", "IN")
    assert sent.transfer_id == received.transfer_id == result.id
    assert sent.counterparty_wallet_id == bob
    assert received.counterparty_wallet_id == alice
    again = pocket.transfer(rent)
    assert again == result
    assert pocket.get_wallet(alice).balance == Decimal("60.00")


def test_a_refused_transfer_changes_neither_wallet(pocket: Pocket) -> None:
    alice, bob = funded(pocket, "5"), funded(pocket, "5")
    written = head(pocket)
    with pytest.raises(InsufficientFunds):
        transfer(pocket, alice, bob, "5.01")
    assert head(pocket) == written
    assert [pocket.get_wallet(w).version for w in (alice, bob)] == [2, 2]


def test_opposite_transfers_at_once_neither_deadlock_nor_lose_money(
    pocket: Pocket,
) -> None:
    alice, bob = funded(pocket, "50"), funded(pocket, "50")
    start = threading.Barrier(2)

    def shuttle(sender: UUID, receiver: UUID) -> int:
        start.wait()
        done = 0
        for _ in range(30):
            try:
                transfer(pocket, sender, receiver, "3")
                done += 1
            except InsufficientFunds:
                pass
        return done

    with ThreadPoolExecutor(2) as pool:
        there = pool.submit(shuttle, alice, bob)
        back = pool.submit(shuttle, bob, alice)
        moved = there.result(timeout=60) - back.result(timeout=60)
    balances = [pocket.get_wallet(w).balance for w in (alice, bob)]
    assert sum(balances) == Decimal("100.00")
    assert balances[0] == Decimal("50.00") - 3 * moved
    assert min(balances) >= 0


def test_opposite_transfers_from_two_processes_keep_the_total(
    sql_settings: Settings,
) -> None:
    apps = [Pocket(env=dict(sql_settings.env)) for _ in range(2)]
    alice, bob = funded(apps[0], "50"), funded(apps[0], "50")
    start = threading.Barrier(2)

    def shuttle(app: Pocket, sender: UUID, receiver: UUID) -> None:
        start.wait()
        for _ in range(25):
            with contextlib.suppress(InsufficientFunds):
                transfer(app, sender, receiver, "7")

    threads = [
        threading.Thread(target=shuttle, args=(apps[0], alice, bob)),
        threading.Thread(target=shuttle, args=(apps[1], bob, alice)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wallets = [apps[1].get_wallet(w) for w in (alice, bob)]
    assert sum(w.balance for w in wallets) == Decimal("100.00")
    assert all(w.balance >= 0 for w in wallets)
    for wallet_id, wallet in zip((alice, bob), wallets, strict=True):
        history = apps[1].movements(wallet_id)
        assert history[-1].balance == wallet.balance
    for app in apps:
        app.close()


# Closing


def test_a_closed_wallet_refuses_money_and_keeps_its_history(pocket: Pocket) -> None:
    wallet_id, other = funded(pocket, "5"), funded(pocket, "5")
    pocket.draw_money(
        DrawMoney(wallet_id=wallet_id, amount=Decimal("5"), destination="out")
    )
    closed = pocket.close_wallet(CloseWallet(wallet_id=wallet_id, command_id="c"))
    assert closed.closed
    for command in (
        lambda: pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="x")
        ),
        lambda: pocket.draw_money(
            DrawMoney(wallet_id=wallet_id, amount=Decimal("1"), destination="x")
        ),
        lambda: transfer(pocket, other, wallet_id, "1"),
        lambda: pocket.close_wallet(CloseWallet(wallet_id=wallet_id)),
    ):
        with pytest.raises(WalletClosed):
            command()
    assert (
        pocket.close_wallet(CloseWallet(wallet_id=wallet_id, command_id="c")) == closed
    )
    assert [t.type for t in pocket.movements(wallet_id)] == ["IN", "OUT"]
    assert pocket.get_wallet(wallet_id).closed


# History and balances as of


def test_history_pages_with_running_balances(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    for n in range(1, 8):
        pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(n), source="API"))
    first = pocket.history(wallet_id, limit=3)
    assert [t.balance for t in first.transactions] == [Decimal(v) for v in (1, 3, 6)]
    assert first.has_more
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal(100), source="arrives meanwhile")
    )
    second = pocket.history(wallet_id, after=first.transactions[-1].id, limit=3)
    assert [t.amount for t in second.transactions] == [Decimal(v) for v in (4, 5, 6)]
    third = pocket.history(wallet_id, after=second.transactions[-1].id, limit=3)
    assert [t.amount for t in third.transactions] == [Decimal(v) for v in (7, 100)]
    assert not third.has_more


def test_a_page_reads_the_same_few_events_however_long_the_history(
    pocket: Pocket,
) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    for _ in range(600):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
        )
    read = count_rows_read(pocket)
    start = pocket.history(wallet_id, limit=50)
    at_start = read()
    end = pocket.history(wallet_id, after=550, limit=50)
    at_end = read() - at_start
    assert len(start.transactions) == len(end.transactions) == 50
    # A snapshot, at most 99 events after it for the balance, and the page.
    assert at_start <= 1 + 99 + 53
    assert at_end <= 1 + 99 + 53


def count_rows_read(pocket: Pocket) -> Callable[[], int]:
    """Counts the stored events and snapshots read from now on."""
    count = [0]
    recorders: list[Any] = [pocket.recorder]
    if pocket.snapshots is not None:
        recorders.append(pocket.snapshots.recorder)
    for recorder in recorders:
        original = recorder.select_events

        def counting(
            *args: Any, _original: Any = original, **kwargs: Any
        ) -> Sequence[StoredEvent]:
            rows: Sequence[StoredEvent] = _original(*args, **kwargs)
            count[0] += len(rows)
            return rows

        recorder.select_events = counting
    return lambda: count[0]


def test_the_wallet_as_of_a_version(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    for _ in range(150):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("2"), source="API")
        )
    assert pocket.get_wallet(wallet_id, version=1).balance == Decimal("0.00")
    assert pocket.get_wallet(wallet_id, version=101).balance == Decimal("200.00")
    assert pocket.get_wallet(wallet_id, version=151).balance == Decimal("300.00")
    for missing in (0, 152):
        with pytest.raises(VersionNotFound):
            pocket.get_wallet(wallet_id, version=missing)


def test_the_wallet_as_of_a_moment(pocket: Pocket) -> None:
    before = datetime.now(UTC)
    time.sleep(0.002)
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    moments = []
    for _ in range(5):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
        )
        moments.append(datetime.now(UTC))
        time.sleep(0.002)
    for n, moment in enumerate(moments, start=1):
        assert pocket.get_wallet(wallet_id, at=moment).balance == Decimal(n)
    later = pocket.get_wallet(wallet_id, at=moments[-1] + timedelta(days=1))
    assert later.version == 6
    with pytest.raises(VersionNotFound):
        pocket.get_wallet(wallet_id, at=before)


def test_events_record_who_caused_them(pocket: Pocket) -> None:
    cause = Cause(actor="user:3", correlation_id="req-42")
    wallet_id = pocket.open_wallet(OpenWallet(user_id="3", cause=cause))
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API", cause=cause)
    )
    (entry,) = pocket.movements(wallet_id)
    assert (entry.actor, entry.correlation_id) == ("user:3", "req-42")


# Events written before events said who caused them

V1_EVENTS = [
    (
        1,
        "pocket.domainmodel:Wallet.Created",
        '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-26T14:19:16.167534'
        '+00:00"},"originator_topic":"pocket.domainmodel:Wallet","user_id":"1"}',
    ),
    (
        2,
        "pocket.domainmodel:Wallet.MoneyAdded",
        '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-26T14:19:16.167881'
        '+00:00"},"amount":{"_type_":"decimal_str","_data_":"20.00"},"source":"API",'
        '"balance":{"_type_":"decimal_str","_data_":"20.00"}}',
    ),
    (
        3,
        "pocket.domainmodel:Wallet.MoneyDrawn",
        '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-26T14:19:17.000000'
        '+00:00"},"amount":{"_type_":"decimal_str","_data_":"5.00"},'
        '"destination":"ATM","balance":{"_type_":"decimal_str","_data_":"15.00"}}',
    ),
]
V1_SNAPSHOT = (
    '{"timestamp":{"_type_":"datetime_iso","_data_":"2026-11-26T14:19:17.000000+00:00"}'
    ',"topic":"pocket.domainmodel:Wallet","state":{"_created_on":{"_type_":'
    '"datetime_iso","_data_":"2026-11-26T14:19:16.167534+00:00"},"_modified_on":'
    '{"_type_":"datetime_iso","_data_":"2026-11-26T14:19:17.000000+00:00"},'
    '"user_id":"1","balance":{"_type_":"decimal_str","_data_":"15.00"}}}'
)


def test_wallets_recorded_by_the_first_release_still_load(pocket: Pocket) -> None:
    wallet_id = uuid4()
    pocket.recorder.insert_events(
        [
            StoredEvent(wallet_id, v, topic, state.encode())
            for v, topic, state in V1_EVENTS
        ]
    )
    history = pocket.movements(wallet_id)
    assert [(t.type, t.amount, t.actor) for t in history] == [
        ("IN", Decimal("20.00"), None),
        ("OUT", Decimal("5.00"), None),
    ]
    wallet = pocket.get_wallet(wallet_id)
    assert (wallet.balance, wallet.closed) == (Decimal("15.00"), False)
    after = pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
    )
    assert after.balance == Decimal("16.00")
    assert pocket.snapshots is not None
    pocket.snapshots.recorder.insert_events(
        [
            StoredEvent(
                wallet_id, 3, "eventsourcing.domain:Snapshot", V1_SNAPSHOT.encode()
            )
        ]
    )
    as_then = pocket.get_wallet(wallet_id, version=3)
    assert (as_then.balance, as_then.closed) == (Decimal("15.00"), False)


def test_threads_retrying_the_same_keys_move_each_amount_once(pocket: Pocket) -> None:
    wallet_id = funded(pocket, "100")
    failures: list[Exception] = []

    def retry_all_keys() -> None:
        for n in range(25):
            try:
                pocket.draw_money(
                    DrawMoney(
                        wallet_id=wallet_id,
                        amount=Decimal("1"),
                        destination="shop",
                        command_id=f"k{n}",
                    )
                )
            except CommandInFlight:
                continue
            except Exception as error:
                failures.append(error)

    threads = [threading.Thread(target=retry_all_keys) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert pocket.get_wallet(wallet_id).balance == Decimal("75.00")
