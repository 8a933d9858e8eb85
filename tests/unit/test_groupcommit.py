"""The group committer on its own, beneath the handlers' saves: an event table in
memory stands in for the database (with its version check and the insert
function's prior check), and every behaviour is seen through write()."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent

from pocket.deadlines import WriteNotConfirmed
from pocket.groupcommit import Conflict, GroupCommitter, Save, arguments
from pocket.guards import GuardsBroken, TokenGuard, head


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
    return GroupCommitter(table.insert)


def outcomes(saves: Sequence[Save]) -> list[object]:
    """Each save's outcome: itself, written, or its error."""
    return [save if save.error is None else save.error for save in saves]


# Batching


def test_saves_are_written_in_one_insert_in_their_order(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    first = event(a, 1)
    table.events[a, 1] = first
    saves = [save(a, 2, first), save(b, 1), Save([event(a, 3)], {a: head(b"2")})]
    committer.write(saves)
    assert outcomes(saves) == saves
    assert table.inserts == [[(a, 2), (b, 1), (a, 3)]]
    # Each save hears its own events' notification ids.
    assert [list(s.notification_ids) for s in saves] == [[1], [2], [3]]
    # A wallet's prior is the one its first save in the batch was decided on
    # (the later ones were decided on the earlier ones' events).
    assert table.kwargs[-1]["priors"] == {a: head(first.state)}


def test_nothing_to_write_is_no_insert(committer: GroupCommitter, table: Table) -> None:
    committer.write([])
    assert table.inserts == []
    assert committer.batches == 0


# Conflicts


def test_a_batch_refused_as_a_conflict_is_written_save_by_save(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    table.events[a, 1] = event(a, 1)
    stale = save(a, 1)  # version 1 is taken: decided on a wallet behind
    fine = save(b, 1)
    committer.write([stale, fine])
    assert outcomes([stale, fine]) == [stale.error, fine]
    assert isinstance(stale.error, Conflict)
    assert table.inserts == [[(a, 1), (b, 1)], [(a, 1)], [(b, 1)]]
    assert (b, 1) in table.events


def test_a_save_decided_on_a_conflicting_one_fails_too(
    committer: GroupCommitter, table: Table
) -> None:
    a = uuid4()
    table.events[a, 1] = event(a, 1, "elsewhere")
    lost = save(a, 1)  # conflicts
    on_lost = Save([event(a, 2)], {a: head(event(a, 1).state)})  # decided on it
    committer.write([lost, on_lost])
    assert isinstance(lost.error, Conflict)
    assert isinstance(on_lost.error, Conflict)  # its prior was never stored
    assert (a, 2) not in table.events


def test_a_save_decided_on_a_history_the_database_lost_is_a_conflict(
    committer: GroupCommitter, table: Table
) -> None:
    a = uuid4()
    table.events[a, 1] = event(a, 1, "another")  # not the one it was decided on
    lost = Save([event(a, 2)], {a: head(event(a, 1).state)})
    committer.write([lost])
    assert isinstance(lost.error, Conflict)


def test_each_conflict_is_counted(committer: GroupCommitter, table: Table) -> None:
    a, b = uuid4(), uuid4()
    table.events[a, 1] = event(a, 1)
    committer.write([save(a, 1), save(b, 1)])
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
    committer.write([revoked, fine])
    assert isinstance(revoked.error, GuardsBroken)
    assert fine.error is None
    assert (a, 1) not in table.events
    assert (b, 1) in table.events


def test_a_save_of_nothing_but_a_guard_is_still_checked(
    committer: GroupCommitter, table: Table
) -> None:
    table.tokens = {1: "new"}
    only_a_guard = Save(guards=[TokenGuard(1, "old")])
    committer.write([only_a_guard])
    assert isinstance(only_a_guard.error, GuardsBroken)
    assert table.kwargs == [{"guards": [TokenGuard(1, "old")]}]


def test_an_answer_read_from_a_record_names_it_for_the_insert(
    committer: GroupCommitter, table: Table
) -> None:
    record_id = uuid4()
    committer.write([Save(answered_from=[record_id])])
    assert table.kwargs == [{"answered": [record_id]}]


# The database failing


def test_a_database_error_fails_every_save_of_the_batch(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    lost = OperationalError("connection lost")
    table.faults = [lost]
    saves = [save(a, 1), save(b, 1)]
    committer.write(saves)
    assert outcomes(saves) == [lost, lost]
    assert table.events == {}
    # The next write goes through.
    again = save(a, 1)
    committer.write([again])
    assert again.error is None


def test_an_unconfirmed_write_is_reported_until_one_goes_through(
    committer: GroupCommitter, table: Table
) -> None:
    table.faults = [WriteNotConfirmed("The standby did not answer")]
    unconfirmed = save(uuid4(), 1)
    committer.write([unconfirmed])
    assert isinstance(unconfirmed.error, WriteNotConfirmed)
    health = committer.health()
    assert health.stuck_since is not None
    assert "standby" in health.why
    assert committer.stats().unconfirmed == 1
    committer.write([save(uuid4(), 1)])
    assert committer.health().stuck_since is None


def test_a_write_that_waits_too_long_is_reported_as_stalled(table: Table) -> None:
    committer = GroupCommitter(table.insert, stalled_seconds=0.1)
    table.hold = threading.Event()
    writer = threading.Thread(target=committer.write, args=([save(uuid4(), 1)],))
    writer.start()
    assert table.holding.wait(10)
    assert not committer.stalled()
    time.sleep(0.2)
    assert committer.stalled()
    assert "has not confirmed a write for" in committer.stalled_why()
    assert committer.health().stuck_since is not None
    table.hold.set()
    writer.join(10)
    assert not committer.stalled()
    assert committer.health().stuck_since is None


# What it tells the metrics


def test_each_write_is_counted_by_its_size(
    committer: GroupCommitter, table: Table
) -> None:
    a, b = uuid4(), uuid4()
    committer.write([save(a, 1)])
    committer.write([save(b, 1), Save([event(a, 2)], {a: None}), save(uuid4(), 1)])
    stats = committer.stats()
    assert stats.batch_sizes == {1: 1, 3: 1}
    assert stats.retries == 0
    assert (committer.batches, committer.commands) == (2, 4)


def test_arguments_leave_out_what_a_batch_does_not_need() -> None:
    a = uuid4()
    events, kwargs = arguments([save(a, 1)])
    assert [e.originator_id for e in events] == [a]
    assert kwargs == {}  # no guards, no priors known, nothing answered
