"""The hold-expiry follower, on SQLite and PostgreSQL: the open holds it keeps from
the log, and the expiries it records, once, within the documented bound."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from uuid import UUID

import pytest

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.commands import (
    AddMoney,
    CaptureHold,
    ExpireHold,
    OpenWallet,
    PlaceHold,
    VoidHold,
    expiry_key,
)
from pocket.config import Settings
from pocket.domainmodel import Wallet, utcnow
from pocket.errors import HoldEnded, HoldNotDue
from pocket.expiry import EXPIRY_BOUND_SECONDS
from pocket.metrics import registry_for
from pocket.operations import format_status, status
from pocket.runner import ExpiryThread, PocketRunner
from pocket.system import HoldExpiry, system


@pytest.fixture
def pocket(sql_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(sql_settings)
    yield app
    app.close()


@pytest.fixture
def expiry(pocket: Pocket) -> Iterator[HoldExpiry]:
    follower = HoldExpiry(env={**dict(pocket.env), "CREATE_TABLE": "yes"})
    follower.follow(pocket.name, pocket.notification_log)
    with closing(follower):
        yield follower


def funded_wallet(pocket: Pocket, amount: str = "100.00") -> UUID:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="1"))
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(amount), source="x"))
    return wallet_id


def hold(pocket: Pocket, wallet_id: UUID, seconds: int = 600) -> UUID:
    placed = pocket.place_hold(
        PlaceHold(
            wallet_id=wallet_id,
            amount=Decimal("10.00"),
            destination="shop",
            expires_in=seconds,
        )
    )
    return placed.id


def endings(pocket: Pocket, wallet_id: UUID, hold_id: UUID) -> list[object]:
    ended = (Wallet.HoldCaptured, Wallet.HoldVoided, Wallet.HoldExpired)
    return [
        e
        for e in pocket.events.get(wallet_id)
        if isinstance(e, ended) and e.hold_id == hold_id
    ]


def test_the_follower_keeps_the_open_holds_of_the_log(
    pocket: Pocket, expiry: HoldExpiry
) -> None:
    wallet_id = funded_wallet(pocket)
    kept, captured, voided = (hold(pocket, wallet_id) for _ in range(3))
    expiry.batch_size = 2  # Placed in one section, ended in another.
    expiry.catch_up(pocket.name)
    pocket.capture_hold(CaptureHold(wallet_id=wallet_id, hold_id=captured))
    pocket.void_hold(VoidHold(wallet_id=wallet_id, hold_id=voided))
    # Placed and ended within one section: never in the table.
    short_lived = hold(pocket, wallet_id)
    pocket.void_hold(VoidHold(wallet_id=wallet_id, hold_id=short_lived))
    expiry.catch_up(pocket.name)
    assert expiry.open_count() == 1
    assert expiry.position == pocket.recorder.max_notification_id()
    (soonest,) = expiry.due(utcnow().replace(year=utcnow().year + 1))
    assert (soonest.hold_id, soonest.wallet_id) == (kept, wallet_id)
    assert expiry.due(utcnow()) == []


def test_an_expiry_is_refused_before_its_time_and_runs_once(pocket: Pocket) -> None:
    wallet_id = funded_wallet(pocket)
    hold_id = hold(pocket, wallet_id, seconds=1)
    expire = ExpireHold(
        wallet_id=wallet_id, hold_id=hold_id, command_id=expiry_key(hold_id)
    )
    with pytest.raises(HoldNotDue):
        pocket.expire_hold(expire)
    time.sleep(1.1)
    first = pocket.expire_hold(expire)
    again = pocket.expire_hold(expire)  # Another follower's: the same answer.
    assert first.status == again.status == "expired"
    assert again.replayed
    with pytest.raises(HoldEnded) as lost:
        pocket.capture_hold(CaptureHold(wallet_id=wallet_id, hold_id=hold_id))
    assert lost.value.status == "expired"
    assert len(endings(pocket, wallet_id, hold_id)) == 1
    assert pocket.get_wallet(wallet_id).available == Decimal("100.00")


def test_a_running_system_expires_holds_within_the_bound(
    sql_settings: Settings,
) -> None:
    runner = PocketRunner(system, dict(sql_settings.env))
    runner.start()
    try:
        pocket = runner.pocket
        wallet_id = funded_wallet(pocket)
        holds = [hold(pocket, wallet_id, seconds=1 + n % 3) for n in range(6)]
        expires = {h: pocket.hold(wallet_id, h).expires_at for h in holds}
        recorded: dict[UUID, float] = {}
        deadline = time.monotonic() + 3 + EXPIRY_BOUND_SECONDS
        while len(recorded) < len(holds) and time.monotonic() < deadline:
            for hold_id in holds:
                if hold_id not in recorded and endings(pocket, wallet_id, hold_id):
                    recorded[hold_id] = time.time()
            time.sleep(0.05)
        assert set(recorded) == set(holds)
        for hold_id, at in recorded.items():
            assert at - expires[hold_id].timestamp() <= EXPIRY_BOUND_SECONDS
            assert len(endings(pocket, wallet_id, hold_id)) == 1
        (thread,) = [t for t in runner.threads.values() if isinstance(t, ExpiryThread)]
        assert thread.expired == len(holds)
        wallet = pocket.get_wallet(wallet_id)
        assert (wallet.held, wallet.available) == (Decimal(0), Decimal("100.00"))
        registry = registry_for(runner, open_catalog(pocket))
        value = registry.get_sample_value
        assert value("pocket_holds_total", {"outcome": "placed"}) == len(holds)
        assert value("pocket_holds_total", {"outcome": "expired"}) == len(holds)
        assert value("pocket_holds_total", {"outcome": "refused"}) == 0
        assert value("pocket_expiry_follower_role", {"role": "active"}) == 1
    finally:
        runner.stop()


def test_holds_expire_on_time_while_writes_never_stop(
    sql_settings: Settings,
) -> None:
    """Under writes that never pause, every round of the expiry follower applies
    some events: it must still record the expiries that come due."""
    runner = PocketRunner(system, dict(sql_settings.env))
    runner.start()
    stop = threading.Event()
    try:
        pocket = runner.pocket
        wallet_id = funded_wallet(pocket)
        busy = funded_wallet(pocket)

        def write() -> None:
            while not stop.is_set():
                pocket.add_money(
                    AddMoney(wallet_id=busy, amount=Decimal("0.01"), source="x")
                )
                stop.wait(0.02)

        writer = threading.Thread(target=write)
        writer.start()
        hold_id = hold(pocket, wallet_id, seconds=1)
        expires_at = pocket.hold(wallet_id, hold_id).expires_at.timestamp()
        deadline = expires_at + EXPIRY_BOUND_SECONDS
        while not endings(pocket, wallet_id, hold_id) and time.time() < deadline:
            time.sleep(0.05)
        assert writer.is_alive()  # The writes never paused meanwhile.
        assert endings(pocket, wallet_id, hold_id), "not expired within the bound"
    finally:
        stop.set()
        writer.join()
        runner.stop()


def test_followers_racing_to_expire_record_each_expiry_once(
    sql_settings: Settings,
) -> None:
    """Two runners' expiry threads (as two `pocket follow` would, if both held
    the lock) send every due hold's expiry at once: each is recorded once."""
    runners = [PocketRunner(system, dict(sql_settings.env)) for _ in range(2)]
    pocket = runners[0].pocket
    wallet_id = funded_wallet(pocket)
    holds = [hold(pocket, wallet_id, seconds=1) for _ in range(5)]
    threads = []
    for runner in runners:
        expirer = runner.get(HoldExpiry)
        expirer.follow(pocket.name, runner.pocket.notification_log)
        expirer.catch_up(pocket.name)
        threads.append(
            ExpiryThread(
                expirer,
                None,  # No catalog and no lock: this test runs no rounds.
                None,
                1.0,
                threading.Event(),
                pocket=runner.pocket,
            )
        )
    time.sleep(1.1)
    go = threading.Barrier(2)

    def expire(thread: ExpiryThread) -> None:
        go.wait()
        thread.expire_due()

    racers = [threading.Thread(target=expire, args=(t,)) for t in threads]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    try:
        assert sum(t.expired for t in threads) == len(holds)
        for hold_id in holds:
            assert len(endings(pocket, wallet_id, hold_id)) == 1
    finally:
        for runner in runners:
            runner.stop()


def test_status_shows_the_followers_position_lag_and_open_holds(
    pocket: Pocket, expiry: HoldExpiry
) -> None:
    open_catalog(pocket)
    wallet_id = funded_wallet(pocket)
    hold(pocket, wallet_id, seconds=1)
    hold(pocket, wallet_id)
    expiry.catch_up(pocket.name)
    time.sleep(1.1)
    hold(pocket, wallet_id)  # Not applied yet: the follower lags by one event.
    report, _ = status(pocket)["followers"]
    head = pocket.recorder.max_notification_id() or 0
    assert report["name"] == "hold_expiry"
    assert (report["position"], report["head"]) == (head - 1, head)
    assert report["lag_events"] == 1
    assert (report["open_holds"], report["due_holds"]) == (2, 1)
    assert not report["follower"]["running"]
    text = format_status(status(pocket))
    assert "open holds     2, 1 past their expiry" in text
