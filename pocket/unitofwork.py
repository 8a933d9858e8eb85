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
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.persistence import (
    Mapper,
    Notification,
    PersistenceError,
    Recording,
    StoredEvent,
)

from pocket.commands import Command
from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.domainmodel import CommandRecord, Wallet
from pocket.errors import ConcurrencyConflict, PocketError, WalletAlreadyExists
from pocket.groupcommit import Conflict, GroupCommitter, Save
from pocket.guards import GuardsBroken, TokenGuard
from pocket.idempotency import KeyedCommands
from pocket.walletcache import Entry, WalletCache
from pocket.walletstore import WalletStore, head

log = logging.getLogger(__name__)
R = TypeVar("R")
C = TypeVar("C", bound=Command)
# After a conflict, how long batches read their cached wallets' newer events
# first: another process is writing this process's wallets.
CONTENDED_SECONDS = 10.0
# How often a caller waiting for its answer looks whether the write has stalled.
WAIT_TICK_SECONDS = 0.05


class Deferred(Exception):
    """The handler got a wallet with a save staged in this batch, on an event
    store that would not refuse a save decided on one that then fails: it runs
    in the next batch, on what this one wrote."""


@dataclass(eq=False)
class Job:
    """One caller's command, waiting for its batch; then its answer."""

    command: Command
    handler: Callable[[Command, Wallets], Any]
    attempt: int = 1
    outcome: Any = None
    error: BaseException | None = None
    answered: bool = False
    # Whether its caller runs the next batch (at arrival, or handed over later).
    leads: bool = False
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


@dataclass(frozen=True)
class Seen:
    """A wallet as a handler got it."""

    entry: Entry
    version: int
    head: bytes | None
    # The save staged before it in this batch on the wallet, if any.
    staged: Save | None
    # Read from the database for this batch (not from the cache).
    loaded: bool


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
        # The jobs of the batch being run that are to run again, in order.
        self.again: list[Job] = []

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
        while not job.answered:
            if job.leads:
                with self.deadline():
                    self._batch()
                self._pass_lead()
            else:
                self._wait(job)
        if job.error is not None:
            raise job.error
        return job.outcome

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
                self.queue[0:0] = self.again
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
        missing = [i for i in ids if self.cache.get(i) is None]
        for wallet, wallet_head in self.store.load_many(missing).values():
            self.cache.put(wallet, wallet_head)

    def _run(self, job: Job) -> None:
        """Runs a job's handler: what it saves is staged for the batch's write;
        a refusal is checked; a failure answered."""
        wallets = job.wallets = Wallets(self, job.command, job.attempt)
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

    def _pass_lead(self) -> None:
        """Hands the running of batches to the first job waiting, if any."""
        with self.lock:
            if self.queue:
                successor = self.queue[0]
                successor.leads = True
                successor.woken.set()
            else:
                self.running = False

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
            # In the write in flight: it may yet be made. The caller hears so
            # now, and its thread is free; the write goes on.
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
        if recordings:
            self.notify(recordings)

    def _put_snapshots(self, snapshots: list[Any]) -> None:
        if not snapshots:
            return
        try:
            self.snapshot(snapshots)
        except PersistenceError as error:
            # A snapshot only speeds up later loads, and the command has
            # committed: failing to take one must not make it an error.
            log.warning("Snapshot skipped (%s); the next one will do", error)

    def current(self, seen: Seen) -> bool:
        """Whether a wallet got from the cache is the wallet as stored (nothing
        was written elsewhere since); forgets it if not."""
        version, latest = self.store.latest(seen.entry.wallet_id)
        if version == seen.version and (
            latest is None or seen.head is None or latest == seen.head
        ):
            return True
        self.cache.forget(seen.entry)
        return False


