"""The wallet_records projection and its follower, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from pocket.application import Pocket
from pocket.config import Settings
from pocket.database import Database
from pocket.service import open_catalog, open_pocket
from pocket.system import (
    ProjectionFollower,
    ThreadedRunner,
    WalletChanges,
    WalletRecord,
)
from tests.replay import replayed_records


@pytest.fixture
def pocket(sql_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(sql_settings)
    yield app
    app.close()


def new_follower(pocket: Pocket, batch_size: int = 500) -> ProjectionFollower:
    return ProjectionFollower(pocket, open_catalog(pocket), batch_size=batch_size)


def table(follower: ProjectionFollower) -> dict[UUID, WalletRecord]:
    return {r.aggregate_id: r for r in follower.projection.view.all()}


def make_history(pocket: Pocket, wallets: int = 5, moves: int = 4) -> list[UUID]:
    ids = [pocket.create_wallet(str(n)) for n in range(wallets)]
    for round_ in range(moves):
        for wallet_id in ids:
            pocket.add_money(wallet_id, Decimal("10.05"), "API")
            if round_ % 2:
                pocket.draw_money(wallet_id, Decimal("3.01"), "ATM")
    return ids


def test_catching_up_makes_the_table_equal_to_a_replay(pocket: Pocket) -> None:
    make_history(pocket)
    follower = new_follower(pocket, batch_size=7)
    assert follower.catch_up() == pocket.recorder.max_notification_id()
    assert table(follower) == replayed_records(pocket)
    assert follower.position == pocket.recorder.max_notification_id()


def test_the_table_is_readable_through_the_wallet_records_view(pocket: Pocket) -> None:
    (wallet_id,) = make_history(pocket, wallets=1, moves=2)
    new_follower(pocket).catch_up()
    rows = Database.of(pocket).query(
        "SELECT aggregate_id, user_id, balance FROM wallet_records"
    )
    assert len(rows) == 1
    assert str(rows[0]["aggregate_id"]) == str(wallet_id)
    assert Decimal(str(rows[0]["balance"])) == Decimal("17.09")


def test_events_written_while_the_follower_was_away_are_caught_up(
    pocket: Pocket,
) -> None:
    make_history(pocket, wallets=2, moves=1)
    new_follower(pocket).catch_up()
    make_history(pocket, wallets=2, moves=3)
    follower = new_follower(pocket)
    assert follower.catch_up() > 0
    assert table(follower) == replayed_records(pocket)


def test_a_batch_read_from_a_stale_position_changes_nothing(pocket: Pocket) -> None:
    (wallet_id,) = make_history(pocket, wallets=1, moves=1)
    follower = new_follower(pocket)
    follower.catch_up()
    before = table(follower)
    view = follower.projection.view
    changes = WalletChanges()
    changes.move(wallet_id, Decimal("10.05"), 2)
    position = follower.position
    assert position is not None
    with pytest.raises(IntegrityError):
        view.apply(
            changes, Tracking("Pocket", position + 1), position - 1, live_only=True
        )
    with pytest.raises(IntegrityError):
        view.apply(changes, Tracking("Pocket", position), position, live_only=True)
    assert table(follower) == before
    assert follower.position == position


def test_two_followers_at_once_apply_each_event_once(pocket: Pocket) -> None:
    make_history(pocket, wallets=4, moves=6)
    followers = [new_follower(pocket, batch_size=size) for size in (3, 5, 7)]
    start = threading.Barrier(len(followers))

    def race(follower: ProjectionFollower) -> None:
        start.wait()
        for _ in range(200):
            try:
                if not follower.pull():
                    return
            except IntegrityError:
                continue  # Another follower moved the position: read it again.

    threads = [threading.Thread(target=race, args=(f,)) for f in followers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert table(followers[0]) == replayed_records(pocket)


def test_a_running_follower_applies_new_events_by_itself(pocket: Pocket) -> None:
    follower = new_follower(pocket)
    runner = ThreadedRunner(follower)
    runner.start()
    try:
        (wallet_id,) = make_history(pocket, wallets=1, moves=3)
        view = follower.projection.view
        view.wait("Pocket", pocket.recorder.max_notification_id(), timeout=10)
        record = view.get(wallet_id)
        assert record is not None
        assert record.balance == pocket.get_wallet(wallet_id).balance
    finally:
        runner.stop()
    assert not runner.thread.is_alive()


def test_the_library_interface_applies_one_event(pocket: Pocket) -> None:
    wallet_id = pocket.create_wallet("9")
    follower = new_follower(pocket)
    (notification,) = pocket.recorder.select_notifications(start=1, limit=1)
    event = pocket.mapper.to_domain_event(notification)
    follower.projection.process_event(event, Tracking("Pocket", notification.id))
    assert follower.projection.view.get(wallet_id) == WalletRecord(
        wallet_id, "9", Decimal("0.00"), 1, closed=False
    )
    with pytest.raises(IntegrityError):
        follower.projection.process_event(event, Tracking("Pocket", notification.id))
