"""The unit of work around Pocket's handlers, on real event stores: decisions in
order on a hot wallet, conflicts and stale refusals decided again, a handler that
breaks failing alone, replays answered from their records, and what each write
carries. Writes are watched (and faults made) at the committer's insert, the
one place a save reaches the recorder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from pocket.application import Pocket, WalletInfo
from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, DrawMoney, OpenWallet
from pocket.config import Settings
from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.domainmodel import CommandRecord
from pocket.errors import ConcurrencyConflict, InsufficientFunds
from pocket.unitofwork import handler
from pocket.wallets import Wallets


class Inserts:
    """Watches a Pocket's writes: each insert's events (wallet, version) and
    keywords; makes the next ones fail where asked."""

    def __init__(self, pocket: Pocket) -> None:
        self.insert = pocket._committer.insert
        self.calls: list[tuple[list[tuple[UUID, int]], dict[str, Any]]] = []
        self.faults: list[
            tuple[Callable[[Sequence[StoredEvent], dict[str, Any]], bool], Exception]
        ] = []
        self.hold: threading.Event | None = None
        self.holding = threading.Event()
        pocket._committer.insert = self

    def __call__(self, events: Sequence[StoredEvent], **kwargs: Any) -> Any:
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(10)
        self.calls.append(
            (
                [(UUID(str(e.originator_id)), e.originator_version) for e in events],
                kwargs,
            )
        )
        for when, error in self.faults:
            if when(events, kwargs):
                self.faults.remove((when, error))
                raise error
        return self.insert(events, **kwargs)

    def fail(
        self,
        error: Exception,
        when: Callable[[Sequence[StoredEvent], dict[str, Any]], bool],
        times: int = 1,
    ) -> None:
        self.faults.extend([(when, error)] * times)


def touching(
    wallet_id: UUID,
) -> Callable[[Sequence[StoredEvent], dict[str, Any]], bool]:
    """Inserts with an event of this wallet."""
    return lambda events, _: any(e.originator_id == wallet_id for e in events)


class HalfDone(Pocket):
    """A Pocket with one more handler: one that breaks after changing its wallet
    (a bug, or a rule checked too late)."""

    error: Exception = InsufficientFunds(Decimal(0), Decimal(1))

    @handler
    def half_done(self, command: AddMoney, wallets: Wallets) -> WalletInfo:
        wallet = wallets.get(command.wallet_id)
        wallet.add_money(command.amount, command.source, command.cause)
        raise self.error


@pytest.fixture
def pocket(sql_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(sql_settings)
    yield app
    app.close()


@pytest.fixture
def elsewhere(sql_settings: Settings) -> Iterator[Pocket]:
    """Another process on the same event store."""
    app = open_pocket(sql_settings)
    yield app
    app.close()


def add(
    pocket: Pocket, wallet_id: UUID, amount: str, key: str | None = None
) -> WalletInfo:
    return pocket.add_money(
        AddMoney(
            wallet_id=wallet_id, amount=Decimal(amount), source="x", command_id=key
        )
    )


def draw(pocket: Pocket, wallet_id: UUID, amount: str) -> WalletInfo:
    return pocket.draw_money(
        DrawMoney(wallet_id=wallet_id, amount=Decimal(amount), destination="x")
    )


def wallet(pocket: Pocket, balance: str = "0") -> UUID:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    if Decimal(balance):
        add(pocket, wallet_id, balance)
    return wallet_id


# In order, on the newest state


def test_many_threads_on_one_wallet_each_get_the_balance_their_own_command_left(
    pocket: Pocket,
) -> None:
    a = wallet(pocket)
    start = threading.Barrier(8)
    batches = pocket.commit_counts[0]

    def add_twenty(_: int) -> list[Decimal]:
        start.wait()
        return [add(pocket, a, "1").balance for _ in range(20)]

    with ThreadPoolExecutor(8) as threads:
        answers = [b for each in threads.map(add_twenty, range(8)) for b in each]
    assert sorted(answers) == [Decimal(n) for n in range(1, 161)]
    assert pocket.get_wallet(a).balance == Decimal("160.00")
    assert pocket.commit_counts[0] - batches < 160  # they shared writes


def queued(pocket: Pocket, count: int) -> None:
    """Returns once this many commands wait for the next batch."""
    deadline = time.monotonic() + 10
    while len(pocket.work.queue) < count:
        assert time.monotonic() < deadline, "the commands did not arrive"
        time.sleep(0.001)


def test_where_the_store_checks_no_priors_a_hot_wallet_is_decided_one_batch_at_a_time(
    any_settings: Settings,
) -> None:
    # The library's in-memory store refuses a taken version, not one that
    # follows an event that failed: there, a command is never decided on a
    # save not yet written (it waits for the next batch).
    pocket = open_pocket(any_settings)
    try:
        a = wallet(pocket)
        with ThreadPoolExecutor(8) as threads:
            answers = list(
                threads.map(lambda _: add(pocket, a, "1").balance, range(80))
            )
        assert sorted(answers) == [Decimal(n) for n in range(1, 81)]
        assert pocket.get_wallet(a).version == 81
    finally:
        pocket.close()


def test_commands_that_arrive_during_a_write_are_decided_on_what_it_wrote(
    pocket: Pocket,
) -> None:
    a = wallet(pocket, "1")
    inserts = Inserts(pocket)
    inserts.hold = threading.Event()
    with ThreadPoolExecutor(3) as threads:
        first = threads.submit(add, pocket, a, "2")
        assert inserts.holding.wait(10)  # being written
        later = [threads.submit(add, pocket, a, amount) for amount in ("4", "8")]
        queued(pocket, 2)
        inserts.hold.set()
        assert first.result(10).balance == Decimal("3.00")
        assert sorted(f.result(10).balance for f in later) == [
            Decimal("7.00"),
            Decimal("15.00"),
        ]
    # The two that waited were decided in one batch, one on the other's event,
    # and written in one insert.
    assert [events for events, _ in inserts.calls] == [[(a, 3)], [(a, 4), (a, 5)]]


def test_saves_decided_on_a_wallet_written_elsewhere_meanwhile_are_decided_again(
    pocket: Pocket, elsewhere: Pocket
) -> None:
    a, b = wallet(pocket, "1"), wallet(pocket)  # a is cached at 1.00
    inserts = Inserts(pocket)
    inserts.hold = threading.Event()
    with ThreadPoolExecutor(3) as threads:
        holder = threads.submit(add, pocket, b, "1")
        assert inserts.holding.wait(10)
        later = [threads.submit(add, pocket, a, amount) for amount in ("2", "4")]
        queued(pocket, 2)
        add(elsewhere, a, "10")  # Another process writes a meanwhile.
        inserts.hold.set()
        inserts.hold = None
        holder.result(10)
        answers = sorted(f.result(10).balance for f in later)
    # Both were decided on the cached 1.00 (the second on the first's event):
    # both conflicted, and both were decided again on the wallet as stored.
    assert answers[-1] == Decimal("17.00")
    assert pocket.get_wallet(a).version == 5  # each change once, nothing lost
    assert pocket.commit_stats.retries >= 2


# A database that does not confirm commits (a synchronous standby gone)


def test_callers_behind_a_write_that_stalls_are_answered_at_once(
    pocket: Pocket,
) -> None:
    a, b = wallet(pocket), wallet(pocket)
    pocket._committer.stalled_seconds = 0.1
    inserts = Inserts(pocket)
    inserts.hold = threading.Event()
    with ThreadPoolExecutor(2) as threads:
        first = threads.submit(add, pocket, a, "1")
        assert inserts.holding.wait(10)
        started = time.monotonic()
        # Waiting behind the stalled write (or arriving after it stalled):
        # answered without being run, so that the server's thread is free.
        second = threads.submit(add, pocket, b, "2")
        with pytest.raises(WritesStalled):
            second.result(10)
        assert time.monotonic() - started < 1
        with pytest.raises(WritesStalled):
            add(pocket, b, "3")
        assert pocket.writes_health.stuck_since is not None
        inserts.hold.set()
        assert first.result(10).balance == Decimal("1.00")
    assert pocket.get_wallet(b).balance == Decimal(0)
    assert pocket.writes_health.stuck_since is None


def test_a_caller_whose_own_write_stalls_hears_it_may_yet_be_made(
    pocket: Pocket,
) -> None:
    a, b, c = wallet(pocket), wallet(pocket), wallet(pocket)
    pocket._committer.stalled_seconds = 0.1
    inserts = Inserts(pocket)
    inserts.hold = threading.Event()
    with ThreadPoolExecutor(3) as threads:
        holder = threads.submit(add, pocket, a, "1")
        assert inserts.holding.wait(10)
        # Queued behind the write in flight: the first runs the next batch,
        # the second waits in it.
        leading = threads.submit(add, pocket, b, "1")
        queued(pocket, 1)
        waiting = threads.submit(add, pocket, c, "1")
        queued(pocket, 2)
        first_write, inserts.hold = inserts.hold, threading.Event()
        inserts.holding.clear()
        first_write.set()
        assert inserts.holding.wait(10)  # The next write is held in its turn.
        # Sent, and not confirmed in time: it may yet be made.
        with pytest.raises(WriteNotConfirmed):
            waiting.result(10)
        inserts.hold.set()
        assert leading.result(10).balance == Decimal("1.00")
        holder.result(10)
    # The write went on, and did go through.
    assert pocket.get_wallet(c).balance == Decimal("1.00")


# Refusals, decided on cached wallets


def test_a_refusal_on_a_cached_wallet_changed_elsewhere_is_decided_again(
    pocket: Pocket, elsewhere: Pocket
) -> None:
    a = wallet(pocket, "5")
    draw(pocket, a, "5")  # a is cached, empty
    add(elsewhere, a, "10")
    assert draw(pocket, a, "7").balance == Decimal("3.00")
    assert pocket.get_wallet(a).balance == Decimal("3.00")


def test_a_refusal_on_a_cached_wallet_still_current_stands_and_writes_nothing(
    pocket: Pocket,
) -> None:
    a = wallet(pocket, "5")
    draw(pocket, a, "5")
    inserts = Inserts(pocket)
    with pytest.raises(InsufficientFunds):
        draw(pocket, a, "1")
    assert inserts.calls == []


def test_a_refusal_on_a_wallet_read_for_its_batch_stands_without_another_read(
    sql_settings: Settings, pocket: Pocket
) -> None:
    a = wallet(pocket, "5")
    cold = open_pocket(sql_settings)  # a new process: nothing cached
    try:
        checks: list[UUID] = []
        latest = cold.work.store.latest

        def spied(wallet_id: UUID) -> tuple[int, bytes | None]:
            checks.append(wallet_id)
            return latest(wallet_id)

        cold.work.store.latest = spied  # type: ignore[method-assign]
        with pytest.raises(InsufficientFunds):
            draw(cold, a, "6")
        assert checks == []  # read as stored for this batch: nothing to check
        with pytest.raises(InsufficientFunds):
            draw(cold, a, "6")
        assert checks == [a]  # cached from an earlier batch: checked
    finally:
        cold.close()


# Conflicts


def test_a_save_that_meets_another_writer_is_decided_again_on_the_wallet_as_stored(
    pocket: Pocket, elsewhere: Pocket
) -> None:
    a = wallet(pocket)
    add(pocket, a, "1")  # cached at 1.00
    add(elsewhere, a, "10")
    retries = pocket.commit_stats.retries
    assert add(pocket, a, "1").balance == Decimal("12.00")
    assert pocket.commit_stats.retries == retries + 1


def test_a_command_that_keeps_conflicting_ends_in_a_concurrency_conflict(
    pocket: Pocket,
) -> None:
    a = wallet(pocket)
    inserts = Inserts(pocket)
    inserts.fail(IntegrityError("conflict"), touching(a), times=99)
    with pytest.raises(ConcurrencyConflict):
        add(pocket, a, "1")
    assert len(inserts.calls) == Pocket.max_attempts
    assert pocket.get_wallet(a).version == 1


def test_a_stubborn_conflict_fails_its_own_caller_not_the_others(
    pocket: Pocket,
) -> None:
    a, b = wallet(pocket), wallet(pocket)
    inserts = Inserts(pocket)
    inserts.fail(IntegrityError("conflict"), touching(a), times=99)
    with ThreadPoolExecutor(2) as threads:
        stubborn = threads.submit(add, pocket, a, "1")
        fine = threads.submit(add, pocket, b, "2")
        assert fine.result(10).balance == Decimal("2.00")
        with pytest.raises(ConcurrencyConflict):
            stubborn.result(10)
    assert pocket.get_wallet(b).balance == Decimal("2.00")


# Handlers that break


@pytest.mark.parametrize(
    "error", [InsufficientFunds(Decimal(0), Decimal(1)), RuntimeError("a bug")]
)
def test_a_handler_that_fails_after_changing_its_wallet_fails_alone(
    sql_settings: Settings, error: Exception
) -> None:
    pocket = HalfDone(env=dict(sql_settings.env))
    pocket.error = error
    try:
        bad, good = wallet(pocket), wallet(pocket)
        add(pocket, bad, "1")  # cached
        with ThreadPoolExecutor(2) as threads:
            broken = threads.submit(
                pocket.half_done, AddMoney(wallet_id=bad, amount=Decimal(5), source="x")
            )
            sound = threads.submit(add, pocket, good, "1")
            with pytest.raises(type(error)):
                broken.result(10)
            assert sound.result(10).balance == Decimal("1.00")
        assert pocket.get_wallet(bad).version == 2  # the half change was not saved
        assert add(pocket, bad, "2").balance == Decimal("3.00")  # nor cached
    finally:
        pocket.close()


def test_a_database_error_fails_the_command_and_forgets_every_cached_wallet(
    pocket: Pocket,
) -> None:
    a, c = wallet(pocket), wallet(pocket)
    add(pocket, c, "1")  # c is cached
    inserts = Inserts(pocket)
    lost = OperationalError("connection lost")
    inserts.fail(lost, touching(a))
    with pytest.raises(OperationalError):
        add(pocket, a, "1")
    # What was committed is not known: the next command reads c again.
    assert pocket.work.cache.entries == {}
    assert add(pocket, c, "1").balance == Decimal("2.00")


# Idempotency records and replays


def test_a_keyed_commands_record_is_written_with_its_events(pocket: Pocket) -> None:
    a = wallet(pocket)
    inserts = Inserts(pocket)
    add(pocket, a, "1", key="k")
    ((events, _),) = inserts.calls
    assert events == [(a, 2), (CommandRecord.id_for("k"), 1)]


def test_a_replayed_command_is_answered_from_its_record_and_writes_no_event(
    pocket: Pocket,
) -> None:
    a = wallet(pocket)
    first = add(pocket, a, "1", key="k")
    inserts = Inserts(pocket)
    again = add(pocket, a, "1", key="k")
    assert (again.balance, again.replayed) == (first.balance, True)
    # Nothing to write, but the write is still made, to confirm the record it
    # was answered from: the server that commits must hold it (it may be on a
    # primary alone, or on another server than the one that commits).
    assert inserts.calls == [([], {"answered": [CommandRecord.id_for("k")]})]
    assert pocket.get_wallet(a).version == 2


def test_a_replay_whose_record_is_not_confirmed_is_not_answered(pocket: Pocket) -> None:
    a = wallet(pocket)
    add(pocket, a, "1", key="k")
    inserts = Inserts(pocket)
    inserts.fail(
        WriteNotConfirmed("The standby did not answer"), lambda e, kw: "answered" in kw
    )
    with pytest.raises(WriteNotConfirmed):
        add(pocket, a, "1", key="k")


# After the write


def test_a_follower_prompt_that_fails_does_not_fail_committed_commands(
    pocket: Pocket, caplog: pytest.LogCaptureFixture
) -> None:
    a = wallet(pocket)

    def broken(_: object) -> None:
        raise RuntimeError("the follower's queue is shut")

    pocket.work.notify = broken
    assert add(pocket, a, "1").balance == Decimal("1.00")
    assert pocket.get_wallet(a).balance == Decimal("1.00")
    assert "Followers not prompted" in caplog.text


def test_a_snapshot_that_fails_does_not_fail_its_command(pocket: Pocket) -> None:
    a = wallet(pocket)
    for _ in range(98):
        add(pocket, a, "0.01")

    tried: list[object] = []

    def broken(snapshots: object) -> None:
        tried.append(snapshots)
        raise OperationalError("the snapshots table is locked")

    pocket.work.snapshot = broken
    assert add(pocket, a, "0.01").version == 100  # the snapshot's turn
    assert len(tried) == 1
    assert pocket.get_wallet(a).balance == Decimal("0.99")
