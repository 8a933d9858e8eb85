"""Group commit, beneath the handlers' saves: the saves that arrive together are
written in one transaction, each caller still hearing its own outcome.

PostgreSQL serializes writers to one event store (the insert locks the table),
so more threads do not make more commits: batching does. A handler stages its
save (its events as stored, the head each wallet was decided on, its guard) and
waits; the first caller to find nobody writing leads: it writes every staged
save at once, in the order they were staged, and hands the lead to a waiting
caller if more arrived meanwhile. The committer decides nothing and reads
nothing: it knows stored events, not wallets, and never calls the application.

When a batch is refused as a conflict (one save's wallet had moved on: another
process wrote it, or a failover lost what it was decided on), the committer
cannot tell which save it was, so it writes each save of the batch alone, in
order, and each caller hears its own outcome: a Conflict (decide again) for the
saves that do not follow what is stored, the notification ids for the rest. A
batch refused because some guards no longer hold fails those saves and writes
the others.

No wait is unbounded: the insert itself is interrupted past the commit timeout
(pocket.deadlines), and once a write has been waiting STALLED_SECONDS, the
callers waiting behind it, and new ones, are answered at once (503), so that a
database that does not confirm writes (a synchronous standby gone) holds one of
the server's threads, not all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent

from pocket.deadlines import STALLED_SECONDS, WriteNotConfirmed, WritesStalled
from pocket.guards import GuardsBroken, TokenGuard

log = logging.getLogger(__name__)
# How often a caller waiting for its outcome looks whether the write has stalled.
WAIT_TICK_SECONDS = 0.05
# The recorder's insert: events, then guards, priors and answered as keywords
# (see pocket.postgres_events.PocketEventsRecorder.insert_events).
Insert = Callable[..., Sequence[int] | None]


class Conflict(Exception):
    """Nothing of the save was written: a wallet it changed had moved on since
    it was decided (or an answer it gave is not held by the server): decide
    it again."""


@dataclass(eq=False)
class Save:
    """One handler's save, staged: what it writes and what the insert checks;
    then its outcome."""

    # Its events, as stored, each wallet's in version order.
    events: Sequence[StoredEvent] = ()
    # Each changed wallet's head when it was decided (the SHA-256 of its stored
    # state, see pocket.unitofwork), or None where it is not known.
    priors: dict[UUID, bytes | None] = field(default_factory=dict)
    # What must still hold when it commits (its caller's token).
    guards: Sequence[TokenGuard] = ()
    # Stored aggregates an answer was read from: the server must hold them.
    answered_from: Sequence[UUID] = ()
    # Carried for the caller, untouched: what the events are to it.
    payload: Any = None
    # The outcome: the events' notification ids, or the error.
    notification_ids: Sequence[int] = ()
    error: BaseException | None = None
    # On the save whose caller led the write: every save that write committed.
    batch: list[Save] = field(default_factory=list)
    # Whether its caller leads (at staging, or handed the lead later).
    leads: bool = False
    answered: bool = False
    # Set to wake its caller: answered, or handed the lead.
    woken: threading.Event = field(default_factory=threading.Event)
    # Set once it is answered (for others who wait for its outcome).
    settled: threading.Event = field(default_factory=threading.Event)

    def answer(self, error: BaseException | None = None) -> None:
        """Gives the outcome to the waiting caller."""
        self.error = error
        self.answered = True
        self.settled.set()
        self.woken.set()


@dataclass(frozen=True)
class WritesHealth:
    """Whether this process's writes go through: None, or since when (a Unix
    time) they have not, and why."""

    stuck_since: float | None = None
    why: str = ""


@dataclass(frozen=True)
class CommitStats:
    """How commits have gone: how many batches held how many saves, and how
    many times a write met another writer's newer events (a conflict)."""

    batch_sizes: dict[int, int]
    retries: int
    # Batches answered 503 because the database did not confirm them in time.
    unconfirmed: int = 0


