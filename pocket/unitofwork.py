"""The unit of work around each command handler (pocket.application): the wallets
a handler gets and saves, and what runs it.

A handler reads top to bottom: get its wallets, decide with the domain model,
save. `@handler` runs it and is the only thing that does:
- a keyed command that ran before is answered from its record, and runs no more
  (pocket.idempotency);
- a save that meets a conflict (the wallet moved on, written by another process
  or lost by a failover) runs the handler again, on the wallet as stored;
- a refusal (a domain error) stands only if it was decided on the wallet as
  stored; otherwise the handler runs again;
- the command's guard (its caller's token) is checked in the transaction that
  commits its answer, a refusal's too (pocket.guards);
- its database work is bounded by the command's deadline (pocket.deadlines).

Wallets are decided from this process's cache, in order, on their newest state:
`get` locks a wallet until the handler's save is staged, and the state it gives
includes the events of saves staged before and not yet committed. So commands on
one hot wallet are decided one after another in microseconds, and written many
to a transaction by the group committer beneath (pocket.groupcommit). A save
staged on events that then fail (a conflict) fails in its turn at the database,
since the head it names was never stored, and its handler runs again.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
from pocket.domainmodel import CommandRecord, Wallet
from pocket.errors import ConcurrencyConflict, PocketError, WalletAlreadyExists
from pocket.groupcommit import Conflict, GroupCommitter, Save
from pocket.guards import GuardsBroken, TokenGuard
from pocket.idempotency import KeyedCommands
from pocket.walletcache import Entry, WalletCache
from pocket.walletstore import Stale, WalletStore, head

log = logging.getLogger(__name__)
R = TypeVar("R")
C = TypeVar("C", bound=Command)
# After a conflict, how long handlers read their cached wallets' newer events
# first: another process is writing this process's wallets.
CONTENDED_SECONDS = 10.0


@dataclass(frozen=True)
class Seen:
    """A wallet as a handler got it."""

    entry: Entry
    version: int
    head: bytes | None
    # The last save staged on it then (its events were in the state given).
    last: Save | None
    # Read from the database for this handler (not from the cache).
    loaded: bool


class UnitOfWork:
    """What every handler of an application shares: the cache, the reads, the
    committer, the keyed commands, and what to do after a write."""

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
        self.cache = WalletCache()
        # Until when (monotonic) handlers refresh their cached wallets first.
        self.contended_until = 0.0

    def confirm(self, guard: TokenGuard | None, answered: list[UUID]) -> None:
        """Commits an answer that writes nothing: its guard must hold, and the
        records it was read from be held, when it commits."""
        if guard is None and not answered:
            return
        save = Save(guards=[guard] if guard else [], answered_from=answered)
        self.committer.stage(save)
        try:
            self.committer.commit(save)
        except GuardsBroken:
            assert guard is not None
            raise self.guard_failed(guard) from None
        finally:
            self.announce(save)

    def announce(self, save: Save) -> None:
        """Prompts the followers once per write: from the save whose caller led
        it, with every event that write committed."""
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
            for committed in save.batch
            for domain_event, stored, notification_id in zip(
                committed.payload or (),
                committed.events,
                committed.notification_ids,
                strict=False,
            )
        ]
        if recordings:
            self.notify(recordings)

    def contended(self) -> bool:
        """Whether another process has lately written this process's wallets."""
        return time.monotonic() < self.contended_until

    def current(self, seen: Seen) -> bool:
        """Whether a wallet a handler got was the wallet as stored: the saves
        staged before it committed, and nothing was written since."""
        last = seen.last
        if last is not None:
            last.settled.wait(self.committer.stalled_seconds * 2)
            if not last.answered or last.error is not None:
                self.cache.forget(seen.entry)
                return False
        elif seen.loaded:
            return True
        version, latest = self.store.latest(seen.entry.wallet_id)
        if version == seen.version and (
            latest is None or seen.head is None or latest == seen.head
        ):
            return True
        self.cache.forget(seen.entry)
        return False


