"""The group committer on its own: a store in memory stands in for the database,
and every behaviour is seen through run(), on threads where callers meet."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, OperationalError

from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.domainmodel import Cause, CommandRecord, Wallet
from pocket.errors import ConcurrencyConflict, InsufficientFunds
from pocket.groupcommit import Command, GroupCommitter

CAUSE = Cause()


class Store:
    """Aggregates in memory, saved all or nothing with an event store's version
    check: events that do not follow the stored version are an IntegrityError,
    as when another process saved the aggregate first."""

    def __init__(self) -> None:
        self.aggregates: dict[UUID, Aggregate] = {}
        self.saves: list[list[UUID]] = []  # the ids in each save tried
        self.loads: Counter[UUID] = Counter()
        self.checks = 0  # how often has_newer_events was asked
        self.faults: dict[UUID, list[Exception]] = {}
        # What each save was asked to check beside the aggregates (guards,
        # priors, confirm), and an error the next save with nothing to save
        # raises (a confirmation that fails).
        self.save_kwargs: list[dict[str, Any]] = []
        self.confirm_fault: Exception | None = None
        self.lock = threading.Lock()

    # What the committer is given

    def load(self, wallet_id: UUID) -> Wallet:
        with self.lock:
            self.loads[wallet_id] += 1
            wallet = self.aggregates[wallet_id]
            assert isinstance(wallet, Wallet)
            return copy.deepcopy(wallet)

    def save(self, *aggregates: Aggregate, **kwargs: Any) -> None:
        with self.lock:
            self.saves.append([a.id for a in aggregates])
            self.save_kwargs.append(kwargs)
            if not aggregates and self.confirm_fault is not None:
                raise self.confirm_fault
            # As Pocket.save does, events leave the aggregates before the insert.
            changes = [(a, a.collect_events()) for a in aggregates]
            for aggregate in aggregates:
                if self.faults.get(aggregate.id):
                    raise self.faults[aggregate.id].pop(0)
            for aggregate, events in changes:
                stored = self.aggregates.get(aggregate.id)
                stored_version = stored.version if stored else 0
                if events[0].originator_version != stored_version + 1:
                    raise IntegrityError(f"{aggregate.id} was saved by another writer")
            for aggregate, _ in changes:
                self.aggregates[aggregate.id] = copy.deepcopy(aggregate)

    def has_newer_events(self, wallet: Wallet) -> bool:
        with self.lock:
            self.checks += 1
            return self.aggregates[wallet.id].version > wallet.version

    # What the tests arrange

    def wallet(self, balance: str = "0") -> UUID:
        """A stored wallet holding balance."""
        wallet = Wallet.open("u", uuid4(), CAUSE)
        if Decimal(balance):
            wallet.add_money(Decimal(balance), "seed", CAUSE)
        wallet.collect_events()
        self.aggregates[wallet.id] = wallet
        return wallet.id

    def add_elsewhere(self, wallet_id: UUID, amount: str) -> None:
        """Another process adds money to a stored wallet."""
        with self.lock:
            wallet = self.aggregates[wallet_id]
            assert isinstance(wallet, Wallet)
            wallet.add_money(Decimal(amount), "elsewhere", CAUSE)
            wallet.collect_events()

    def fail_saves_of(self, wallet_id: UUID, error: Exception, times: int) -> None:
        """The next saves that include this aggregate raise error, this many times."""
        self.faults[wallet_id] = [error] * times

    def balance(self, wallet_id: UUID) -> Decimal:
        wallet = self.aggregates[wallet_id]
        assert isinstance(wallet, Wallet)
        return wallet.balance


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def committer(store: Store) -> GroupCommitter:
    return GroupCommitter(store.load, store.save, store.has_newer_events)


def no_replay() -> None:
    """A command that never ran before."""


def no_record(_: object) -> None:
    """A command with no idempotency record to save."""


def command(
    wallet_ids: Sequence[UUID],
    change: Callable[[list[Wallet]], None],
    *,
    replay: Callable[[], Decimal | None] = no_replay,
    record: Callable[[Decimal], Aggregate | None] = no_record,
    record_id: UUID | None = None,
) -> Command[Decimal]:
    """A command that changes its wallets and answers the first one's balance."""

    def decide(wallets: list[Wallet]) -> Decimal:
        change(wallets)
        return wallets[0].balance

    return Command(wallet_ids, decide, replay, record, record_id=record_id)


