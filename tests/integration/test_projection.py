"""The wallet_records projector and its runner, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from decimal import Decimal
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresApplicationRecorder

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.catalog import ProjectionCatalog
from pocket.commands import AddMoney, DrawMoney, OpenWallet
from pocket.config import Settings
from pocket.database import Database
from pocket.runner import FollowerThread, Listener, PocketRunner
from pocket.system import VERSIONS, WalletRecords, projector_of, system
from pocket.walletrecords import LATEST_VERSION, Batch, WalletChanges, WalletRecord
from tests.holds import PAYER_BALANCE, hold_history
from tests.replay import replayed_records

# What a new database's followers apply: the latest version's projector.
LIVE = VERSIONS[LATEST_VERSION]


@pytest.fixture
def pocket(sql_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(sql_settings)
    yield app
    app.close()


@pytest.fixture
def catalog(pocket: Pocket) -> ProjectionCatalog:
    return open_catalog(pocket)


@pytest.fixture
def projector(pocket: Pocket, catalog: ProjectionCatalog) -> Iterator[WalletRecords]:
    with closing(projector_of(pocket, catalog.live_version(), batch_size=500)) as p:
        yield p


def table(catalog: ProjectionCatalog) -> dict[UUID, WalletRecord]:
    return {r.aggregate_id: r for r in catalog.records(catalog.live_version())}


def make_history(pocket: Pocket, wallets: int = 5, moves: int = 4) -> list[UUID]:
    ids = [pocket.open_wallet(OpenWallet(user_id=str(n))) for n in range(wallets)]
    for round_ in range(moves):
        for wallet_id in ids:
            pocket.add_money(
                AddMoney(wallet_id=wallet_id, amount=Decimal("10.05"), source="API")
            )
            if round_ % 2:
                pocket.draw_money(
                    DrawMoney(
                        wallet_id=wallet_id, amount=Decimal("3.01"), destination="ATM"
                    )
                )
    return ids


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_version_follows_holds_and_limits_as_the_events_say(
    pocket: Pocket, catalog: ProjectionCatalog, version: int
) -> None:
    payer, payee = hold_history(pocket)
    catalog.create_rows(version)
    with closing(projector_of(pocket, version, live_only=False)) as projector:
        projector.batch_size = 3  # sections that end between a hold and its end
        projector.catch_up("Pocket")
    rows = {r.aggregate_id: r for r in catalog.records(version)}
    assert rows == replayed_records(pocket, version)
    assert rows[payer].balance == PAYER_BALANCE
    assert rows[payee].balance == Decimal("3.50")
    assert rows[payer].version == pocket.get_wallet(payer).version


def test_catching_up_makes_the_table_equal_to_a_replay(
    pocket: Pocket, catalog: ProjectionCatalog, projector: WalletRecords
) -> None:
    make_history(pocket)
    projector.batch_size = 7
    assert projector.catch_up("Pocket") == pocket.recorder.max_notification_id()
    assert table(catalog) == replayed_records(pocket)
    assert projector.position == pocket.recorder.max_notification_id()


def test_a_section_is_one_processing_event_recorded_with_its_position(
    pocket: Pocket, catalog: ProjectionCatalog, projector: WalletRecords
) -> None:
    make_history(pocket, wallets=3, moves=2)
    projector.batch_size = 4
    assert projector.process_section("Pocket") == 4
    assert projector.position == 4
    assert len(table(catalog)) == 3  # the section's three wallets, opened at once


def test_the_table_is_readable_through_the_wallet_records_view(
    pocket: Pocket, projector: WalletRecords
) -> None:
    (wallet_id,) = make_history(pocket, wallets=1, moves=2)
    projector.catch_up("Pocket")
    rows = Database.of(pocket).query(
        "SELECT aggregate_id, user_id, balance FROM wallet_records"
    )
    assert len(rows) == 1
    assert str(rows[0]["aggregate_id"]) == str(wallet_id)
    assert Decimal(str(rows[0]["balance"])) == Decimal("17.09")


def test_events_written_while_the_follower_was_away_are_caught_up(
    pocket: Pocket, catalog: ProjectionCatalog
) -> None:
    make_history(pocket, wallets=2, moves=1)
    with closing(projector_of(pocket, LATEST_VERSION)) as projector:
        projector.catch_up("Pocket")
    make_history(pocket, wallets=2, moves=3)
    with closing(projector_of(pocket, LATEST_VERSION)) as projector:
        assert projector.catch_up("Pocket") > 0
    assert table(catalog) == replayed_records(pocket)


def test_a_batch_read_from_a_stale_position_changes_nothing(
    pocket: Pocket, catalog: ProjectionCatalog, projector: WalletRecords
) -> None:
    (wallet_id,) = make_history(pocket, wallets=1, moves=1)
    projector.catch_up("Pocket")
    before = table(catalog)
    changes = WalletChanges()
    changes.move(wallet_id, Decimal("10.05"), 2)
    position = projector.position
    assert position is not None
    for tracking, after in [(position + 1, position - 1), (position, position)]:
        with pytest.raises(IntegrityError):
            projector.recorder.insert_events(
                [],
                tracking=Tracking("Pocket", tracking),
                batch=Batch(changes, after, live_only=True),
            )
    assert table(catalog) == before
    assert projector.position == position


def test_two_followers_at_once_apply_each_event_once(
    pocket: Pocket, catalog: ProjectionCatalog
) -> None:
    make_history(pocket, wallets=4, moves=6)
    projectors = [
        projector_of(pocket, LATEST_VERSION, batch_size=size) for size in (3, 5, 7)
    ]
    start = threading.Barrier(len(projectors))

    def race(projector: WalletRecords) -> None:
        start.wait()
        for _ in range(200):
            try:
                if not projector.process_section("Pocket"):
                    return
            except IntegrityError:
                continue  # Another follower moved the position: read it again.

    threads = [threading.Thread(target=race, args=(p,)) for p in projectors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for projector in projectors:
        projector.close()
    assert table(catalog) == replayed_records(pocket)


def test_a_running_system_applies_new_events_by_itself(sql_settings: Settings) -> None:
    runner = PocketRunner(system, dict(sql_settings.env))
    runner.start()
    try:
        pocket = runner.pocket
        (wallet_id,) = make_history(pocket, wallets=1, moves=3)
        recorder = runner.get(LIVE).recorder
        recorder.wait("Pocket", pocket.recorder.max_notification_id(), timeout=10)
        record = table(ProjectionCatalog(Database.of(pocket)))[wallet_id]
        assert record.balance == pocket.get_wallet(wallet_id).balance
    finally:
        runner.stop()
    assert not any(thread.is_alive() for thread in runner.threads.values())


def test_a_position_moved_by_another_follower_is_read_again_not_applied_twice(
    pocket: Pocket, catalog: ProjectionCatalog, projector: WalletRecords
) -> None:
    make_history(pocket, wallets=2, moves=1)
    projector.catch_up("Pocket")  # It now knows its position without asking.
    make_history(pocket, wallets=2, moves=2)
    with closing(projector_of(pocket, catalog.live_version())) as other:
        other.catch_up("Pocket")  # Moves the position past what projector knows.
    make_history(pocket, wallets=1, moves=1)
    with pytest.raises(IntegrityError):
        projector.process_section("Pocket")  # From its stale position: refused.
    assert projector.catch_up("Pocket") > 0  # Read again: the rest, once.
    assert table(catalog) == replayed_records(pocket)
    assert projector.position == pocket.recorder.max_notification_id()


def running_follower(settings: Settings, gather: float) -> PocketRunner:
    """A started runner whose followers gather for `gather` seconds."""
    runner = PocketRunner(system, dict(settings.env))
    runner.start()
    for thread in runner.threads.values():
        assert isinstance(thread, FollowerThread)
        thread.gather = gather
    return runner


def test_events_that_arrive_while_the_follower_gathers_are_applied_in_one_round(
    sql_settings: Settings,
) -> None:
    runner = running_follower(sql_settings, gather=2.0)
    try:
        pocket = runner.pocket
        live = runner.get(LIVE)
        wallet_id = pocket.open_wallet(OpenWallet(user_id="1"))
        live.recorder.wait("Pocket", pocket.recorder.max_notification_id(), timeout=10)
        before = live.sections_applied
        for _ in range(20):  # Far quicker than the 2 s the follower gathers for.
            pocket.add_money(
                AddMoney(wallet_id=wallet_id, amount=Decimal("1.00"), source="API")
            )
        live.recorder.wait("Pocket", pocket.recorder.max_notification_id(), timeout=10)
        # One round, two if the writes straddled the end of a gathering: never
        # a round per write.
        assert live.sections_applied - before <= 2
        record = table(ProjectionCatalog(Database.of(pocket)))[wallet_id]
        assert record.balance == Decimal("20.00")
    finally:
        runner.stop()
    assert not any(thread.is_alive() for thread in runner.threads.values())


def test_the_first_event_after_a_quiet_spell_is_applied_without_gathering(
    sql_settings: Settings,
) -> None:
    # Were a quiet follower to gather before applying, this would wait 60 s,
    # and stopping would wait for it too.
    runner = running_follower(sql_settings, gather=60.0)
    try:
        pocket = runner.pocket
        pocket.open_wallet(OpenWallet(user_id="1"))
        live = runner.get(LIVE).recorder
        live.wait("Pocket", pocket.recorder.max_notification_id(), timeout=10)
    finally:
        started = time.monotonic()
        runner.stop()
    assert time.monotonic() - started < 30
    assert not any(thread.is_alive() for thread in runner.threads.values())


def test_the_library_interface_applies_one_event(
    pocket: Pocket, catalog: ProjectionCatalog, projector: WalletRecords
) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="9"))
    (notification,) = pocket.recorder.select_notifications(start=1, limit=1)
    event = pocket.mapper.to_domain_event(notification)
    projector.process_event(event, Tracking("Pocket", notification.id))
    zero = Decimal("0.00")
    assert table(catalog)[wallet_id] == WalletRecord(
        wallet_id,
        "9",
        zero,
        1,
        closed=False,
        held=zero,
        available=zero,
        credit_limit=zero,
    )
    with pytest.raises(IntegrityError):
        projector.process_event(event, Tracking("Pocket", notification.id))


def test_a_burst_of_notifies_prompts_the_followers_a_few_times_not_once_each(
    postgres_settings: Settings,
) -> None:
    pocket = open_pocket(postgres_settings)
    prompts: list[float] = []
    assert isinstance(pocket.recorder, PostgresApplicationRecorder)
    listener = Listener(pocket.recorder, lambda: prompts.append(time.monotonic()))
    listener.gather = 0.5
    listener.start()
    try:
        wait_until(lambda: len(prompts) >= 1)  # The pull it makes once listening.
        wallet_id = pocket.open_wallet(OpenWallet(user_id="1"))
        wait_until(lambda: len(prompts) >= 2)  # A write after a quiet spell.
        before = len(prompts)
        for _ in range(100):  # A hundred commits, each with its NOTIFY.
            pocket.add_money(
                AddMoney(wallet_id=wallet_id, amount=Decimal("1.00"), source="API")
            )
        time.sleep(1.5)  # Three gatherings: every NOTIFY of the burst is heard.
        heard = len(prompts) - before
        assert 1 <= heard <= 1 + (prompts[-1] - prompts[before]) / 0.5
        assert heard < 100
    finally:
        listener.stopping.set()
        listener.join(10)
        pocket.close()
    assert not listener.is_alive()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.01)
