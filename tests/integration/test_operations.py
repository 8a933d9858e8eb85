"""Live projection rebuilds, follower locks, status and verify, on SQLite and
PostgreSQL."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from pocket.application import Pocket
from pocket.bootstrap import follower_lock, named_lock, open_catalog, open_pocket
from pocket.catalog import live_records
from pocket.commands import AddMoney, CloseWallet, DrawMoney, OpenWallet, Transfer
from pocket.config import Settings
from pocket.database import Database
from pocket.domainmodel import Cause, Wallet
from pocket.migration import MigrationRefused, Progress, migrate
from pocket.operations import format_status, last_verification, status, verify
from pocket.runner import PocketRunner
from pocket.system import VERSIONS, projector_of, system
from pocket.walletrecords import LATEST_VERSION, WalletRecord, table_of
from tests.holds import hold_history
from tests.replay import replayed_records

# What a new database's followers apply: the latest version's projector.
LIVE = VERSIONS[LATEST_VERSION]
ROWS = table_of(LATEST_VERSION)


@pytest.fixture
def pocket(sql_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(sql_settings)
    yield app
    app.close()


def make_history(pocket: Pocket, wallets: int = 4, rounds: int = 5) -> list[UUID]:
    ids = [pocket.open_wallet(OpenWallet(user_id=str(n))) for n in range(wallets)]
    for _ in range(rounds):
        for wallet_id in ids:
            pocket.add_money(
                AddMoney(wallet_id=wallet_id, amount=Decimal("2.50"), source="API")
            )
        pocket.draw_money(
            DrawMoney(wallet_id=ids[0], amount=Decimal("1.25"), destination="ATM")
        )
    if wallets >= 4:
        pocket.transfer(
            Transfer(
                sender_id=ids[1],
                receiver_id=ids[2],
                amount=Decimal("3"),
                description="t",
            )
        )
        pocket.draw_money(
            DrawMoney(
                wallet_id=ids[3],
                amount=pocket.get_wallet(ids[3]).balance,
                destination="out",
            )
        )
        pocket.close_wallet(CloseWallet(wallet_id=ids[3]))
    return ids


def readers_see(pocket: Pocket) -> dict[UUID, WalletRecord]:
    """What a reader of the wallet_records view sees."""
    rows = Database.of(pocket).query("SELECT aggregate_id FROM wallet_records")
    ids = [UUID(str(row["aggregate_id"])) for row in rows]
    return live_records(Database.of(pocket), ids)


def follow_all(pocket: Pocket) -> None:
    with closing(projector_of(pocket, open_catalog(pocket).live_version())) as p:
        p.catch_up("Pocket")


def quiet(_: str) -> None:
    """Swallows migrate's messages."""


def test_a_new_database_starts_at_the_latest_version(pocket: Pocket) -> None:
    assert open_catalog(pocket).live_version() == LATEST_VERSION


def test_migrating_builds_a_version_and_switches_readers_to_it(pocket: Pocket) -> None:
    make_history(pocket)
    follow_all(pocket)
    assert migrate(pocket, target=1, out=quiet) == 1
    assert readers_see(pocket) == replayed_records(pocket, 1)
    assert open_catalog(pocket).positions().keys() == {1}
    make_history(pocket, wallets=2)
    follow_all(pocket)
    assert migrate(pocket, out=quiet) == LATEST_VERSION
    assert readers_see(pocket) == replayed_records(pocket)
    assert open_catalog(pocket).positions().keys() == {LATEST_VERSION}


def test_keep_old_keeps_the_previous_version(pocket: Pocket) -> None:
    make_history(pocket)
    migrate(pocket, target=1, keep_old=True, out=quiet)
    assert open_catalog(pocket).positions().keys() == {1, LATEST_VERSION}
    migrate(pocket, out=quiet)
    assert open_catalog(pocket).positions().keys() == {LATEST_VERSION}


def test_a_rebuild_during_writes_and_a_live_follower_loses_nothing(
    sql_settings: Settings,
) -> None:
    runner = PocketRunner(system, dict(sql_settings.env))
    runner.start()
    pocket = runner.pocket
    stop = threading.Event()
    try:
        ids = make_history(pocket)

        def write() -> None:
            while not stop.is_set():
                pocket.add_money(
                    AddMoney(
                        wallet_id=ids[0], amount=Decimal("0.01"), source="meanwhile"
                    )
                )

        writer = threading.Thread(target=write)
        writer.start()
        try:
            migrate(pocket, target=1, batch_size=70, out=quiet)
            migrate(pocket, batch_size=50, out=quiet)
        finally:
            stop.set()
            writer.join()
        head = pocket.recorder.max_notification_id()
        live = runner.get(LIVE)
        live.recorder.wait("Pocket", head, timeout=20)
        assert open_catalog(pocket).live_version() == LATEST_VERSION
        assert live.position == head
        assert readers_see(pocket) == replayed_records(pocket)
    finally:
        runner.stop()


