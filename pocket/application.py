"""Pocket, the event-sourced application: every change to a wallet goes through here."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid4

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
)
from eventsourcing.domain import (
    Aggregate,
    BaseAggregate,
    DomainEventProtocol,
    MutableOrImmutableAggregate,
)
from eventsourcing.persistence import (
    InfrastructureFactory,
    IntegrityError,
    PersistenceError,
    Recording,
)
from eventsourcing.utils import Environment

from pocket.domainmodel import (
    Cause,
    CommandRecord,
    PocketError,
    Wallet,
    check_amount,
    correlation_id,
    transfer,
)
from pocket.groupcommit import Command, GroupCommitter
from pocket.postgres import POSTGRES_DEFAULTS
from pocket.postgres import Factory as PostgresFactory

HISTORY_PAGE_MAX = 500
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalletInfo:
    """A wallet as a caller sees it right after reading or changing it."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int
    closed: bool
    modified_on: datetime

    @classmethod
    def of(cls, wallet: Wallet) -> WalletInfo:
        """The caller's view of a wallet aggregate."""
        return cls(
            wallet.id,
            wallet.user_id,
            wallet.balance,
            wallet.version,
            wallet.closed,
            wallet.modified_on,
        )


@dataclass(frozen=True)
class TransferInfo:
    """A transfer as its caller sees it: both wallets as it left them."""

    id: UUID
    amount: Decimal
    description: str
    sender: WalletInfo
    receiver: WalletInfo


Result = WalletInfo | TransferInfo


@dataclass(frozen=True)
class Transaction:
    """One movement of money, as recorded in the wallet's history."""

    id: int
    type: Literal["IN", "OUT"]
    amount: Decimal
    date: datetime
    balance: Decimal
    actor: str | None
    correlation_id: str | None
    source: str | None = None
    destination: str | None = None
    transfer_id: UUID | None = None
    counterparty_user_id: str | None = None
    counterparty_wallet_id: UUID | None = None
    description: str | None = None


@dataclass(frozen=True)
class HistoryPage:
    """Consecutive entries of a wallet's history, and whether more follow."""

    wallet: WalletInfo
    transactions: list[Transaction]
    has_more: bool


@dataclass(frozen=True)
class Idempotency:
    """A client-chosen command id, and what the command was, to detect reuse."""

    command_id: str
    fingerprint: str


