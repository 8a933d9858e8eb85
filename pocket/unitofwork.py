"""The unit of work around each command handler (pocket.application): the wallets
a handler gets and saves, and what runs it.

A handler reads top to bottom: get its wallets, decide with the domain model,
save. `@handler` runs it, and is the only thing that does:
- a keyed command that ran before is answered from its record, and runs no more
  (pocket.idempotency);
- a save that meets a conflict (the wallet moved on, written by another process
  or lost by a failover) runs the handler again, on the wallet as stored;
- a refusal (a domain error) stands only if it was decided on the wallet as
  stored; otherwise the handler runs again;
- the command's guard (its caller's token) is checked in the transaction that
  commits its answer, a refusal's too (pocket.guards);
- its database work is bounded by a deadline (pocket.deadlines).

Commands that arrive together are run together: the first caller to find
nobody running handlers runs the handlers of every command waiting, in arrival
order, each on the wallets as the ones before it left them (so a hot wallet's
commands are decided one after another on its newest state), then hands their
saves to the group committer beneath (pocket.groupcommit), which writes them in
one transaction, and answers each caller. One thread decides a batch: the
wallets and the domain code stay warm in one core's cache, where sixteen
threads each deciding their own cost a third more CPU per command (measured).
A save decided on one that then fails fails in its turn at the database (the
head it names was never stored), and its handler runs again.

No wait is unbounded: once a write has been waiting STALLED_SECONDS (a commit
that waits for a synchronous standby that is gone), the callers waiting behind
it, and new ones, are answered at once (503), so that it holds one of the
server's threads, not all of them.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

from eventsourcing.persistence import (
    Mapper,
    Notification,
    Recording,
)

from pocket.commands import Command
from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.errors import ConcurrencyConflict, PocketError
from pocket.groupcommit import Conflict, GroupCommitter, Save
from pocket.guards import GuardsBroken, TokenGuard
from pocket.idempotency import Idempotency, KeyedCommands
from pocket.walletcache import WalletCache
from pocket.wallets import Deferred, Wallets
from pocket.walletstore import WalletStore

log = logging.getLogger(__name__)
R = TypeVar("R")
C = TypeVar("C", bound=Command)
# After a conflict, how long batches read their cached wallets' newer events
# first: another process is writing this process's wallets.
CONTENDED_SECONDS = 10.0
# How often a caller waiting for its answer looks whether the write has stalled.
WAIT_TICK_SECONDS = 0.05


@dataclass(eq=False, slots=True)
class Job:
    """One caller's command, waiting for its batch; then its answer."""

    command: Command
    handler: Callable[[Command, Wallets], Any]
    # Its idempotency key, if it has one (computed once).
    key: Idempotency | None = None
    attempt: int = 1
    outcome: Any = None
    error: BaseException | None = None
    answered: bool = False
    # Whether its caller runs the next batch (at arrival, or handed over later),
    # and whether its caller has stopped waiting (told its write may yet be
    # made): it still runs, but its caller never will run a batch again.
    leads: bool = False
    abandoned: bool = False
    woken: threading.Event = field(default_factory=threading.Event)
    # In a batch: its wallets, what it staged, and the saves staged before it
    # that a refusal was decided on (it stands if they are written).
    wallets: Wallets | None = None
    save: Save | None = None
    depends: list[Save] = field(default_factory=list)

    def answer(self, outcome: Any = None, error: BaseException | None = None) -> None:
        """Gives the caller its answer."""
        self.outcome, self.error, self.answered = outcome, error, True
        self.woken.set()