def test_readers_keep_the_live_version_until_the_new_one_is_complete(
    pocket: Pocket,
) -> None:
    make_history(pocket)
    follow_all(pocket)
    before = readers_see(pocket)
    catalog = open_catalog(pocket)
    catalog.create_rows(1)
    with closing(projector_of(pocket, 1, batch_size=3, live_only=False)) as builder:
        builder.process_section("Pocket")  # a rebuild interrupted after one batch
    assert catalog.live_version() == LATEST_VERSION
    assert readers_see(pocket) == before
    assert len(catalog.records(1)) < len(before)


def test_an_interrupted_rebuild_resumes_and_finishes_correctly(pocket: Pocket) -> None:
    make_history(pocket)
    catalog = open_catalog(pocket)
    catalog.create_rows(1)
    with closing(projector_of(pocket, 1, batch_size=4, live_only=False)) as builder:
        builder.process_section("Pocket")
        builder.process_section("Pocket")
        interrupted_at = builder.position
    messages: list[str] = []
    migrate(pocket, target=1, out=messages.append)
    assert f"Resuming wallet_records v1 from position {interrupted_at:,}." in messages
    assert readers_see(pocket) == replayed_records(pocket, 1)


def test_a_second_migration_at_once_is_refused(pocket: Pocket) -> None:
    held = named_lock(pocket, "migrate-wallet_records")
    assert held.try_acquire()
    try:
        with pytest.raises(MigrationRefused, match="Another pocket migrate"):
            migrate(pocket, target=1, out=quiet)
        assert open_catalog(pocket).live_version() == LATEST_VERSION
    finally:
        held.release()
    assert migrate(pocket, target=1, out=quiet) == 1


def test_an_unknown_version_is_refused(pocket: Pocket) -> None:
    with pytest.raises(MigrationRefused, match="no version 9"):
        migrate(pocket, target=9, out=quiet)


def test_progress_on_a_terminal_is_a_bar_and_in_a_log_a_line() -> None:
    bar, log = io.StringIO(), io.StringIO()
    on_tty = Progress("Building", bar, tty=True)
    in_log = Progress("Building", log, tty=False, interval=0)
    for done in (10, 20):
        on_tty.update(done, 40, force=True)
        in_log.update(done, 40)
    on_tty.finish()
    assert "\r" in bar.getvalue()
    assert "[###############               ]" in bar.getvalue()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("Building: 25%, 10/40 events")
    assert "left" in lines[-1]


def test_a_migration_in_a_log_prints_each_progress_line_once(pocket: Pocket) -> None:
    make_history(pocket)
    log = io.StringIO()
    migrate(pocket, target=1, progress=Progress("Building", log, tty=False), out=quiet)
    lines = log.getvalue().splitlines()
    assert len(lines) == len(set(lines)) == 1, lines
    assert lines[0].startswith("Building: 100%")


# Followers: one active at a time


def test_only_one_follower_holds_the_lock_and_the_other_takes_over(
    pocket: Pocket,
) -> None:
    first, second = (
        follower_lock(pocket, LATEST_VERSION),
        follower_lock(pocket, LATEST_VERSION),
    )
    assert first.try_acquire()
    assert not second.try_acquire()
    assert first.is_still_held()
    first.release()  # as the death of its process would
    assert second.try_acquire()
    second.release()


def test_a_standby_follower_applies_nothing_until_it_holds_the_lock(
    sql_settings: Settings,
) -> None:
    runner = PocketRunner(system, dict(sql_settings.env), poll_interval=0.1)
    active_lock = follower_lock(runner.pocket, LATEST_VERSION)
    assert active_lock.try_acquire()
    runner.start()
    try:
        pocket = runner.pocket
        standby = runner.get(LIVE)
        make_history(pocket, wallets=1, rounds=1)
        assert not standby.stopping.wait(1.5)
        assert standby.position is None
        active_lock.release()
        standby.recorder.wait(
            "Pocket", pocket.recorder.max_notification_id(), timeout=10
        )
        assert readers_see(pocket) == replayed_records(pocket)
    finally:
        runner.stop()


# Status and verify


def test_status_reports_position_lag_and_the_follower(pocket: Pocket) -> None:
    open_catalog(pocket)  # as any server or follower would have, first
    make_history(pocket, wallets=2, rounds=1)
    report = status(pocket)["projections"][0]
    assert report["live_version"] == report["latest_version"] == LATEST_VERSION
    assert report["position"] == 0
    assert report["lag_events"] == report["head"] > 0
    assert report["lag_seconds"] >= 0
    assert report["follower"]["running"] is False
    lock = follower_lock(pocket, LATEST_VERSION)
    assert lock.try_acquire()
    try:
        follow_all(pocket)
        report = status(pocket)["projections"][0]
        assert report["follower"]["running"] is True
        assert report["lag_events"] == 0
        assert report["position"] == report["head"]
    finally:
        lock.release()