class GroupCommitter:
    """Writes this process's staged saves, many to a transaction.

    No thread of its own: the caller who stages a save while nobody is writing
    leads; the others wait for their outcome, or for the lead.
    """

    def __init__(
        self,
        insert: Insert,
        *,
        max_batch: int = 256,
        linger: float = 0.0005,
        stalled_seconds: float = STALLED_SECONDS,
        deadline: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.insert = insert
        self.max_batch = max_batch
        # How long a leader waits for the callers of the last batch, likely on
        # their way back with their next save, so that they share this write.
        self.linger = linger
        self.expected = 0
        # What bounds one write (pocket.deadlines on PostgreSQL).
        self.deadline = deadline
        # Since when (monotonic) the write in flight has been waiting, and after
        # how long that counts as stalled.
        self.writing_since: float | None = None
        self.stalled_seconds = stalled_seconds
        # The last write's failure to be confirmed (a Unix time and why), until
        # a write goes through.
        self.unconfirmed: tuple[float, str] | None = None
        self.unconfirmed_batches = 0
        self.lock = threading.Lock()
        # Notified when as many saves wait as the leader expects.
        self.arrived = threading.Condition(self.lock)
        self.pending: list[Save] = []
        self.leading = False
        # How many transactions carried how many saves, and how many conflicts.
        self.batches = 0
        self.commands = 0
        self.batch_sizes: Counter[int] = Counter()
        self.retries = 0

    def stage(self, save: Save) -> None:
        """Queues a save for the next write (its caller holds its wallets, so
        saves of one wallet are queued in the order they were decided).

        Raises WritesStalled, and queues nothing, while the write in flight has
        stalled.
        """
        with self.lock:
            if self._stalled():
                raise WritesStalled(self._stalled_why())
            self.pending.append(save)
            save.leads = not self.leading
            self.leading = True
            if len(self.pending) == self.expected:
                self.arrived.notify()

    def commit(self, save: Save) -> Save:
        """Waits until a staged save is written (writing it, and the others
        staged with it, if its caller leads); returns it with its notification
        ids.

        Raises Conflict or GuardsBroken (nothing of it was written), WritesStalled
        (the write in flight stalled; it was not sent), WriteNotConfirmed (its
        own write stalled: it may yet be made, and a resend with its key makes
        it exactly once), or the database's error.
        """
        while not save.answered:
            if not save.leads:
                self._wait(save)
                continue
            batch = self._take()
            while batch:
                events, kwargs = arguments(batch)
                try:
                    with self.deadline(), self._writing():
                        ids = self.insert(events, **kwargs)
                except GuardsBroken as broken:
                    batch = self._fail_broken(batch, broken)
                    continue
                except IntegrityError:
                    self._count_conflict()
                    if len(batch) > 1:
                        self._write_alone(batch)
                    else:
                        batch[0].answer(Conflict())
                except Exception as error:  # The database failed: every caller hears.
                    self._fail(batch, error)
                else:
                    self._succeed(batch, ids or ())
                save.batch.extend(s for s in batch if s.error is None)
                break
            self._pass_lead()
        if save.error is not None:
            raise save.error
        return save

    def health(self) -> WritesHealth:
        """Whether this process's writes go through now."""
        with self.lock:
            if self._stalled():
                since = self.writing_since
                assert since is not None
                started = time.time() - (time.monotonic() - since)
                return WritesHealth(started, "a commit has not been confirmed yet")
            if self.unconfirmed is not None:
                return WritesHealth(*self.unconfirmed)
        return WritesHealth()

    def stats(self) -> CommitStats:
        """How commits have gone so far in this process."""
        with self.lock:
            return CommitStats(
                dict(self.batch_sizes), self.retries, self.unconfirmed_batches
            )

    def stop(self) -> None:
        """Reports how well saves were grouped (there is no thread to stop)."""
        if self.batches:
            log.debug(
                "Group commit: %d saves in %d transactions (%.1f each)",
                self.commands,
                self.batches,
                self.commands / self.batches,
            )

    # The leader's steps

    def _take(self) -> list[Save]:
        """The saves waiting, up to a batch, after a moment's wait for the
        callers of the last batch."""
        with self.lock:
            if len(self.pending) < self.expected:
                self.arrived.wait(self.linger)
            batch = self.pending[: self.max_batch]
            del self.pending[: self.max_batch]
            waiting = len(self.pending)
            self.batches += 1
            self.commands += len(batch)
            self.batch_sizes[len(batch)] += 1
        self.expected = len(batch) + waiting if len(batch) > 1 else 0
        return batch

    def _pass_lead(self) -> None:
        """Hands the lead to the first save staged meanwhile, if any."""
        with self.lock:
            if self.pending:
                successor = self.pending[0]
                successor.leads = True
                successor.woken.set()
            else:
                self.leading = False

    def _write_alone(self, batch: list[Save]) -> None:
        """Writes each save of a batch refused as a conflict on its own, in
        order: each meets its own conflict, or goes through."""
        for save in batch:
            events, kwargs = arguments([save])
            try:
                with self.deadline(), self._writing():
                    ids = self.insert(events, **kwargs)
            except GuardsBroken as broken:
                save.answer(broken)
            except IntegrityError:
                self._count_conflict()
                save.answer(Conflict())
            except Exception as error:
                self._fail([save], error)
            else:
                self._succeed([save], ids or ())

    def _succeed(self, batch: list[Save], ids: Sequence[int]) -> None:
        self.unconfirmed = None
        position = 0
        for save in batch:
            count = len(save.events)
            save.notification_ids = ids[position : position + count]
            position += count
            save.answer()

    def _fail(self, batch: list[Save], error: Exception) -> None:
        if isinstance(error, WriteNotConfirmed | WritesStalled):
            with self.lock:
                self.unconfirmed = (time.time(), error.why)
                self.unconfirmed_batches += 1
        for save in batch:
            save.answer(error)

    def _fail_broken(self, batch: list[Save], broken: GuardsBroken) -> list[Save]:
        """Nothing was written: the saves whose guards broke (their tokens were
        replaced) fail; returns the rest, to be written."""
        for save in batch:
            if any(broken.broke(guard) for guard in save.guards):
                save.answer(broken)
        return [s for s in batch if not s.answered]

    def _count_conflict(self) -> None:
        with self.lock:
            self.retries += 1

    def _writing(self) -> AbstractContextManager[None]:
        """Times a write: once it has waited stalled_seconds, the callers behind
        it are answered at once (see _wait)."""
        return _Timed(self)

    # The others' wait

    def _wait(self, save: Save) -> None:
        """Waits for the outcome, or the lead, for as long as writes go through."""
        while not save.woken.wait(WAIT_TICK_SECONDS):
            with self.lock:
                if save.woken.is_set() or not self._stalled():
                    continue
                if save in self.pending:
                    # Not sent: it never will be.
                    self.pending.remove(save)
                    raise WritesStalled(self._stalled_why())
            # In the write in flight: it may yet be made. The caller hears so
            # now, and its thread is free; the write goes on.
            msg = "The database has not confirmed the write yet"
            raise WriteNotConfirmed(msg)

    def _stalled(self) -> bool:
        """Whether the write in flight has been waiting too long (under the lock)."""
        since = self.writing_since
        return since is not None and time.monotonic() - since > self.stalled_seconds

    def _stalled_why(self) -> str:
        assert self.writing_since is not None
        waited = time.monotonic() - self.writing_since
        return f"The database has not confirmed a write for {waited:.1f} s"


class _Timed:
    """Marks a committer as writing, from entry to exit."""

    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer

    def __enter__(self) -> None:
        with self.committer.lock:
            self.committer.writing_since = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        with self.committer.lock:
            self.committer.writing_since = None


def arguments(batch: Sequence[Save]) -> tuple[list[StoredEvent], dict[str, Any]]:
    """The insert's arguments for a batch: every save's events in staging order,
    and, for each wallet, the head its first save in the batch was decided on
    (the later ones were decided on the earlier ones' events)."""
    events: list[StoredEvent] = []
    guards: list[TokenGuard] = []
    answered: list[UUID] = []
    priors: dict[UUID, bytes] = {}
    seen: set[UUID] = set()
    for save in batch:
        events.extend(save.events)
        guards.extend(save.guards)
        answered.extend(save.answered_from)
        for wallet_id, prior in save.priors.items():
            if wallet_id not in seen:
                seen.add(wallet_id)
                if prior is not None:
                    priors[wallet_id] = prior
    kwargs: dict[str, Any] = {}
    if guards:
        kwargs["guards"] = guards
    if priors:
        kwargs["priors"] = priors
    if answered:
        kwargs["answered"] = answered
    return events, kwargs