class Wallets:
    """A handler's wallets: got (locked, newest state) and saved together."""

    def __init__(self, work: UnitOfWork, command: Command, attempt: int = 1) -> None:
        self.work = work
        self.command = command
        # Which run of the handler this is (after conflicts, the second, ...).
        self.attempt = attempt
        self.entries: list[Entry] = []
        self.seen: dict[UUID, Seen] = {}
        self.held = False
        # The save staged, or the answer confirmed, once it is.
        self.staged: Save | None = None
        self.confirmed = False

    def replay(self) -> Any:
        """The answer of an earlier run of the command (keyed), once the server
        that commits holds its record (and its guard still holds); None if it
        has not run."""
        key = self.command.key()
        if key is None:
            return None
        answer = self.work.keyed.replay(key)
        if answer is not None:
            self.confirmed = True
            record_id = CommandRecord.id_for(key.command_id)
            self.work.confirm(self.command.guard, [record_id])
        return answer

    def get(self, wallet_id: UUID) -> Wallet:
        """A wallet, as decided last in this process (or as stored)."""
        (wallet,) = self.get_all(wallet_id)
        return wallet

    def get_all(self, *wallet_ids: UUID) -> list[Wallet]:
        """Several wallets at once (a handler gets its wallets in one call)."""
        if self.entries:
            msg = "A handler gets all its wallets in one call"
            raise RuntimeError(msg)
        self.entries = self.work.cache.acquire(wallet_ids)
        self.held = True
        store = self.work.store
        missing = [e.wallet_id for e in self.entries if e.wallet is None]
        loaded = store.load(missing) if missing else {}
        by_id = {entry.wallet_id: entry for entry in self.entries}
        wallets = []
        for wallet_id in wallet_ids:
            entry = by_id[wallet_id]
            if not store.checks_follows and not self._settled(entry):
                loaded.update(store.load([wallet_id]))
            fresh = wallet_id in loaded
            if fresh:
                entry.wallet, entry.head = loaded[entry.wallet_id]
                entry.last = None
            elif self.work.contended() and (entry.last is None or entry.last.answered):
                fresh = self._refresh(entry)
            assert entry.wallet is not None
            self.seen[wallet_id] = Seen(
                entry, entry.wallet.version, entry.head, entry.last, fresh
            )
            wallets.append(entry.wallet)
        return wallets

    def create(self, wallet: Wallet) -> Wallet:
        """A new wallet, to be saved with the handler's save; WalletAlreadyExists
        if one with its id is stored (or cached) already."""
        if self.entries:
            msg = "A handler gets all its wallets in one call"
            raise RuntimeError(msg)
        (entry,) = self.entries = self.work.cache.acquire([wallet.id])
        self.held = True
        # Where nothing says it exists, the insert will (a conflict), and the
        # handler runs again: then it is looked for.
        if entry.wallet is not None or (
            self.attempt > 1 and self.work.store.latest(wallet.id)[0]
        ):
            raise WalletAlreadyExists(wallet.id)
        entry.wallet, entry.head, entry.last = wallet, None, None
        self.seen[wallet.id] = Seen(entry, 0, None, None, loaded=True)
        return wallet

    def save(self, answer: R) -> R:
        """Saves the wallets' new events (with the command's record, if it is
        keyed), written with others' in one transaction; returns the answer
        once they are committed."""
        work, guard = self.work, self.command.guard
        save, heads, snapshots = self._staging(answer)
        if not save.events and guard is None:
            return answer
        work.committer.stage(save)
        for entry in self.entries:
            if entry.wallet_id in heads:
                entry.head, entry.last = heads[entry.wallet_id], save
        self.staged = save
        self.release()
        try:
            work.committer.commit(save)
        except GuardsBroken:
            self.forget()
            assert guard is not None
            raise work.guard_failed(guard) from None
        except Conflict:
            raise
        except Exception:
            # What the database holds is not known.
            work.cache.clear()
            raise
        finally:
            work.announce(save)
        if snapshots:
            try:
                work.snapshot(snapshots)
            except PersistenceError as error:
                # A snapshot only speeds up later loads, and the command has
                # committed: failing to take one must not make it an error.
                log.warning("Snapshot skipped (%s); the next one will do", error)
        return answer

    def _staging(self, answer: object) -> tuple[Save, dict[UUID, bytes], list[Any]]:
        """The save of the wallets' new events and the command's record, the
        heads it leaves the wallets at, and the snapshots it calls for (taken
        now, at the state it leaves; put once it is committed)."""
        work = self.work
        save = Save(guards=[self.command.guard] if self.command.guard else [])
        events: list[StoredEvent] = []
        domain_events: list[Any] = []
        heads: dict[UUID, bytes] = {}
        snapshots: list[Any] = []
        for entry in self.entries:
            assert entry.wallet is not None
            pending = entry.wallet.collect_events()
            if not pending:
                continue
            mapped = [work.mapper.to_stored_event(event) for event in pending]
            save.priors[entry.wallet_id] = entry.head
            heads[entry.wallet_id] = head(mapped[-1].state)
            interval = work.snapshot_interval
            if any(e.originator_version % interval == 0 for e in pending):
                snapshots.append(Wallet.Snapshot.take(entry.wallet))
            domain_events.extend(pending)
            events.extend(mapped)
        key = self.command.key()
        if key is not None:
            record = work.keyed.record(key, answer)  # type: ignore[arg-type]
            for event in record.collect_events():
                domain_events.append(event)
                events.append(work.mapper.to_stored_event(event))
        save.events, save.payload = events, domain_events
        return save, heads, snapshots

    def release(self) -> None:
        """Lets other handlers decide on these wallets."""
        if not self.held:
            return
        self.held = False
        for entry in self.entries:
            if entry.wallet is None:
                self.work.cache.forget(entry)  # Never read (not found, or failed).
            entry.lock.release()

    def forget(self) -> None:
        """Drops these wallets from the cache: read again by the next handler."""
        for entry in self.entries:
            self.work.cache.forget(entry)

    def refused(self) -> bool:
        """Whether a refusal decided on these wallets stands: it does if it
        was decided on the wallets as stored (else the handler runs again), or
        if it came after the handler changed a wallet (the changes go, and the
        command fails alone). It is answered only if its guard holds."""
        self.release()
        if self.staged is None and not self.confirmed:
            changed = [e for e in self.entries if e.wallet and e.wallet.pending_events]
            for entry in changed:
                self.work.cache.forget(entry)
            if not changed and not all(map(self.work.current, self.seen.values())):
                return False
            self.work.confirm(self.command.guard, [])
        return True

    def _settled(self, entry: Entry) -> bool:
        """Waits for the last save staged on a wallet, where the event store
        would not refuse a save decided on one that then failed (the library's
        in-memory store checks versions, not what they follow); returns
        whether it went through."""
        last = entry.last
        if last is None:
            return True
        last.settled.wait(self.work.committer.stalled_seconds * 2)
        return last.answered and last.error is None

    def _refresh(self, entry: Entry) -> bool:
        """Brings a cached wallet up to date with the events written elsewhere
        since; reads it whole if its head is not the one stored (returns
        whether it did)."""
        assert entry.wallet is not None
        store = self.work.store
        try:
            entry.head = store.refresh(entry.wallet, entry.head)
        except Stale:
            entry.wallet, entry.head = store.load([entry.wallet_id])[entry.wallet_id]
            return True
        return False