def add(wallet_id: UUID, amount: str) -> Command[Decimal]:
    return command([wallet_id], lambda w: w[0].add_money(Decimal(amount), "x", CAUSE))


def draw(wallet_id: UUID, amount: str) -> Command[Decimal]:
    return command([wallet_id], lambda w: w[0].draw_money(Decimal(amount), "x", CAUSE))


class Caller(threading.Thread):
    """Calls a function on a thread of its own (a daemon: a caller never answered
    fails its test rather than hanging the run)."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.outcome: object = None

    def run(self) -> None:
        try:
            self.outcome = self.call()
        except Exception as error:
            self.outcome = error

    def answer(self) -> object:
        """What the call returned or raised, once it has."""
        self.join(10)
        assert not self.is_alive(), "the caller was never answered"
        return self.outcome


def together(
    committer: GroupCommitter, commands: Sequence[Command[Any]]
) -> list[object]:
    """Runs the commands through run(), each on a thread of its own, so that they
    make one batch in this order; returns each caller's answer or error.

    A first caller holds the committer in its decide (it touches no wallet and
    saves nothing) until all of them are waiting.
    """
    holding, release = threading.Event(), threading.Event()

    def hold(_: list[Wallet]) -> None:
        holding.set()
        release.wait(10)

    holder = Caller(partial(committer.run, Command([], hold, no_replay, no_record)))
    holder.start()
    assert holding.wait(10)
    callers: list[Caller] = []
    for each in commands:
        callers.append(Caller(partial(committer.run, each)))
        callers[-1].start()
        wait_for_waiting(committer, len(callers))
    release.set()
    assert holder.answer() is None
    return [caller.answer() for caller in callers]


def wait_for_waiting(committer: GroupCommitter, callers: int) -> None:
    """Returns once this many callers wait for the committer."""
    deadline = time.monotonic() + 5
    while len(committer.pending) != callers:
        assert time.monotonic() < deadline, "the callers did not arrive"
        time.sleep(0.001)


# Batching


def test_commands_waiting_together_are_saved_in_one_save(
    committer: GroupCommitter, store: Store
) -> None:
    a, b = store.wallet(), store.wallet()
    answers = together(committer, [add(a, "1"), add(b, "2"), add(a, "3")])
    assert answers == [Decimal("1.00"), Decimal("2.00"), Decimal("4.00")]
    assert store.saves == [[a, b]]
    assert (store.balance(a), store.balance(b)) == (Decimal("4.00"), Decimal("2.00"))


def test_each_caller_of_a_batch_hears_its_own_refusal(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet("5")
    answers = together(committer, [draw(a, "3"), draw(a, "3"), draw(a, "2")])
    assert answers[0] == Decimal("2.00")
    assert isinstance(answers[1], InsufficientFunds)
    assert answers[2] == Decimal("0.00")
    assert store.saves == [[a]]
    assert store.aggregates[a].version == 4  # opened, seeded, two draws


def test_many_threads_on_one_wallet_each_get_the_balance_their_own_command_left(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet()
    start = threading.Barrier(8)

    answers: list[Decimal] = []

    def add_twenty() -> None:
        start.wait()
        for _ in range(20):
            answers.append(committer.run(add(a, "1")))

    callers = [Caller(add_twenty) for _ in range(8)]
    for caller in callers:
        caller.start()
    assert [caller.answer() for caller in callers] == [None] * 8
    assert sorted(answers) == [Decimal(n) for n in range(1, 161)]
    assert store.balance(a) == Decimal("160.00")


# Refusals, decided on cached wallets


def test_a_refusal_on_a_cached_wallet_changed_elsewhere_is_decided_again(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet("5")
    committer.run(draw(a, "5"))  # a is cached, empty
    store.add_elsewhere(a, "10")
    assert committer.run(draw(a, "7")) == Decimal("3.00")
    assert store.checks == 1
    assert store.loads[a] == 2  # reloaded to decide again
    assert store.balance(a) == Decimal("3.00")


def test_a_refusal_on_a_cached_wallet_still_current_stands(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet("5")
    committer.run(draw(a, "5"))
    saves = len(store.saves)
    with pytest.raises(InsufficientFunds):
        committer.run(draw(a, "1"))
    assert store.checks == 1
    assert store.loads[a] == 1
    assert len(store.saves) == saves


# Conflicts on save


def test_a_save_that_meets_another_writer_is_decided_again_on_reloaded_wallets(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet()
    committer.run(add(a, "1"))  # a is cached at balance 1
    store.add_elsewhere(a, "10")
    assert committer.run(add(a, "1")) == Decimal("12.00")
    assert store.saves == [[a], [a], [a]]  # the first, the conflict, the retry
    assert store.balance(a) == Decimal("12.00")


def test_a_batch_that_conflicts_twice_is_split_and_each_command_saved_alone(
    committer: GroupCommitter, store: Store
) -> None:
    a, b = store.wallet(), store.wallet()
    store.fail_saves_of(a, IntegrityError("conflict"), times=2)
    answers = together(committer, [add(a, "1"), add(b, "2")])
    assert answers == [Decimal("1.00"), Decimal("2.00")]
    assert store.saves == [[a, b], [a, b], [a], [b]]


def test_a_command_that_keeps_conflicting_ends_in_a_concurrency_conflict(
    store: Store,
) -> None:
    committer = GroupCommitter(
        store.load, store.save, store.has_newer_events, max_attempts=3
    )
    a = store.wallet()
    store.fail_saves_of(a, IntegrityError("conflict"), times=99)
    with pytest.raises(ConcurrencyConflict):
        committer.run(add(a, "1"))
    assert len(store.saves) == 3
    assert store.aggregates[a].version == 1


def test_a_stubborn_conflict_fails_its_own_caller_not_the_rest_of_the_batch(
    store: Store,
) -> None:
    committer = GroupCommitter(
        store.load, store.save, store.has_newer_events, max_attempts=3
    )
    a, b = store.wallet(), store.wallet()
    store.fail_saves_of(a, IntegrityError("conflict"), times=99)
    answers = together(committer, [add(a, "1"), add(b, "2")])
    assert isinstance(answers[0], ConcurrencyConflict)
    assert answers[1] == Decimal("2.00")
    assert store.balance(b) == Decimal("2.00")


# Commands that break


@pytest.mark.parametrize(
    "error", [InsufficientFunds(Decimal(0), Decimal(1)), RuntimeError("a bug")]
)
def test_a_command_that_fails_after_changing_its_wallet_fails_alone(
    committer: GroupCommitter, store: Store, error: Exception
) -> None:
    bad, good = store.wallet(), store.wallet()

    def half_done(wallets: list[Wallet]) -> None:
        wallets[0].add_money(Decimal("5"), "half", CAUSE)
        raise error

    answers = together(committer, [command([bad], half_done), add(good, "1")])
    assert answers == [error, Decimal("1.00")]
    assert store.saves == [[good]]
    assert store.aggregates[bad].version == 1  # the half change was not saved
    assert committer.run(add(bad, "2")) == Decimal("2.00")


def test_a_database_error_fails_every_caller_of_the_batch_and_clears_the_cache(
    committer: GroupCommitter, store: Store
) -> None:
    a, b, c = store.wallet(), store.wallet(), store.wallet()
    committer.run(add(c, "1"))  # c is cached
    lost = OperationalError("connection lost")
    store.fail_saves_of(a, lost, times=1)
    answers = together(committer, [add(a, "1"), add(b, "2")])
    assert answers == [lost, lost]
    assert store.aggregates[a].version == store.aggregates[b].version == 1
    committer.run(add(c, "1"))
    assert store.loads[c] == 2  # what was committed is not known: c is reloaded


# Idempotency records and replays


def test_a_replayed_command_is_answered_from_its_record_and_saves_nothing(
    committer: GroupCommitter, store: Store
) -> None:
    a, b = store.wallet(), store.wallet()
    decided: list[object] = []
    record_id = uuid4()
    replayed = command(
        [a], decided.append, replay=lambda: Decimal("42.00"), record_id=record_id
    )
    answers = together(committer, [replayed, add(b, "1")])
    assert answers == [Decimal("42.00"), Decimal("1.00")]
    assert decided == []
    assert store.saves == [[b]]
    assert store.loads[a] == 0
    # The record it was answered from is named, for the store to check it holds.
    assert store.save_kwargs == [{"answered": [record_id]}]


def test_a_replay_alone_is_answered_only_once_the_store_confirms_its_record(
    committer: GroupCommitter, store: Store
) -> None:
    a, record_id = store.wallet(), uuid4()
    replayed = command(
        [a], lambda _: None, replay=lambda: Decimal("42.00"), record_id=record_id
    )
    assert committer.run(replayed) == Decimal("42.00")
    # Nothing to save, but the save is still made, to confirm: the record read
    # may be on the primary alone (a commit whose standby wait was cut short),
    # or on another server than the one that commits.
    assert store.saves == [[]]
    assert store.save_kwargs == [{"answered": [record_id]}]


def test_a_replay_whose_record_is_not_confirmed_is_not_answered(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet()
    store.confirm_fault = WriteNotConfirmed("The standby did not answer")
    replayed = command(
        [a], lambda _: None, replay=lambda: Decimal("42.00"), record_id=uuid4()
    )
    with pytest.raises(WriteNotConfirmed):
        committer.run(replayed)


def test_a_commands_record_is_saved_with_its_events(
    committer: GroupCommitter, store: Store
) -> None:
    a = store.wallet()
    record_id = CommandRecord.id_for("k")

    def record(balance: Decimal) -> CommandRecord:
        return CommandRecord("k", "fingerprint", {"balance": balance}, id=record_id)

    keyed = command(
        [a], lambda w: w[0].add_money(Decimal(1), "x", CAUSE), record=record
    )
    assert committer.run(keyed) == Decimal("1.00")
    assert store.saves == [[a, record_id]]
    saved = store.aggregates[record_id]
    assert isinstance(saved, CommandRecord)
    assert saved.result == {"balance": Decimal("1.00")}


# What it tells the metrics


def test_each_batch_is_counted_by_its_size_and_each_retry_once(
    committer: GroupCommitter, store: Store
) -> None:
    a, b = store.wallet(), store.wallet()
    together(committer, [add(a, "1"), add(b, "2"), add(a, "3")])
    committer.run(add(a, "1"))  # a is cached now
    store.add_elsewhere(a, "10")
    committer.run(add(a, "1"))  # meets the newer event: decided again
    stats = committer.stats()
    # The caller that held the committer made a batch of one of its own.
    assert stats.batch_sizes == {1: 3, 3: 1}
    assert stats.retries == 1
    assert (committer.batches, committer.commands) == (4, 6)


# A database that does not confirm commits (a synchronous standby gone)


def test_callers_behind_a_save_that_stalls_are_answered_at_once(store: Store) -> None:
    committer = GroupCommitter(
        store.load, store.save, store.has_newer_events, stalled_seconds=0.1
    )
    a, b = store.wallet(), store.wallet()
    saving, release = threading.Event(), threading.Event()

    def stalled_save(*aggregates: Aggregate, **kwargs: Any) -> None:
        saving.set()
        release.wait(10)
        store.save(*aggregates, **kwargs)

    committer.save = stalled_save
    first = Caller(partial(committer.run, add(a, "1")))
    first.start()
    assert saving.wait(10)
    started = time.monotonic()
    # Waiting behind the stalled save (or arriving after it stalled): answered
    # without being sent, so that the server's thread is free.
    second = Caller(partial(committer.run, add(b, "2")))
    second.start()
    assert isinstance(second.answer(), WritesStalled)
    assert time.monotonic() - started < 1
    with pytest.raises(WritesStalled):
        committer.run(add(b, "3"))
    assert committer.health().stuck_since is not None
    release.set()
    assert first.answer() == Decimal("1.00")
    assert store.balance(b) == Decimal(0)
    assert committer.health().stuck_since is None


def test_a_slow_read_is_not_a_stalled_commit(store: Store) -> None:
    committer = GroupCommitter(
        store.load, store.save, store.has_newer_events, stalled_seconds=0.1
    )
    a, b = store.wallet(), store.wallet()
    load = store.load

    def slow_load(wallet_id: UUID) -> Wallet:
        time.sleep(0.3)  # a busy database, say: reads are not what stalls
        return load(wallet_id)

    committer.load = slow_load
    answers = together(committer, [add(a, "1"), add(b, "2")])
    assert answers == [Decimal("1.00"), Decimal("2.00")]
