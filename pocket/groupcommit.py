"""Group commit, beneath the handlers' saves: the saves of many handlers are
written in one transaction, each still hearing its own outcome.

PostgreSQL serializes writers to one event store (the insert locks the table),
so more threads do not make more commits: batching does. The unit of work runs
the handlers of the commands that arrive together and hands their saves (their
events as stored, the head each wallet was decided on, their guards) to the
committer, which writes them at once, in order. It decides nothing and reads
nothing: it knows stored events, not wallets, and never calls the application.

When a batch is refused as a conflict (one save's wallet had moved on: another
process wrote it, or a failover lost what it was decided on), the committer
cannot tell which save it was, so it writes each save of the batch alone, in
order: each hears its own outcome, a Conflict (decide it again) or its
notification ids. A batch refused because some guards no longer hold fails
those saves and writes the others.

No write is unbounded: the insert is interrupted past the commit timeout
(pocket.deadlines), and the committer says since when a write has been waiting,
so that the callers behind one that stalls (a synchronous standby gone) are
answered at once (pocket.unitofwork).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent

from pocket.deadlines import STALLED_SECONDS, WriteNotConfirmed, WritesStalled
from pocket.guards import GuardsBroken, TokenGuard

log = logging.getLogger(__name__)
# The recorder's insert: events, then guards, priors and answered as keywords
# (see pocket.postgres_events.PocketEventsRecorder.insert_events).
Insert = Callable[..., Sequence[int] | None]


class Conflict(Exception):
    """Nothing of the save was written: a wallet it changed had moved on since
    it was decided (or an answer it gave is not held by the server): decide
    it again."""


@dataclass(eq=False, slots=True)
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
    answered: bool = False

    def answer(self, error: BaseException | None = None) -> None:
        """Records the outcome."""
        self.error = error
        self.answered = True


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
    """Writes batches of saves, many to a transaction; counts how it went."""

    def __init__(
        self, insert: Insert, *, stalled_seconds: float = STALLED_SECONDS
    ) -> None:
        self.insert = insert
        # Since when (monotonic) the write in flight has been waiting, and after
        # how long that counts as stalled.
        self.writing_since: float | None = None
        self.stalled_seconds = stalled_seconds
        # The last write's failure to be confirmed (a Unix time and why), until
        # a write goes through.
        self.unconfirmed: tuple[float, str] | None = None
        self.unconfirmed_batches = 0
        self.lock = threading.Lock()
        # How many transactions carried how many saves, and how many conflicts.
        self.batches = 0
        self.commands = 0
        self.batch_sizes: Counter[int] = Counter()
        self.retries = 0

    def write(self, saves: Sequence[Save]) -> None:
        """Writes the saves in one transaction where it can; answers each: its
        notification ids, or Conflict or GuardsBroken (nothing of it written),
        or the database's error (WriteNotConfirmed: it may yet be made)."""
        batch = list(saves)
        if not batch:
            return
        with self.lock:  # Counted under the lock, so that stats() reads them whole.
            self.batches += 1
            self.commands += len(batch)
            self.batch_sizes[len(batch)] += 1
        self._write(batch)

    def stalled(self) -> bool:
        """Whether the write in flight has been waiting too long."""
        since = self.writing_since
        return since is not None and time.monotonic() - since > self.stalled_seconds

    def stalled_why(self) -> str:
        """How long the write in flight has been waiting."""
        since = self.writing_since
        waited = 0.0 if since is None else time.monotonic() - since
        return f"The database has not confirmed a write for {waited:.1f} s"

    def health(self) -> WritesHealth:
        """Whether this process's writes go through now."""
        since = self.writing_since
        if since is not None and self.stalled():
            started = time.time() - (time.monotonic() - since)
            return WritesHealth(started, "a commit has not been confirmed yet")
        unconfirmed = self.unconfirmed
        return WritesHealth(*unconfirmed) if unconfirmed else WritesHealth()

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

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        """Marks a write in flight, to tell when it has stalled."""
        with self.lock:
            self.writing_since = time.monotonic()
        try:
            yield
        finally:
            with self.lock:
                self.writing_since = None

    def _written(self, batch: list[Save], ids: Sequence[int]) -> None:
        """Answers each save of a batch written with its notification ids."""
        self.unconfirmed = None
        position = 0
        for save in batch:
            count = len(save.events)
            save.notification_ids = ids[position : position + count]
            position += count
            save.answer()

    def _write(self, batch: list[Save]) -> None:
        """Inserts a batch, answering each save; after a conflict, each save of
        it alone, in order, so that each meets its own conflict or goes
        through; after broken guards, the others."""
        while batch:
            events, kwargs = arguments(batch)
            try:
                with self._timed():
                    ids = self.insert(events, **kwargs)
            except GuardsBroken as broken:
                batch = self._fail_broken(batch, broken)
                continue
            except IntegrityError:
                self._count_conflict()
                if len(batch) > 1:
                    for save in batch:
                        self._write([save])
                else:
                    batch[0].answer(Conflict())
            except Exception as error:  # The database failed: every save hears.
                self._fail(batch, error)
            else:
                self._written(batch, ids or ())
            break

    def _count_conflict(self) -> None:
        with self.lock:
            self.retries += 1

    def _fail(self, batch: list[Save], error: Exception) -> None:
        if isinstance(error, WriteNotConfirmed | WritesStalled):
            with self.lock:
                self.unconfirmed = (time.time(), error.why)
                self.unconfirmed_batches += 1
        for save in batch:
            save.answer(error)

    @staticmethod
    def _fail_broken(batch: list[Save], broken: GuardsBroken) -> list[Save]:
        """Nothing was written: the saves whose guards broke (their tokens were
        replaced) fail; returns the rest, to be written."""
        for save in batch:
            if any(broken.broke(guard) for guard in save.guards):
                save.answer(broken)
        return [s for s in batch if not s.answered]


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
