"""Pocket, the event-sourced application: every change to a wallet goes through here."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from eventsourcing.application import (
    AggregateNotFoundError,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.domain import (
    BaseAggregate,
    DomainEventProtocol,
    MutableOrImmutableAggregate,
)
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    PersistenceError,
    Recording,
    StoredEvent,
)
from eventsourcing.system import Leader
from eventsourcing.utils import Environment
from psycopg.sql import Composed

from pocket.commands import AddMoney, CloseWallet, DrawMoney, OpenWallet, Transfer
from pocket.deadlines import STALLED_SECONDS, WritesStalled
from pocket.domainmodel import Wallet, check_amount, transfer
from pocket.errors import (
    CommandInFlight,
    IdempotencyKeyReused,
    TokenRevoked,
    VersionNotFound,
    WalletAlreadyExists,
    WalletNotFound,
)
from pocket.groupcommit import (
    CommitStats,
    GroupCommitter,
    Loaded,
    WritesHealth,
    head,
)
from pocket.guards import TokenGuard
from pocket.idempotency import Idempotency, KeyedCommands
from pocket.postgres import PocketPostgresFactory
from pocket.postgres_events import PocketEventsRecorder
from pocket.postgres_pool import POSTGRES_DEFAULTS, replace_connections
from pocket.postgres_reads import latest_states_statement, newer_events_statement
from pocket.results import (
    HistoryEntry,
    HistoryPage,
    Result,
    TransferInfo,
    WalletInfo,
    to_history_entry,
)
from pocket.sqlite import PocketSQLiteFactory

# What the application answers is defined in pocket.results, so that the modules
# the application uses can build it without importing the application; callers
# import it from here, as before.
__all__ = [
    "HISTORY_PAGE_MAX",
    "HistoryEntry",
    "HistoryPage",
    "Pocket",
    "TransferInfo",
    "WalletInfo",
]

HISTORY_PAGE_MAX = 500
log = logging.getLogger(__name__)


class Pocket(Leader[UUID]):
    """Creates wallets and moves money in and out of them and between them.

    A leader: in a system, its saves prompt the applications that follow it.
    """

    name = "Pocket"
    # Followers read the log in sections of up to this many notifications.
    log_section_size = 10_000
    # Defaults only: the environment and the env argument override them.
    env: ClassVar[dict[str, str]] = dict(POSTGRES_DEFAULTS)
    # A snapshot every hundred events keeps loading a wallet as cheap on its
    # millionth event as on its first.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Wallet: 100}
    # Optimistic-concurrency conflicts (another process saved the same wallet
    # first) are retried this many times before the caller is told.
    max_attempts: ClassVar[int] = 12

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        # Every command of this process is decided and saved by the group
        # committer, many callers' commands to a transaction.
        recorder = self.recorder
        # A commit is interrupted past the commit timeout (PostgreSQL); the
        # callers waiting behind it are answered sooner (see pocket.groupcommit).
        timeout = getattr(recorder, "commit_timeout", STALLED_SECONDS)
        watchdog = getattr(recorder, "watchdog", None)
        self._committer = GroupCommitter(
            self._get,
            self.save,
            self._has_newer_events,
            max_attempts=self.max_attempts,
            guard_failed=lambda guard: TokenRevoked(guard.user_id),
            load_many=self._get_many,
            refresh=self._refresh,
            stalled_seconds=min(STALLED_SECONDS, timeout),
            deadline=(
                nullcontext
                if watchdog is None
                else functools.partial(watchdog.deadline, timeout)
            ),
        )
        # A keyed command runs once: a rerun is answered from its record, and a
        # key in use right now is refused.
        self._keyed = KeyedCommands(
            self.repository, reused=IdempotencyKeyReused, in_flight=CommandInFlight
        )
        # On PostgreSQL, the committer reads a batch's uncached wallets at once.
        self._latest_states: Composed | None = None
        self._newer_events: Composed | None = None
        if isinstance(recorder, PocketEventsRecorder) and self.snapshots:
            self._datastore = recorder.datastore
            self._newer_events = newer_events_statement(
                recorder.datastore, recorder.events_table_name
            )
            self._latest_states = latest_states_statement(
                recorder.datastore,
                recorder.events_table_name,
                self.snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
            )

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        """The library's factory, with bounded retries on PostgreSQL."""
        module = env.get("PERSISTENCE_MODULE")
        if module == "eventsourcing.postgres":
            return PocketPostgresFactory(env)
        if module == "eventsourcing.sqlite":
            return PocketSQLiteFactory(env)
        return super().construct_factory(env)

    # Commands: each gets its wallets, decides with the domain model, and saves.
    # The money commands pass their decision to _get_decide_save (below them).

    def open_wallet(self, command: OpenWallet) -> UUID:
        """Opens an empty wallet for a user; returns its id."""
        wallet = Wallet.open(command.user_id, command.wallet_id, command.cause)
        try:
            self.save(wallet)
        except IntegrityError:
            raise WalletAlreadyExists(wallet.id) from None
        return wallet.id

    def add_money(self, command: AddMoney) -> WalletInfo:
        """Puts money into a wallet; returns the wallet as it now is."""
        return self._get_decide_save_wallet(
            command.wallet_id,
            lambda wallet: wallet.add_money(
                command.amount, command.source, command.cause
            ),
            command.key(),
            command.guard,
        )

    def draw_money(self, command: DrawMoney) -> WalletInfo:
        """Takes money out of a wallet; refuses to go below zero."""
        return self._get_decide_save_wallet(
            command.wallet_id,
            lambda wallet: wallet.draw_money(
                command.amount, command.destination, command.cause
            ),
            command.key(),
            command.guard,
        )

    def transfer(self, command: Transfer) -> TransferInfo:
        """Moves money between two wallets: both sides in one transaction, or none."""

        def decide(wallets: list[Wallet]) -> TransferInfo:
            sender, receiver = wallets
            transfer(
                sender,
                receiver,
                amount=command.amount,
                description=command.description,
                transfer_id=command.transfer_id,
                cause=command.cause,
            )
            return TransferInfo(
                command.transfer_id,
                check_amount(command.amount),
                command.description,
                WalletInfo.of(sender),
                WalletInfo.of(receiver),
            )

        result = self._get_decide_save(
            [command.sender_id, command.receiver_id],
            decide,
            command.key(),
            command.guard,
        )
        assert isinstance(result, TransferInfo)
        return result

    def close_wallet(self, command: CloseWallet) -> WalletInfo:
        """Closes an empty wallet for good."""
        return self._get_decide_save_wallet(
            command.wallet_id,
            lambda wallet: wallet.close(command.cause),
            command.key(),
            command.guard,
        )

    # How a command runs

    def _get_decide_save(
        self,
        wallet_ids: Sequence[UUID],
        decide: Callable[[list[Wallet]], Result],
        key: Idempotency | None,
        guard: TokenGuard | None = None,
    ) -> Result:
        """Gets the wallets, runs decide on them (the domain call, which also makes
        the answer) and saves the events it made; returns decide's answer.

        Many callers' commands share each step (see pocket.groupcommit): the
        committer gets each wallet from its cache or the store, runs every waiting
        command's decide in turn, and saves all their events, with each keyed
        command's idempotency record, in one transaction. A refusal (a domain
        error) saves nothing and is raised here. A keyed command that ran before
        is answered from its record and decides nothing; one whose key is in use
        right now is refused (see pocket.idempotency). A guard (the caller's
        token) is checked in the transaction that commits the command: if it no
        longer holds, the command changes nothing and fails (see pocket.guards).
        """
        command = self._keyed.command(wallet_ids, decide, key, guard)
        with self._keyed.claim(key):
            return self._committer.run(command)

    def _get_decide_save_wallet(
        self,
        wallet_id: UUID,
        decide: Callable[[Wallet], None],
        key: Idempotency | None,
        guard: TokenGuard | None = None,
    ) -> WalletInfo:
        """_get_decide_save on one wallet; answers the wallet as decide left it."""

        def decide_and_answer(wallets: list[Wallet]) -> WalletInfo:
            (wallet,) = wallets
            decide(wallet)
            return WalletInfo.of(wallet)

        result = self._get_decide_save([wallet_id], decide_and_answer, key, guard)
        assert isinstance(result, WalletInfo)
        return result

    # Queries

    def get_wallet(
        self,
        wallet_id: UUID,
        *,
        version: int | None = None,
        at: datetime | None = None,
    ) -> WalletInfo:
        """The wallet now, or as it was at a version or at a moment."""
        if at is not None:
            version = self._version_at(wallet_id, at)
        if version is None:
            return WalletInfo.of(self._get(wallet_id))
        if version < 1:
            raise VersionNotFound(wallet_id, version)
        wallet = self._get(wallet_id, version=version)
        if wallet.version != version:
            raise VersionNotFound(wallet_id, version)
        return WalletInfo.of(wallet)

    def history(
        self,
        wallet_id: UUID,
        *,
        after: int = 0,
        limit: int = 50,
        newest_first: bool = False,
    ) -> HistoryPage:
        """A page of the wallet's money movements after a position (its last
        entry's), oldest first; or newest first, before a position (0: from the
        latest), the order a person wants on a page.

        Reads only the page's own events (and a snapshot for the balance), so a
        page costs the same at either end of a long history; a position stays
        where it is as new events arrive, so a page's cursor keeps pointing at
        the entries after the ones it showed.
        """
        limit = max(1, min(limit, HISTORY_PAGE_MAX))
        wallet = WalletInfo.of(self._get(wallet_id))
        # Only two events are not money movements (opening and closing), so
        # limit + 3 events hold at least limit + 1 movements when there are that
        # many: enough to tell whether another page follows.
        if newest_first:
            before = after - 1 if after > 0 else None
            events = self.events.get(wallet_id, lte=before, desc=True, limit=limit + 3)
        else:
            events = self.events.get(wallet_id, gt=max(after, 0), limit=limit + 3)
        entries = [h for e in events if (h := to_history_entry(e)) is not None]
        return HistoryPage(wallet, entries[:limit], len(entries) > limit)

    def movements(self, wallet_id: UUID) -> list[HistoryEntry]:
        """Every movement of money in and out of a wallet, oldest first."""
        self._get(wallet_id)
        return [
            entry
            for event in self.events.get(wallet_id)
            if (entry := to_history_entry(event)) is not None
        ]

    # Plumbing

    def close(self) -> None:
        """Stops the committer, then closes the connections."""
        self._committer.stop()
        super().close()

    @property
    def commit_counts(self) -> tuple[int, int]:
        """Group commits so far in this process: (transactions, commands)."""
        return self._committer.batches, self._committer.commands

    @property
    def writes_health(self) -> WritesHealth:
        """Whether this process's commands commit now, or since when they have
        not (the database not confirming them) and why."""
        return self._committer.health()

    @property
    def commit_stats(self) -> CommitStats:
        """Group commits so far in this process: batch sizes and retries."""
        return self._committer.stats()

    def save(
        self,
        *objs: MutableOrImmutableAggregate[UUID] | DomainEventProtocol[UUID] | None,
        **kwargs: Any,
    ) -> list[Recording[UUID]]:
        """Saves aggregates' pending events in one transaction (as the library does).

        The library's save first asks of every object whether it is an event or
        an aggregate through runtime-checkable protocols, which cost tens of
        microseconds each on Python 3.11: a tenth of a batch's time. Pocket saves
        only aggregates, so it collects their events directly.
        """
        processing_event = ProcessingEvent[UUID]()
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                processing_event.events.extend(obj.collect_events())
                processing_event.aggregates[obj.id] = obj
            elif obj is not None:
                processing_event.collect_events(obj)
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshots each wallet that passed a multiple of the interval.

        Taken from the wallet in memory, as it stands right after the save (the
        library would read it back from the database first). A snapshot only
        speeds up later loads, and the command has committed by now: failing to
        take one must not turn a done command into an error.
        """
        if self.snapshots is None:
            return
        interval = self.snapshotting_intervals[Wallet]
        crossed = {
            e.originator_id
            for e in processing_event.events
            if e.originator_version % interval == 0
        }
        snapshots = [
            Wallet.Snapshot.take(aggregate)
            for wallet_id, aggregate in processing_event.aggregates.items()
            if wallet_id in crossed and isinstance(aggregate, Wallet)
        ]
        if snapshots:
            try:
                self.snapshots.put(snapshots)
            except PersistenceError as error:
                log.warning("Snapshot skipped (%s); the next one will do", error)

    def _get(self, wallet_id: UUID, version: int | None = None) -> Wallet:
        try:
            wallet: object = self.repository.get(wallet_id, version=version)
        except AggregateNotFoundError:
            raise WalletNotFound(wallet_id) from None
        if not isinstance(wallet, Wallet):
            raise WalletNotFound(wallet_id)
        return wallet

    def _version_at(self, wallet_id: UUID, moment: datetime) -> int:
        """The last version recorded at or before a moment (binary search)."""
        low, high = 0, self._get(wallet_id).version
        while low < high:
            middle = (low + high + 1) // 2
            (event,) = self.events.get(wallet_id, gt=middle - 1, lte=middle)
            assert isinstance(event, Wallet.Event | Wallet.Created)
            if event.timestamp <= moment:
                low = middle
            else:
                high = middle - 1
        if low == 0:
            raise VersionNotFound(wallet_id, 0)
        return low

    def _get_many(self, wallet_ids: Collection[UUID]) -> Loaded:
        """Many wallets as they are now, each with its head (the SHA-256 of its
        last stored event), in one read on PostgreSQL (each one's latest
        snapshot and the events from it on); elsewhere none (the caller then
        loads each). Wallets not found are left out."""
        if self._latest_states is None or not wallet_ids:
            return {}
        assert self.snapshots is not None
        rows = self._read(self._latest_states, {"ids": list(wallet_ids)})
        histories: dict[UUID, list[Any]] = {}
        heads: dict[UUID, bytes] = {}
        snapshot_versions: dict[UUID, int] = {}
        for row in rows:
            wallet_id, version = row["originator_id"], row["originator_version"]
            if row["kind"] == 0:
                snapshot_versions[wallet_id] = version
                event = self.snapshots.mapper.to_domain_event(stored_event(row))
                histories.setdefault(wallet_id, []).append(event)
                continue
            heads[wallet_id] = head(bytes(row["state"]))
            if version > snapshot_versions.get(wallet_id, 0):
                event = self.mapper.to_domain_event(stored_event(row))
                histories.setdefault(wallet_id, []).append(event)
        loaded: Loaded = {}
        for wallet_id, history in histories.items():
            wallet = project_aggregate(None, history)
            if isinstance(wallet, Wallet):
                loaded[wallet_id] = (wallet, heads.get(wallet_id))
        return loaded

    def _refresh(
        self, wallets: dict[UUID, Wallet], heads: dict[UUID, bytes]
    ) -> tuple[dict[UUID, bytes], set[UUID]]:
        """Applies to wallets (in place) the events written since they were
        read, in one read on PostgreSQL; returns the heads of those it advanced,
        and the wallets it found stale: the stored event of their version is
        not the one their head names (a failover lost it), so events after it
        would be applied to a history the database does not hold. Elsewhere,
        nothing (a conflict at the save then says they were behind)."""
        if self._newer_events is None or not wallets:
            return {}, set()
        ids = list(wallets)
        versions = [wallets[i].version for i in ids]
        rows = self._read(self._newer_events, {"ids": ids, "versions": versions})
        by_wallet: dict[UUID, list[Any]] = {}
        for row in rows:
            by_wallet.setdefault(row["originator_id"], []).append(row)
        advanced: dict[UUID, bytes] = {}
        stale: set[UUID] = set()
        for wallet_id, wallet in wallets.items():
            found = by_wallet.get(wallet_id, [])
            if not found or head(bytes(found[0]["state"])) != heads.get(wallet_id):
                stale.add(wallet_id)
                continue
            for row in found[1:]:
                event = self.mapper.to_domain_event(stored_event(row))
                project_aggregate(wallet, [event])
                advanced[wallet_id] = head(bytes(row["state"]))
        return advanced, stale

    def _read(self, statement: Composed, params: dict[str, Any]) -> list[Any]:
        """The rows of one read of a command's (see _get_many, _refresh), tried
        once more after a lost link, as the library's reads are.

        A command's reads are bounded by the commit timeout as its write is:
        one that does not answer in time (a server gone silent, a lock held
        elsewhere) fails the batch with WritesStalled, nothing written, and is
        not tried again. A read that fails is never made up for by reading each
        wallet alone: that would know no wallet's head (see pocket.groupcommit).
        """
        recorder = self.recorder
        assert isinstance(recorder, PocketEventsRecorder)
        for attempt in range(2):
            try:
                with self._datastore.get_connection() as conn, conn.cursor() as curs:
                    curs.execute(statement, params)
                    return curs.fetchall()
            except (PersistenceError, psycopg.Error):
                expired = recorder.watchdog.expired()
                if expired is not None:
                    msg = f"The database did not answer within {expired.seconds:g} s"
                    raise WritesStalled(msg) from None
                if attempt:
                    raise
                replace_connections(self._datastore)
        raise AssertionError  # pragma: no cover

    def _has_newer_events(self, wallet: Wallet) -> bool:
        return any(True for _ in self.events.get(wallet.id, gt=wallet.version, limit=1))


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """A stored event from a row of an events or snapshots table."""
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