class Wallets:
    """A handler's wallets: got (on their newest state) and saved together."""

    def __init__(self, work: UnitOfWork, command: Command, attempt: int = 1) -> None:
        self.work = work
        self.command = command
        # Which run of the handler this is (after conflicts, the second, ...).
        self.attempt = attempt
        self.seen: dict[UUID, Seen] = {}
        # The save staged, once it is; the snapshots it calls for (taken at
        # the state it leaves, put once it is written); what a refusal was
        # decided on.
        self.staged: Save | None = None
        self.snapshots: list[Any] = []
        self.depends: list[Save] = []

    def get(self, wallet_id: UUID) -> Wallet:
        """A wallet, as decided last in this process (or as stored)."""
        entry = self.work.cache.get(wallet_id)
        loaded = entry is None
        if entry is None:
            ((wallet, wallet_head),) = self.work.store.load([wallet_id]).values()
            entry = self.work.cache.put(wallet, wallet_head)
        staged = entry.staged()
        if staged is not None and not self.work.store.checks_follows:
            raise Deferred
        self.seen[wallet_id] = Seen(
            entry, entry.wallet.version, entry.head, staged, loaded
        )
        return entry.wallet

    def get_all(self, *wallet_ids: UUID) -> list[Wallet]:
        """Several wallets."""
        return [self.get(wallet_id) for wallet_id in wallet_ids]

    def create(self, wallet: Wallet) -> Wallet:
        """A new wallet, to be saved with the handler's save; WalletAlreadyExists
        if one with its id is cached or stored already."""
        # Where nothing says it exists, the insert will (a conflict), and the
        # handler runs again: then it is looked for.
        if self.work.cache.get(wallet.id) is not None or (
            self.attempt > 1 and self.work.store.latest(wallet.id)[0]
        ):
            raise WalletAlreadyExists(wallet.id)
        entry = self.work.cache.put(wallet, None)
        self.seen[wallet.id] = Seen(entry, 0, None, None, loaded=True)
        return wallet

    def save(self, answer: R) -> R:
        """Stages the wallets' new events (with the command's record, if it is
        keyed) to be written with the batch's; returns the answer, which the
        caller hears once they are."""
        work = self.work
        save = Save(guards=[self.command.guard] if self.command.guard else [])
        events: list[StoredEvent] = []
        domain_events: list[Any] = []
        for seen in self.seen.values():
            entry = seen.entry
            pending = entry.wallet.collect_events()
            if not pending:
                continue
            mapped = [work.mapper.to_stored_event(event) for event in pending]
            save.priors[entry.wallet_id] = entry.head
            entry.head, entry.last = head(mapped[-1].state), save
            interval = work.snapshot_interval
            if any(e.originator_version % interval == 0 for e in pending):
                self.snapshots.append(Wallet.Snapshot.take(entry.wallet))
            domain_events.extend(pending)
            events.extend(mapped)
        key = self.command.key()
        if key is not None:
            record = work.keyed.record(key, answer)  # type: ignore[arg-type]
            for event in record.collect_events():
                domain_events.append(event)
                events.append(work.mapper.to_stored_event(event))
        save.events, save.payload = events, domain_events
        if events or save.guards:
            self.staged = save
        return answer

    def replay(self) -> Any:
        """The answer of an earlier run of the command (keyed), if it ran; it
        stands once the server that commits holds its record (and its guard
        still holds): that is checked with the batch's write."""
        key = self.command.key()
        if key is None:
            return None
        answer = self.work.keyed.replay(key)
        if answer is not None:
            self.staged = Save(
                guards=[self.command.guard] if self.command.guard else [],
                answered_from=[CommandRecord.id_for(key.command_id)],
            )
        return answer

    def refusal_stands(self) -> bool:
        """Whether a refusal decided on these wallets stands: it does if it came
        after the handler changed a wallet (the change goes, and the command
        fails alone), or was decided on the wallets as stored, or on saves
        staged before it in this batch (it stands if they are written: see
        depends); otherwise the handler runs again. Its guard, if it has one, is
        checked with the batch's write."""
        changed = [s.entry for s in self.seen.values() if s.entry.wallet.pending_events]
        for entry in changed:
            self.work.cache.forget(entry)
        if not changed:
            for seen in self.seen.values():
                if seen.staged is not None:
                    self.depends.append(seen.staged)
                elif not seen.loaded and not self.work.current(seen):
                    return False
        if self.command.guard is not None:
            self.staged = Save(guards=[self.command.guard])
        return True

    def forget(self) -> None:
        """Drops these wallets from the cache: read again by the next handler."""
        for seen in self.seen.values():
            self.work.cache.forget(seen.entry)


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
        with work.keyed.claim(command.key()):
            answer: R = work.perform(Job(command, functools.partial(method, app)))
            return answer

    return run


def pause(attempt: int) -> None:
    """Sleeps a little longer after each failed attempt, with jitter."""
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