class Pocket(Application[UUID]):
    """Creates wallets and moves money in and out of them and between them."""

    name = "Pocket"
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
        # Every command of this process is decided and saved by one committer
        # thread, many callers' commands to a transaction (group commit).
        self._committer = GroupCommitter(
            self._get, self.save, self._has_newer_events, max_attempts=self.max_attempts
        )
        self._save_listeners: list[Callable[[], None]] = []
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()

    def construct_factory(self, env: Environment) -> InfrastructureFactory[Any]:
        """The library's factory, with bounded retries on PostgreSQL."""
        if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
            return PostgresFactory(env)
        return super().construct_factory(env)

    # Commands

    def create_wallet(
        self, user_id: str, wallet_id: UUID | None = None, *, cause: Cause | None = None
    ) -> UUID:
        """Opens an empty wallet for a user; returns its id."""
        wallet = Wallet.open(user_id, wallet_id or uuid4(), cause or new_cause())
        try:
            self.save(wallet)
        except IntegrityError:
            raise WalletAlreadyExists(wallet.id) from None
        return wallet.id

    def add_money(
        self,
        wallet_id: UUID,
        amount: Decimal,
        source: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> WalletInfo:
        """Puts money into a wallet; returns the wallet as it now is."""
        return self._on_wallet(
            wallet_id,
            lambda wallet, why: wallet.add_money(amount, source, why),
            idempotency(command_id, "add_money", wallet_id, amount, source),
            cause,
        )

    def draw_money(
        self,
        wallet_id: UUID,
        amount: Decimal,
        destination: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> WalletInfo:
        """Takes money out of a wallet; refuses to go below zero."""
        return self._on_wallet(
            wallet_id,
            lambda wallet, why: wallet.draw_money(amount, destination, why),
            idempotency(command_id, "draw_money", wallet_id, amount, destination),
            cause,
        )

    def transfer(
        self,
        sender_id: UUID,
        receiver_id: UUID,
        amount: Decimal,
        description: str = "",
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> TransferInfo:
        """Moves money between two wallets: both sides in one transaction, or none."""
        why = cause or new_cause()
        transfer_id = uuid4()

        def decide(wallets: list[Wallet]) -> Result:
            sender, receiver = wallets
            transfer(
                sender,
                receiver,
                amount=amount,
                description=description,
                transfer_id=transfer_id,
                cause=why,
            )
            return TransferInfo(
                transfer_id,
                check_amount(amount),
                description,
                WalletInfo.of(sender),
                WalletInfo.of(receiver),
            )

        key = idempotency(
            command_id, "transfer", sender_id, receiver_id, amount, description
        )
        result = self._execute([sender_id, receiver_id], decide, key)
        assert isinstance(result, TransferInfo)
        return result

    def close_wallet(
        self,
        wallet_id: UUID,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> WalletInfo:
        """Closes an empty wallet for good."""
        return self._on_wallet(
            wallet_id,
            lambda wallet, why: wallet.close(why),
            idempotency(command_id, "close", wallet_id),
            cause,
        )

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
        self, wallet_id: UUID, *, after: int = 0, limit: int = 50
    ) -> HistoryPage:
        """A page of the wallet's money movements after a position, oldest first.

        Reads only the page's own events (and a snapshot for the balance), so a
        page costs the same at the end of a long history as at its start.
        """
        limit = max(1, min(limit, HISTORY_PAGE_MAX))
        wallet = WalletInfo.of(self._get(wallet_id))
        # Only two events are not money movements (opening and closing), so
        # limit + 3 events hold at least limit + 1 movements when there are that
        # many: enough to tell whether another page follows.
        events = self.events.get(wallet_id, gt=max(after, 0), limit=limit + 3)
        entries = [t for e in events if (t := to_transaction(e)) is not None]
        return HistoryPage(wallet, entries[:limit], len(entries) > limit)

    def transactions(self, wallet_id: UUID) -> list[Transaction]:
        """Every movement of money in and out of a wallet, oldest first."""
        self._get(wallet_id)
        return [
            transaction
            for event in self.events.get(wallet_id)
            if (transaction := to_transaction(event)) is not None
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

    def add_save_listener(self, listener: Callable[[], None]) -> None:
        """Calls listener after each save in this process (wakes local followers)."""
        self._save_listeners.append(listener)

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

    def remove_save_listener(self, listener: Callable[[], None]) -> None:
        """Stops calling a listener added before."""
        self._save_listeners.remove(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        for listener in self._save_listeners:
            listener()

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

    def _on_wallet(
        self,
        wallet_id: UUID,
        act: Callable[[Wallet, Cause], None],
        key: Idempotency | None,
        cause: Cause | None,
    ) -> WalletInfo:
        """Runs a command on one wallet; returns the wallet as it left it."""
        why = cause or new_cause()

        def decide(wallets: list[Wallet]) -> Result:
            (wallet,) = wallets
            act(wallet, why)
            return WalletInfo.of(wallet)

        result = self._execute([wallet_id], decide, key)
        assert isinstance(result, WalletInfo)
        return result

    def _execute(
        self,
        wallet_ids: Sequence[UUID],
        decide: Callable[[list[Wallet]], Result],
        key: Idempotency | None,
    ) -> Result:
        """Runs a command once, however often it is retried with the same key."""
        command = Command(
            wallet_ids,
            decide,
            replay=(lambda: self._replay(key)) if key else (lambda: None),
            record=lambda result: self._record_of(key, result),
        )
        if key is None:
            return self._committer.run(command)
        with self._claim(key.command_id):
            return self._committer.run(command)

    def _record_of(self, key: Idempotency | None, result: Result) -> Aggregate | None:
        """The record that makes a keyed command's retries change nothing."""
        if key is None:
            return None
        record_id = CommandRecord.id_for(key.command_id)
        return CommandRecord(
            key.command_id, key.fingerprint, to_record(result), id=record_id
        )

    def _has_newer_events(self, wallet: Wallet) -> bool:
        return any(True for _ in self.events.get(wallet.id, gt=wallet.version, limit=1))

    def _replay(self, key: Idempotency) -> Result | None:
        """The result of an earlier run of this command, if it ran."""
        try:
            record: object = self.repository.get(CommandRecord.id_for(key.command_id))
        except AggregateNotFoundError:
            return None
        assert isinstance(record, CommandRecord)
        if record.fingerprint != key.fingerprint:
            raise IdempotencyKeyReused(key.command_id)
        return from_record(record.result)

    @contextlib.contextmanager
    def _claim(self, command_id: str) -> Iterator[None]:
        with self._in_flight_lock:
            if command_id in self._in_flight:
                raise CommandInFlight(command_id)
            self._in_flight.add(command_id)
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight.discard(command_id)


def new_cause() -> Cause:
    """The cause of a change made with no request around it."""
    return Cause(actor="system", correlation_id=correlation_id())


def idempotency(command_id: str | None, *parts: object) -> Idempotency | None:
    """What makes a command idempotent: its id, and a fingerprint of its content."""
    if command_id is None:
        return None
    text = "\x1f".join(str(part) for part in parts)
    return Idempotency(command_id, hashlib.sha256(text.encode()).hexdigest())


def to_record(result: Result) -> dict[str, Any]:
    """A result as a command record keeps it."""
    if isinstance(result, WalletInfo):
        return {"wallet": wallet_dict(result)}
    return {
        "transfer": {
            "id": result.id,
            "amount": result.amount,
            "description": result.description,
            "sender": wallet_dict(result.sender),
            "receiver": wallet_dict(result.receiver),
        }
    }


def wallet_dict(wallet: WalletInfo) -> dict[str, Any]:
    """A WalletInfo as plain values."""
    return {
        "aggregate_id": wallet.aggregate_id,
        "user_id": wallet.user_id,
        "balance": wallet.balance,
        "version": wallet.version,
        "closed": wallet.closed,
        "modified_on": wallet.modified_on,
    }


def from_record(data: dict[str, Any]) -> Result:
    """The result a command record kept."""
    if "wallet" in data:
        return WalletInfo(**data["wallet"])
    recorded = data["transfer"]
    return TransferInfo(
        id=recorded["id"],
        amount=recorded["amount"],
        description=recorded["description"],
        sender=WalletInfo(**recorded["sender"]),
        receiver=WalletInfo(**recorded["receiver"]),
    )


def to_transaction(event: object) -> Transaction | None:
    """The history entry for a money event; None for other events."""
    common: dict[str, Any] = {}
    if isinstance(
        event,
        Wallet.MoneyAdded
        | Wallet.MoneyDrawn
        | Wallet.TransferSent
        | Wallet.TransferReceived,
    ):
        common = {
            "id": event.originator_version,
            "amount": event.amount,
            "date": event.timestamp,
            "balance": event.balance,
            "actor": event.actor,
            "correlation_id": event.correlation_id,
        }
    if isinstance(event, Wallet.MoneyAdded):
        return Transaction(type="IN", source=event.source, **common)
    if isinstance(event, Wallet.MoneyDrawn):
        return Transaction(type="OUT", destination=event.destination, **common)
    if isinstance(event, Wallet.TransferSent | Wallet.TransferReceived):
        return Transaction(
            type="OUT" if isinstance(event, Wallet.TransferSent) else "IN",
            transfer_id=event.transfer_id,
            counterparty_user_id=event.counterparty_user_id,
            counterparty_wallet_id=event.counterparty_wallet_id,
            description=event.description,
            **common,
        )
    return None


class WalletNotFound(PocketError, LookupError):
    """No wallet has this id."""

    status = HTTPStatus.NOT_FOUND
    code = "wallet_not_found"
    message = "There is no such wallet."


class VersionNotFound(PocketError, LookupError):
    """The wallet had no such version (or did not exist at that moment)."""

    status = HTTPStatus.NOT_FOUND
    code = "version_not_found"
    message = "The wallet had no such version, or did not exist yet then."

    def __init__(self, wallet_id: UUID, version: int) -> None:
        super().__init__(f"Wallet {wallet_id} has no version {version}.")
        self.wallet_id = wallet_id
        self.version = version


class WalletAlreadyExists(PocketError):
    """A wallet with this id was already created."""


class IdempotencyKeyReused(PocketError, ValueError):
    """The command id was already used for a different command."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used for a different request."
    field = "Idempotency-Key"


class CommandInFlight(PocketError):
    """A command with this id is running right now; its result is not known yet."""

    status = HTTPStatus.CONFLICT
    code = "idempotency_key_in_flight"
    message = "A request with this Idempotency-Key is still running."