class UnitOfWork:
    """Runs an application's handlers, many to a batch, and what they share: the
    cache, the reads, the committer, the keyed commands."""

    def __init__(
        self,
        *,
        store: WalletStore,
        committer: GroupCommitter,
        keyed: KeyedCommands,
        mapper: Mapper[UUID],
        snapshot: Callable[[list[Any]], None],
        snapshot_interval: int,
        notify: Callable[[list[Recording[UUID]]], None],
        guard_failed: Callable[[TokenGuard], Exception],
        deadline: Callable[[], AbstractContextManager[object]],
        max_attempts: int = 12,
        max_batch: int = 256,
        linger: float = 0.001,
    ) -> None:
        self.store = store
        self.committer = committer
        self.keyed = keyed
        self.mapper = mapper
        self.snapshot = snapshot
        self.snapshot_interval = snapshot_interval
        self.notify = notify
        self.guard_failed = guard_failed
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        # How long a batch waits for the callers of the last one, likely on
        # their way back with their next command, so that they share its write.
        self.linger = linger
        self.expected = 0
        self.cache = WalletCache()
        # Until when (monotonic) batches refresh their cached wallets first.
        self.contended_until = 0.0
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.queue: list[Job] = []
        self.running = False
        # The jobs of the batch being run that are to run again, in order; the
        # wallets read from the database for it (as stored when it began).
        self.again: list[Job] = []
        self.fresh: set[UUID] = set()

    def perform(self, job: Job) -> Any:
        """Runs a job's handler in the next batch; returns its answer.

        Raises WritesStalled if the write in flight has stalled (the command is
        not run), or WriteNotConfirmed if its own write stalls (it may yet be
        made: a resend with its key makes it exactly once).
        """
        with self.lock:
            if self.committer.stalled():
                raise WritesStalled(self.committer.stalled_why())
            self.queue.append(job)
            job.leads = not self.running
            self.running = True
            if len(self.queue) == self.expected:
                self.arrived.notify()
        while not job.answered or job.leads:
            if not job.leads:
                self._wait(job)
                continue
            with self.deadline():
                self._batch()
            job.leads = self._keep_running(job)
        if job.error is not None:
            raise job.error
        return job.outcome

    def _keep_running(self, job: Job) -> bool:
        """After a batch: whether this caller runs the next one too (its own
        command was queued again, or only commands whose callers have stopped
        waiting are left); else hands the running of batches to the first
        caller waiting, if any."""
        with self.lock:
            successor = next((j for j in self.queue if not j.abandoned), None)
            if successor is job:
                return True
            if successor is not None:
                successor.leads = True
                successor.woken.set()
                return False
            if self.queue:
                return True
            self.running = False
            return False

    def _batch(self) -> None:
        """Runs the handlers of the jobs waiting, writes their saves in one
        transaction, and answers them (or queues them to run again)."""
        with self.lock:
            if len(self.queue) < self.expected:
                self.arrived.wait(self.linger)
            jobs = self.queue[: self.max_batch]
            del self.queue[: self.max_batch]
            waiting = len(self.queue)
        self.expected = len(jobs) + waiting if len(jobs) > 1 else 0
        try:
            self._read(jobs)
            for job in jobs:
                self._run(job)
            self.committer.write([job.save for job in jobs if job.save is not None])
            self._settle(jobs)
        except Exception as error:  # The database failed: every caller hears.
            self.cache.clear()
            for job in jobs:
                if not job.answered:
                    job.answer(error=error)
        finally:
            with self.lock:
                self.queue[0:0] = [job for job in self.again if not job.answered]
            self.again = []

    def _read(self, jobs: list[Job]) -> None:
        """Reads the batch's uncached wallets at once, and after a conflict its
        cached ones' newer events: one read each, however many wallets."""
        ids = {i for job in jobs for i in job.command.wallet_ids()}
        if time.monotonic() < self.contended_until:
            cached = {i: e for i in ids if (e := self.cache.get(i)) and not e.staged()}
            advanced, stale = self.store.refresh(
                {i: (e.wallet, e.head) for i, e in cached.items()}
            )
            for wallet_id, wallet_head in advanced.items():
                cached[wallet_id].head = wallet_head
            for wallet_id in stale:
                self.cache.forget(cached[wallet_id])  # Read whole, below.
            self.fresh = set(cached) - stale
        else:
            self.fresh = set()
        missing = [i for i in ids if self.cache.get(i) is None]
        for wallet, wallet_head in self.store.load_many(missing).values():
            self.cache.put(wallet, wallet_head)
            self.fresh.add(wallet.id)

    def _run(self, job: Job) -> None:
        """Runs a job's handler: what it saves is staged for the batch's write;
        a refusal is checked; a failure answered."""
        wallets = job.wallets = Wallets(self, job.command, job.key, job.attempt)
        try:
            replayed = wallets.replay()
            job.outcome = (
                job.handler(job.command, wallets) if replayed is None else replayed
            )
        except Deferred:
            job.attempt -= 1  # Not an attempt: run again, in the next batch.
            self._again(job)
            return
        except PocketError as refusal:
            if not wallets.refusal_stands():
                self._again(job)
                return
            job.error, job.depends = refusal, wallets.depends
        except Exception as error:
            wallets.forget()
            job.answer(error=error)
            return
        job.save = wallets.staged
        if job.save is None and not job.depends:
            job.answer(job.outcome, job.error)

    def _settle(self, jobs: list[Job]) -> None:
        """Answers the jobs of a written batch: prompts followers once for all
        it committed, puts snapshots, and queues again what met a conflict."""
        committed: list[Save] = []
        conflicted: list[Job] = []
        for job in jobs:
            if job.answered or job in self.again:
                continue
            save, wallets = job.save, job.wallets
            assert wallets is not None
            error = save.error if save is not None else None
            if error is not None:
                wallets.forget()  # They hold events that were not written.
            if isinstance(error, Conflict):
                conflicted.append(job)
                self._again(job)
            elif isinstance(error, GuardsBroken):
                guard = job.command.guard
                assert guard is not None
                job.answer(error=self.guard_failed(guard))
            elif error is not None:
                self.cache.clear()  # What the database holds is not known.
                job.answer(error=error)
            elif any(s.error is not None for s in job.depends):
                self._again(job)  # A refusal decided on a save not written.
            else:
                if save is not None:
                    committed.append(save)
                    self._put_snapshots(wallets.snapshots)
                job.answer(job.outcome, job.error)
        self._announce(committed)
        if conflicted:
            self.contended_until = time.monotonic() + CONTENDED_SECONDS
            pause(max(job.attempt for job in conflicted))

    def _again(self, job: Job) -> None:
        """Queues a job to run again, first in the next batch; past its last
        attempt, answers it with a conflict."""
        job.attempt += 1
        if job.attempt > self.max_attempts:
            ids = job.command.wallet_ids()
            job.answer(error=ConcurrencyConflict(ids[0] if ids else None))
            return
        job.save, job.depends, job.outcome, job.error = None, [], None, None
        self.again.append(job)

    def _wait(self, job: Job) -> None:
        """Waits for the answer, or the lead, for as long as writes go through."""
        while not job.woken.wait(WAIT_TICK_SECONDS):
            with self.lock:
                if job.woken.is_set() or not self.committer.stalled():
                    continue
                if job in self.queue:
                    # Not run: it never will be.
                    self.queue.remove(job)
                    raise WritesStalled(self.committer.stalled_why())
                # In the write in flight: it may yet be made. The caller hears
                # so now, and its thread is free; the write goes on.
                job.abandoned = True
            msg = "The database has not confirmed the write yet"
            raise WriteNotConfirmed(msg)
        if not job.answered:
            job.woken.clear()  # Handed the lead.

    def _announce(self, saves: list[Save]) -> None:
        """Prompts the followers once per write, with every event it committed."""
        recordings = [
            Recording(
                domain_event,
                Notification(
                    id=notification_id,
                    originator_id=stored.originator_id,
                    originator_version=stored.originator_version,
                    topic=stored.topic,
                    state=stored.state,
                ),
            )
            for save in saves
            for domain_event, stored, notification_id in zip(
                save.payload or (), save.events, save.notification_ids, strict=False
            )
        ]
        if not recordings:
            return
        try:
            self.notify(recordings)
        except Exception:
            # The commands have committed: their callers must hear so. The
            # followers find the events anyway (NOTIFY, or their next poll).
            log.exception("Followers not prompted; they will catch up")

    def _put_snapshots(self, snapshots: list[Any]) -> None:
        if not snapshots:
            return
        try:
            self.snapshot(snapshots)
        except Exception as error:
            # A snapshot only speeds up later loads, and the command has
            # committed: failing to take one must not make it an error.
            log.warning("Snapshot skipped (%s); the next one will do", error)


class Handles(Protocol):
    """An application whose commands run in units of work."""

    work: UnitOfWork


A = TypeVar("A", bound=Handles)


def handler(method: Callable[[A, C, Wallets], R]) -> Callable[[A, C], R]:
    """Makes a method (get, decide, save) the handler of its command: run in a
    batch, once per key, again after a conflict or a stale refusal."""

    @functools.wraps(method)
    def run(app: A, command: C) -> R:
        work = app.work
        key = command.key()
        job = Job(command, functools.partial(method, app), key)
        with work.keyed.claim(key):
            return cast(R, work.perform(job))

    return run


def pause(attempt: int) -> None:
    """Sleeps a little longer after each failed attempt, with jitter."""
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
