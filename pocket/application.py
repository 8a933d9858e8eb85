"""Pocket, the event-sourced application: every change to a wallet goes through here."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.system import Leader
from eventsourcing.utils import Environment

from pocket.commands import AddMoney, CloseWallet, DrawMoney, OpenWallet, Transfer
from pocket.deadlines import STALLED_SECONDS
from pocket.domainmodel import Wallet, check_amount, transfer
from pocket.errors import (
    CommandInFlight,
    IdempotencyKeyReused,
    TokenRevoked,
    VersionNotFound,
    WalletNotFound,
)
from pocket.groupcommit import CommitStats, GroupCommitter, WritesHealth
from pocket.idempotency import KeyedCommands
from pocket.postgres import PocketPostgresFactory
from pocket.postgres_pool import POSTGRES_DEFAULTS
from pocket.results import (
    HistoryEntry,
    HistoryPage,
    TransferInfo,
    WalletInfo,
    to_history_entry,
)
from pocket.sqlite import PocketSQLiteFactory
from pocket.unitofwork import UnitOfWork, handler
from pocket.wallets import Wallets
from pocket.walletstore import WalletStore

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
    Each command is a dataclass (pocket.commands) with a handler here of the
    same name: get the wallets, decide with the domain model, save. The unit
    of work around every handler (pocket.unitofwork) answers resent commands
    from their records, runs a handler again after a conflict, and hands its
    save to the group committer (pocket.groupcommit), which writes many
    handlers' saves in one transaction.
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
        recorder = self.recorder
        # On PostgreSQL a write is interrupted past the commit timeout, and the
        # callers waiting behind it are answered sooner: a write waiting that
        # long is one the database has not confirmed (a synchronous standby
        # gone, see pocket.unitofwork). SQLite has no standby, and its writers
        # wait their turn for the file: a slow write there is a busy file, never
        # called stalled (sign-ups from many threads would meet 503s).
        watchdog = getattr(recorder, "watchdog", None)
        deadline: Callable[[], AbstractContextManager[object]] = nullcontext
        stalled_seconds = math.inf
        if watchdog is not None:
            timeout = recorder.commit_timeout  # type: ignore[attr-defined]
            deadline = functools.partial(watchdog.deadline, timeout)
            stalled_seconds = min(STALLED_SECONDS, timeout)
        self._committer = GroupCommitter(
            recorder.insert_events, stalled_seconds=stalled_seconds
        )
        self.work = UnitOfWork(
            store=WalletStore(self),
            committer=self._committer,
            keyed=KeyedCommands(
                self.repository, reused=IdempotencyKeyReused, in_flight=CommandInFlight
            ),
            mapper=self.mapper,
            snapshot=self._put_snapshots,
            snapshot_interval=self.snapshotting_intervals[Wallet],
            notify=self._notify,
            guard_failed=lambda guard: TokenRevoked(guard.user_id),
            deadline=deadline,
            max_attempts=self.max_attempts,
        )

    def _put_snapshots(self, snapshots: list[Any]) -> None:
        if self.snapshots is not None:
            self.snapshots.put(snapshots)

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        """The library's factory, with bounded retries on PostgreSQL."""
        module = env.get("PERSISTENCE_MODULE")
        if module == "eventsourcing.postgres":
            return PocketPostgresFactory(env)
        if module == "eventsourcing.sqlite":
            return PocketSQLiteFactory(env)
        return super().construct_factory(env)

    # Commands: one handler each, get, decide and save (see pocket.unitofwork).

    @handler
    def open_wallet(self, command: OpenWallet, wallets: Wallets) -> UUID:
        """Opens an empty wallet for a user; returns its id."""
        wallet = wallets.create(
            Wallet.open(command.user_id, command.wallet_id, command.cause)
        )
        return wallets.save(wallet.id)

    @handler
    def add_money(self, command: AddMoney, wallets: Wallets) -> WalletInfo:
        """Puts money into a wallet; returns the wallet as it now is."""
        wallet = wallets.get(command.wallet_id)
        wallet.add_money(command.amount, command.source, command.cause)
        return wallets.save(WalletInfo.of(wallet))

    @handler
    def draw_money(self, command: DrawMoney, wallets: Wallets) -> WalletInfo:
        """Takes money out of a wallet; refuses to go below zero."""
        wallet = wallets.get(command.wallet_id)
        wallet.draw_money(command.amount, command.destination, command.cause)
        return wallets.save(WalletInfo.of(wallet))

    @handler
    def transfer(self, command: Transfer, wallets: Wallets) -> TransferInfo:
        """Moves money between two wallets: both sides in one transaction, or none."""
        sender, receiver = wallets.get_all(command.sender_id, command.receiver_id)
        # Each transfer made has an id of its own, named in both wallets' events
        # (a command object sent twice, with no key, makes two).
        transfer_id = uuid4()
        transfer(
            sender,
            receiver,
            amount=command.amount,
            description=command.description,
            transfer_id=transfer_id,
            cause=command.cause,
        )
        return wallets.save(
            TransferInfo(
                transfer_id,
                check_amount(command.amount),
                command.description,
                WalletInfo.of(sender),
                WalletInfo.of(receiver),
            )
        )

    @handler
    def close_wallet(self, command: CloseWallet, wallets: Wallets) -> WalletInfo:
        """Closes an empty wallet for good."""
        wallet = wallets.get(command.wallet_id)
        wallet.close(command.cause)
        return wallets.save(WalletInfo.of(wallet))

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
