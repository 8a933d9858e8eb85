"""The group committer on its own, beneath the handlers' saves: an event table in
memory stands in for the database (with its version check and the insert
function's prior check), and every behaviour is seen through stage() and
commit(), on threads where callers meet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.groupcommit import Conflict, GroupCommitter, Save, arguments
from pocket.guards import GuardsBroken, TokenGuard
from pocket.walletstore import head


class Table:
    """Stored events in memory, inserted all or nothing, refused as the insert
    function refuses them: a version that is not the next, or a first new
    version that does not follow the stored event its prior names; guards
    whose token hash is not the user's."""

    def __init__(self) -> None:
        self.events: dict[tuple[UUID, int], StoredEvent] = {}
        self.inserts: list[list[tuple[UUID, int]]] = []  # each insert tried
        self.kwargs: list[dict[str, Any]] = []
        self.tokens: dict[int, str] = {}
        self.faults: list[Exception] = []
        self.hold: threading.Event | None = None
        self.delay = 0.0
        self.holding = threading.Event()
        self.lock = threading.Lock()
        self.next_id = 1

    def insert(self, events: Sequence[StoredEvent], **kwargs: Any) -> list[int]:
        if self.hold is not None:
            self.holding.set()
            self.hold.wait(10)
        time.sleep(self.delay)
        with self.lock:
            self.inserts.append(
                [(UUID(str(e.originator_id)), e.originator_version) for e in events]
            )
            self.kwargs.append(kwargs)
            if self.faults and events:
                raise self.faults.pop(0)
            broken = [
                g.user_id
                for g in kwargs.get("guards", ())
                if self.tokens.get(g.user_id) != g.token_hash
            ]
            if broken:
                raise GuardsBroken(broken)
            priors: dict[UUID, bytes] = kwargs.get("priors", {})
            firsts: dict[UUID, int] = {}
            for event in events:
                firsts.setdefault(
                    UUID(str(event.originator_id)), event.originator_version
                )
            for wallet_id, version in firsts.items():
                before = self.events.get((wallet_id, version - 1))
                if version > 1 and before is None:
                    raise IntegrityError("not the next version")
                prior = priors.get(wallet_id)
                if before and prior and head(before.state) != prior:
                    raise IntegrityError("not decided on the stored event")
            for event in events:
                if (event.originator_id, event.originator_version) in self.events:
                    raise IntegrityError("version taken")
            ids = []
            for event in events:
                self.events[
                    UUID(str(event.originator_id)), event.originator_version
                ] = event
                ids.append(self.next_id)
                self.next_id += 1
            return ids


def event(wallet_id: UUID, version: int, text: str = "") -> StoredEvent:
    return StoredEvent(wallet_id, version, "topic", f"{version}{text}".encode())


def save(
    wallet_id: UUID,
    version: int,
    prior: StoredEvent | None = None,
    *,
    guard: TokenGuard | None = None,
) -> Save:
    """A save of one event on a wallet, decided on the prior stored event."""
    return Save(
        [event(wallet_id, version)],
        {wallet_id: head(prior.state) if prior else None},
        [guard] if guard else [],
    )


@pytest.fixture
def table() -> Table:
    return Table()


@pytest.fixture
def committer(table: Table) -> GroupCommitter:
    return GroupCommitter(table.insert, linger=0)


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


def run(committer: GroupCommitter, one: Save) -> Save:
    """What a handler's save does: stage, then wait for the outcome."""
    committer.stage(one)
    return committer.commit(one)


def together(
    committer: GroupCommitter, table: Table, saves: Sequence[Save]
) -> list[object]:
    """Commits the saves so that they make one batch, in this order: a first
    save (of nothing but a guard-free answer) holds the insert until all of
    them are staged. Returns each caller's outcome (the save, or the error)."""
    table.hold = threading.Event()
    holder = Caller(partial(run, committer, Save(answered_from=[uuid4()])))
    holder.start()
    assert table.holding.wait(10)
    callers = []
    for each in saves:
        committer.stage(each)  # In order, on this thread.
        callers.append(Caller(partial(committer.commit, each)))
        callers[-1].start()
    table.hold.set()
    holder.answer()
    table.hold = None
    return [caller.answer() for caller in callers]


# Batching