class Handles(Protocol):
    """An application whose commands run in units of work."""

    work: UnitOfWork


A = TypeVar("A", bound=Handles)


def handler(method: Callable[[A, C, Wallets], R]) -> Callable[[A, C], R]:
    """Makes a method (get, decide, save) the handler of its command: run in a
    unit of work, once per key, again after a conflict or a stale refusal."""

    @functools.wraps(method)
    def run(app: A, command: C) -> R:
        work = app.work
        key = command.key()
        wallets = Wallets(work, command)
        with work.keyed.claim(key), work.deadline():
            for attempt in range(1, work.max_attempts + 1):
                wallets = Wallets(work, command, attempt)
                try:
                    replayed: R | None = wallets.replay()
                    if replayed is not None:
                        return replayed
                    return method(app, command, wallets)
                except Conflict:
                    wallets.forget()
                    work.contended_until = time.monotonic() + CONTENDED_SECONDS
                    pause(attempt)
                except PocketError:
                    if not wallets.refused():
                        continue
                    raise
                except BaseException:
                    wallets.forget()
                    raise
                finally:
                    wallets.release()
        first = next(iter(wallets.seen), None)
        raise ConcurrencyConflict(first)

    return run


def pause(attempt: int) -> None:
    """Sleeps a little longer after each failed attempt, with jitter."""
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
