"""Pocket, the event-sourced application: every change to a wallet goes through here."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Recording

from pocket.domainmodel import PocketError, Wallet, check_text

T = TypeVar("T")


@dataclass(frozen=True)
class WalletInfo:
    """A wallet as a caller sees it right after reading or changing it."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int

    @classmethod
    def of(cls, wallet: Wallet) -> WalletInfo:
        """The caller's view of a wallet aggregate."""
        return cls(wallet.id, wallet.user_id, wallet.balance, wallet.version)


@dataclass(frozen=True)
class Transaction:
    """One movement of money, as recorded in the wallet's history."""

    id: int
    type: Literal["IN", "OUT"]
    amount: Decimal
    date: datetime
    balance: Decimal
    source: str | None = None
    destination: str | None = None


class Pocket(Application[UUID]):
    """Creates wallets and moves money in and out of them."""

    name = "Pocket"
    # A snapshot every hundred events keeps loading a wallet as cheap on its
    # millionth event as on its first.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Wallet: 100}
    # Optimistic-concurrency conflicts (another process saved the same wallet
    # first) are retried this many times before the caller is told.
    max_attempts: ClassVar[int] = 12
    _lock_stripes: ClassVar[int] = 64

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        # Commands on one wallet queue up inside a process instead of racing, so
        # conflicts (and their retries) only happen between processes.
        self._locks = [threading.Lock() for _ in range(self._lock_stripes)]
        self._save_listeners: list[Callable[[], None]] = []

    def create_wallet(self, user_id: str, wallet_id: UUID | None = None) -> UUID:
        """Opens an empty wallet for a user; returns its id."""
        wallet = Wallet(user_id=check_text("user_id", user_id), id=wallet_id or uuid4())
        try:
            self.save(wallet)
        except IntegrityError:
            raise WalletAlreadyExists(wallet.id) from None
        return wallet.id

    def add_money(self, wallet_id: UUID, amount: Decimal, source: str) -> WalletInfo:
        """Puts money into a wallet; returns the wallet as it now is."""
        return self._change(wallet_id, lambda w: w.add_money(amount, source))

    def draw_money(
        self, wallet_id: UUID, amount: Decimal, destination: str
    ) -> WalletInfo:
        """Takes money out of a wallet; refuses to go below zero."""
        return self._change(wallet_id, lambda w: w.draw_money(amount, destination))

    def get_wallet(self, wallet_id: UUID) -> WalletInfo:
        """The wallet as the event store says it is now."""
        return WalletInfo.of(self._get(wallet_id))

    def transactions(self, wallet_id: UUID) -> list[Transaction]:
        """Every movement of money in and out of a wallet, oldest first."""
        self._get(wallet_id)
        return [
            transaction
            for event in self.events.get(wallet_id)
            if (transaction := to_transaction(event)) is not None
        ]

    def add_save_listener(self, listener: Callable[[], None]) -> None:
        """Calls listener after each save in this process (wakes local followers)."""
        self._save_listeners.append(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        for listener in self._save_listeners:
            listener()

    def _get(self, wallet_id: UUID) -> Wallet:
        try:
            wallet: object = self.repository.get(wallet_id)
        except AggregateNotFoundError:
            raise WalletNotFound(wallet_id) from None
        if not isinstance(wallet, Wallet):
            raise WalletNotFound(wallet_id)
        return wallet

    def _change(self, wallet_id: UUID, command: Callable[[Wallet], None]) -> WalletInfo:
        """Loads, decides and saves, retrying when another writer got there first."""
        lock = self._locks[hash(wallet_id) % self._lock_stripes]
        for attempt in range(self.max_attempts):
            with lock:
                wallet = self._get(wallet_id)
                command(wallet)
                try:
                    self.save(wallet)
                except IntegrityError:
                    pass
                else:
                    return WalletInfo.of(wallet)
            backoff(attempt)
        raise ConcurrencyConflict(wallet_id)


def backoff(attempt: int) -> None:
    """Sleeps a little longer after each failed attempt, with jitter."""
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))


def to_transaction(event: object) -> Transaction | None:
    """The history entry for a money event; None for other events."""
    if isinstance(event, Wallet.MoneyAdded):
        return Transaction(
            id=event.originator_version,
            type="IN",
            amount=event.amount,
            date=event.timestamp,
            balance=event.balance,
            source=event.source,
        )
    if isinstance(event, Wallet.MoneyDrawn):
        return Transaction(
            id=event.originator_version,
            type="OUT",
            amount=event.amount,
            date=event.timestamp,
            balance=event.balance,
            destination=event.destination,
        )
    return None


class WalletNotFound(PocketError, LookupError):
    """No wallet has this id."""


class WalletAlreadyExists(PocketError):
    """A wallet with this id was already created."""


class ConcurrencyConflict(PocketError):
    """Other writers kept changing the wallet; the command was not applied."""