def test_saves_staged_together_are_written_in_one_insert_in_staging_order(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    first = event(a, 1)
    table.events[a, 1] = first
    saves = [save(a, 2, first), save(b, 1), Save([event(a, 3)], {a: head(b"2")})]
    answers = together(committer, table, saves)
    assert answers == saves
    assert table.inserts[-1] == [(a, 2), (b, 1), (a, 3)]
    # Each caller hears its own events' notification ids.
    assert [list(s.notification_ids) for s in saves] == [[1], [2], [3]]
    # A wallet's prior is the one its first save in the batch was decided on.
    assert table.kwargs[-1]["priors"] == {a: head(first.state)}


def test_the_caller_that_led_a_write_hears_of_every_save_it_committed(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    table.hold = threading.Event()
    leader_save = save(a, 1)
    leader = Caller(partial(run, committer, leader_save))
    leader.start()
    assert table.holding.wait(10)
    table.hold.set()
    table.hold = None
    assert leader.answer() is leader_save
    assert leader_save.batch == [leader_save]
    # Behind a write in flight, the first caller staged leads the next write.
    first, second = save(b, 1), save(uuid4(), 1)
    assert together(committer, table, [first, second]) == [first, second]
    assert first.batch == [first, second]
    assert second.batch == []


def test_many_threads_each_hear_their_own_outcome(
    committer: GroupCommitter, table: Table
) -> None:
    wallets = [uuid4() for _ in range(8)]
    start = threading.Barrier(8)
    table.delay = 0.001  # A write takes a while: callers arrive meanwhile.

    def twenty(wallet_id: UUID) -> None:
        start.wait()
        for version in range(1, 21):
            done = run(committer, save(wallet_id, version))
            assert list(done.notification_ids)

    callers = [Caller(partial(twenty, w)) for w in wallets]
    for caller in callers:
        caller.start()
    assert [caller.answer() for caller in callers] == [None] * 8
    assert len(table.events) == 160
    assert committer.batches < 160  # callers shared writes


# Conflicts


def test_a_batch_refused_as_a_conflict_is_written_save_by_save(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    table.events[a, 1] = event(a, 1)
    stale = save(a, 1)  # version 1 is taken: decided on a wallet behind
    fine = save(b, 1)
    answers = together(committer, table, [stale, fine])
    assert isinstance(answers[0], Conflict)
    assert answers[1] is fine
    assert table.inserts[-3:] == [[(a, 1), (b, 1)], [(a, 1)], [(b, 1)]]
    assert (b, 1) in table.events


def test_a_save_decided_on_a_conflicting_one_fails_too(
    committer: GroupCommitter, table: Table
) -> None:
    a = uuid4()
    table.events[a, 1] = event(a, 1, "elsewhere")
    lost = save(a, 1)  # conflicts
    on_lost = Save([event(a, 2)], {a: head(event(a, 1).state)})  # staged on it
    answers = together(committer, table, [lost, on_lost])
    assert isinstance(answers[0], Conflict)
    assert isinstance(answers[1], Conflict)  # its prior was never stored
    assert (a, 2) not in table.events


def test_a_save_decided_on_a_history_the_database_lost_is_a_conflict(
    committer: GroupCommitter, table: Table
) -> None:
    a = uuid4()
    table.events[a, 1] = event(a, 1, "another")  # not the one it was decided on
    with pytest.raises(Conflict):
        run(committer, Save([event(a, 2)], {a: head(event(a, 1).state)}))


def test_each_conflict_is_counted(committer: GroupCommitter, table: Table) -> None:
    a, b = uuid4(), uuid4()
    table.events[a, 1] = event(a, 1)
    together(committer, table, [save(a, 1), save(b, 1)])
    # The batch's conflict, then the stale save's own.
    assert committer.stats().retries == 2


# Guards


def test_saves_whose_guards_broke_fail_and_the_rest_are_written(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    table.tokens = {1: "new", 2: "same"}
    revoked = save(a, 1, guard=TokenGuard(1, "old"))
    fine = save(b, 1, guard=TokenGuard(2, "same"))
    answers = together(committer, table, [revoked, fine])
    assert isinstance(answers[0], GuardsBroken)
    assert answers[1] is fine
    assert (a, 1) not in table.events
    assert (b, 1) in table.events


def test_a_save_of_nothing_but_a_guard_is_still_checked(
    committer: GroupCommitter, table: Table
) -> None:
    table.tokens = {1: "new"}
    with pytest.raises(GuardsBroken):
        run(committer, Save(guards=[TokenGuard(1, "old")]))
    assert table.kwargs == [{"guards": [TokenGuard(1, "old")]}]


def test_an_answer_read_from_a_record_names_it_for_the_insert(
    committer: GroupCommitter, table: Table
) -> None:
    record_id = uuid4()
    run(committer, Save(answered_from=[record_id]))
    assert table.kwargs == [{"answered": [record_id]}]


# The database failing


def test_a_database_error_fails_every_caller_of_the_batch(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    lost = OperationalError("connection lost")
    table.faults = [lost]
    answers = together(committer, table, [save(a, 1), save(b, 1)])
    assert answers == [lost, lost]
    assert table.events == {}
    # The next write goes through.
    assert isinstance(run(committer, save(a, 1)), Save)


# A database that does not confirm commits (a synchronous standby gone)


def test_callers_behind_a_write_that_stalls_are_answered_at_once(table: Table) -> None:
    committer = GroupCommitter(table.insert, linger=0, stalled_seconds=0.1)
    a, b = uuid4(), uuid4()
    table.hold = threading.Event()
    first = Caller(partial(run, committer, save(a, 1)))
    first.start()
    assert table.holding.wait(10)
    started = time.monotonic()
    # Waiting behind the stalled write (or arriving after it stalled): answered
    # without being sent, so that the server's thread is free.
    second = Caller(partial(run, committer, save(b, 1)))
    second.start()
    assert isinstance(second.answer(), WritesStalled)
    assert time.monotonic() - started < 1
    with pytest.raises(WritesStalled):
        run(committer, save(b, 1))
    assert committer.health().stuck_since is not None
    table.hold.set()
    table.hold = None
    assert isinstance(first.answer(), Save)
    assert (b, 1) not in table.events
    assert committer.health().stuck_since is None


def test_a_caller_whose_own_write_stalls_hears_it_may_yet_be_made(table: Table) -> None:
    committer = GroupCommitter(table.insert, linger=0, stalled_seconds=0.1)
    table.hold = threading.Event()
    holder = Caller(partial(run, committer, save(uuid4(), 1)))
    holder.start()
    assert table.holding.wait(10)
    # Staged behind the write in flight: the first leads the next write, the
    # second waits in it.
    leading, waiting = save(uuid4(), 1), save(uuid4(), 1)
    callers = []
    for each in (leading, waiting):
        committer.stage(each)
        callers.append(Caller(partial(committer.commit, each)))
        callers[-1].start()
    first_write, table.hold = table.hold, threading.Event()
    table.holding.clear()
    first_write.set()
    assert table.holding.wait(10)  # The next write is held in its turn.
    # Sent, and not confirmed in time: it may yet be made.
    assert isinstance(callers[1].answer(), WriteNotConfirmed)
    table.hold.set()
    assert callers[0].answer() is leading
    assert waiting.answered  # The write went on, and did go through.
    assert holder.answer() is not None


def test_an_unconfirmed_write_is_reported_until_one_goes_through(
    committer: GroupCommitter, table: Table
) -> None:
    table.faults = [WriteNotConfirmed("The standby did not answer")]
    with pytest.raises(WriteNotConfirmed):
        run(committer, save(uuid4(), 1))
    health = committer.health()
    assert health.stuck_since is not None
    assert "standby" in health.why
    assert committer.stats().unconfirmed == 1
    run(committer, save(uuid4(), 1))
    assert committer.health().stuck_since is None


# What it tells the metrics


def test_each_write_is_counted_by_its_size(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    together(committer, table, [save(a, 1), save(b, 1), Save([event(a, 2)], {a: None})])
    stats = committer.stats()
    # The save that held the committer made a write of one of its own.
    assert stats.batch_sizes == {1: 1, 3: 1}
    assert stats.retries == 0
    assert (committer.batches, committer.commands) == (2, 4)


def test_arguments_leave_out_what_a_batch_does_not_need() -> None:
    a = uuid4()
    events, kwargs = arguments([save(a, 1)])
    assert [e.originator_id for e in events] == [a]
    assert kwargs == {}  # no guards, no priors known, nothing answered
