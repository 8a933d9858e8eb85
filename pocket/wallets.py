"""What a handler (pocket.application) gets and saves its wallets through: the
wallets on their newest state in this process, and its save, staged for the
batch's write (pocket.unitofwork runs the batch)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from pocket.commands import Command
from pocket.domainmodel import CommandRecord, Wallet
from pocket.errors import WalletAlreadyExists
from pocket.groupcommit import Save
from pocket.guards import head
from pocket.idempotency import Idempotency
from pocket.walletcache import Entry

if TYPE_CHECKING:
    from pocket.unitofwork import UnitOfWork

R = TypeVar("R")


class Deferred(Exception):
    """The handler got a wallet with a save staged in this batch, on an event
    store that would not refuse a save decided on one that then fails, or must
    tell what such a save did (how a hold ended, read from the store): it runs
    in the next batch, on what this one wrote."""


@dataclass(slots=True)
class Seen:
    """A wallet as a handler got it."""

    entry: Entry
    version: int
    head: bytes | None
    # The save staged before it in this batch on the wallet, if any.
    staged: Save | None
    # Read from the database for this batch (not kept from an earlier one).
    loaded: bool


class Wallets:
    """A handler's wallets: got (on their newest state) and saved together."""

    def __init__(
        self,
        work: UnitOfWork,
        command: Command,
        key: Idempotency | None = None,
        attempt: int = 1,
    ) -> None:
        self.work = work
        self.command = command
        self.key = key
        # What every save of the command must still hold when it commits.
        self.guards = [command.guard] if command.guard is not None else []
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
        # Read from the database for this batch, or now: as stored.
        loaded = entry is None or wallet_id in self.work.fresh
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
        save = Save(guards=self.guards)
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
            # A snapshot where its events passed a multiple of the interval.
            interval = work.snapshot_interval
            first, last = pending[0].originator_version, pending[-1].originator_version
            if last // interval != (first - 1) // interval:
                self.snapshots.append(Wallet.Snapshot.take(entry.wallet))
            domain_events.extend(pending)
            events.extend(mapped)
        key = self.key
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
        key = self.key
        if key is None:
            return None
        answer = self.work.keyed.replay(key)
        if answer is not None:
            self.staged = Save(
                guards=self.guards,
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
                elif not seen.loaded and not self._current(seen):
                    return False
        if self.guards:
            self.staged = Save(guards=self.guards)
        return True

    def _current(self, seen: Seen) -> bool:
        """Whether a wallet kept from an earlier batch is the wallet as stored
        (nothing was written elsewhere since); forgets it if not."""
        version, latest = self.work.store.latest(seen.entry.wallet_id)
        if version == seen.version and (
            latest is None or seen.head is None or latest == seen.head
        ):
            return True
        self.work.cache.forget(seen.entry)
        return False

    def forget(self) -> None:
        """Drops these wallets from the cache: read again by the next handler."""
        for seen in self.seen.values():
            self.work.cache.forget(seen.entry)