def test_status_lists_the_followers_standing_by_and_forgets_them_once_gone(
    pocket: Pocket,
) -> None:
    open_catalog(pocket)
    active, first, second = (follower_lock(pocket, LATEST_VERSION) for _ in range(3))
    assert active.try_acquire()
    try:
        assert status(pocket)["projections"][0]["follower"]["standbys"] == []
        for standby in (first, second):
            assert not standby.try_acquire()
            assert standby.stand_by()
            assert standby.stand_by()  # Once seen, it stays seen; no duplicate.
        follower = status(pocket)["projections"][0]["follower"]
        assert follower["running"] is True
        assert [s["pid"] for s in follower["standbys"]] == [os.getpid()] * 2
        # Trying again, as a standby does every second, keeps its place (since).
        assert not first.try_acquire()
        assert first.stand_by()
        again = status(pocket)["projections"][0]["follower"]["standbys"]
        assert again == follower["standbys"]
        for standby in follower["standbys"]:
            assert set(standby) == {"pid", "host", "since"}
            assert datetime.fromisoformat(standby["since"]) <= datetime.now(UTC)
        assert "  standby        pid" in format_status(status(pocket))
        active.release()
        assert first.try_acquire()  # Taking the lock ends standing by.
        second.release()  # So does giving up.
        follower = status(pocket)["projections"][0]["follower"]
        assert follower["standbys"] == []
    finally:
        for lock in (active, first, second):
            lock.release()


def test_verify_agrees_with_a_faithful_projection(pocket: Pocket) -> None:
    make_history(pocket)
    follow_all(pocket)
    lines: list[str] = []
    assert verify(pocket, out=lines.append) == 0
    assert "0 mismatch(es)" in lines[-1]


def test_verify_agrees_with_a_projection_that_followed_holds_and_limits(
    pocket: Pocket,
) -> None:
    hold_history(pocket)
    follow_all(pocket)
    lines: list[str] = []
    assert verify(pocket, out=lines.append) == 0, lines


def test_verify_catches_a_row_tampered_with_by_hand(pocket: Pocket) -> None:
    ids = make_history(pocket)
    follow_all(pocket)
    Database.of(pocket).execute(
        f"UPDATE {ROWS} SET balance = %s WHERE aggregate_id = %s",
        [Decimal("999.99"), ids[1]],
    )
    lines: list[str] = []
    assert verify(pocket, out=lines.append) == 1
    assert any(str(ids[1]) in line and "999.99" in line for line in lines)


def test_verify_catches_a_held_amount_tampered_with_by_hand(pocket: Pocket) -> None:
    payer, _ = hold_history(pocket)
    follow_all(pocket)
    Database.of(pocket).execute(
        f"UPDATE {ROWS} SET held = %s WHERE aggregate_id = %s",
        [Decimal("9.99"), payer],
    )
    lines: list[str] = []
    assert verify(pocket, out=lines.append) == 1
    assert f"wallet {payer}: wallet_records has held 9.99, the events say 2.25" in (
        lines
    )


def crafted(pocket: Pocket, craft: Callable[[Wallet, UUID], None]) -> list[str]:
    """verify's lines about a wallet with 50.00 and a hold of 10.00, to which
    craft adds events the rules would have refused."""
    wallet = Wallet.open("1", uuid4(), Cause())
    wallet.add_money(Decimal(50), "API", Cause())
    hold_id = uuid4()
    wallet.place_hold(
        hold_id=hold_id,
        amount=Decimal(10),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        destination="shop",
        cause=Cause(),
    )
    craft(wallet, hold_id)
    pocket.save(wallet)
    follow_all(pocket)
    lines: list[str] = []
    assert verify(pocket, out=lines.append) > 0
    return lines


def void(wallet: Wallet, hold_id: UUID) -> None:
    """A HoldVoided, whether or not the wallet still has the hold open."""
    wallet.holds.setdefault(str(hold_id), {})
    wallet.trigger_event(
        Wallet.HoldVoided,
        hold_id=hold_id,
        amount=Decimal(10),
        balance=wallet.balance,
        actor="system",
        correlation_id="crafted",
    )


def test_verify_catches_a_hold_ended_twice(pocket: Pocket) -> None:
    def twice(wallet: Wallet, hold_id: UUID) -> None:
        void(wallet, hold_id)
        void(wallet, hold_id)

    lines = crafted(pocket, twice)
    assert any(
        "event 5 ends hold" in line and "which had ended already (voided)" in line
        for line in lines
    ), lines


def test_verify_catches_a_hold_ended_that_was_never_placed(pocket: Pocket) -> None:
    lines = crafted(pocket, lambda wallet, _: void(wallet, uuid4()))
    assert any("which this wallet never placed" in line for line in lines), lines


def test_verify_catches_a_hold_placed_twice(pocket: Pocket) -> None:
    def again(wallet: Wallet, hold_id: UUID) -> None:
        wallet.place_hold(
            hold_id=hold_id,
            amount=Decimal(5),
            expires_at=datetime.now(UTC) + timedelta(hours=1),
            destination="shop",
            cause=Cause(),
        )

    lines = crafted(pocket, again)
    assert any("places hold" in line and "again" in line for line in lines), lines
    # The projection counted both; the log's first placing is what counts.
    assert any("has held 15.00, the events say 10.00" in line for line in lines)


def test_verify_catches_a_capture_larger_than_its_hold(pocket: Pocket) -> None:
    def greedy(wallet: Wallet, hold_id: UUID) -> None:
        wallet.trigger_event(
            Wallet.HoldCaptured,
            hold_id=hold_id,
            amount=Decimal(25),
            released=Decimal(0),
            destination="shop",
            transfer_id=None,
            counterparty_wallet_id=None,
            counterparty_user_id=None,
            description="",
            balance=wallet.balance - Decimal(25),
            actor="system",
            correlation_id="crafted",
        )

    lines = crafted(pocket, greedy)
    assert any("captures 25.00 of hold" in s and "which held 10.00" in s for s in lines)


def test_verify_records_what_it_found_for_the_console(pocket: Pocket) -> None:
    ids = make_history(pocket)
    follow_all(pocket)
    before = datetime.now(UTC)
    assert verify(pocket, out=quiet) == 0
    first = last_verification(pocket)
    assert first is not None
    head = pocket.recorder.max_notification_id()
    assert (first.checked, first.mismatches, first.position, first.version) == (
        4,
        0,
        head,
        LATEST_VERSION,
    )
    assert before <= first.at <= datetime.now(UTC)
    Database.of(pocket).execute(
        f"UPDATE {ROWS} SET balance = %s WHERE aggregate_id = %s",
        [Decimal("999.99"), ids[1]],
    )
    assert verify(pocket, out=quiet) == 1
    second = last_verification(pocket)
    assert second is not None
    assert (second.mismatches, second.checked) == (1, 4)
    assert second.at >= first.at


def test_no_verification_is_known_before_verify_runs_and_asking_creates_nothing(
    pocket: Pocket,
) -> None:
    assert last_verification(pocket) is None
    with Database.of(pocket).transaction(commit=False) as tx:
        assert not tx.has_table("pocket_verifications")


def test_verify_compares_only_what_the_projection_has_reached(pocket: Pocket) -> None:
    make_history(pocket)
    follow_all(pocket)
    make_history(pocket, wallets=2)  # not yet projected
    assert verify(pocket, out=quiet) == 0


def test_a_database_from_before_versions_keeps_version_one_live(
    sql_settings: Settings,
) -> None:
    pocket = open_pocket(sql_settings)
    db = Database.of(pocket)
    db.execute(
        "CREATE TABLE wallet_records_v1 (aggregate_id text PRIMARY KEY, "
        "user_id text NOT NULL, balance numeric NOT NULL, version bigint NOT NULL)"
    )
    catalog = open_catalog(pocket)
    assert catalog.live_version() == 1
    assert db.query("SELECT * FROM wallet_records") == []
    pocket.close()


def test_positions_kept_before_versions_had_projectors_are_kept(
    sql_settings: Settings,
) -> None:
    pocket = open_pocket(sql_settings)
    try:
        make_history(pocket)
        follow_all(pocket)  # the live version at the head
        head = pocket.recorder.max_notification_id()
        db = Database.of(pocket)
        # As an older Pocket kept it: one table of positions for every version,
        # and no tables of the projector's own.
        db.execute(f"DROP TABLE {ROWS}_tracking")
        db.execute(f"DROP TABLE {ROWS}_events")
        db.execute(
            "CREATE TABLE projection_tracking (projection text PRIMARY KEY, "
            "application_name text NOT NULL, notification_id bigint NOT NULL)"
        )
        db.execute(
            "INSERT INTO projection_tracking VALUES (%s, %s, %s)",
            [ROWS, "Pocket", head],
        )
    finally:
        pocket.close()
    runner = PocketRunner(system, dict(sql_settings.env))
    runner.start()
    try:
        assert runner.get(LIVE).position == head
        assert readers_see(runner.pocket) == replayed_records(runner.pocket)
        with Database.of(runner.pocket).transaction(commit=False) as tx:
            assert not tx.has_table("projection_tracking")
    finally:
        runner.stop()
