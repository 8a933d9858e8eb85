"""Pocket, the event-sourced application: every change to a wallet goes through here."""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.system import Leader
from eventsourcing.utils import Environment

from pocket.commands import (
    AddMoney,
    CaptureHold,
    CloseWallet,
    Command,
    DrawMoney,
    ExpireHold,
    OpenWallet,
    PlaceHold,
    SetAlertThreshold,
    SetCreditLimit,
    SetDailyLimit,
    Transfer,
    VoidHold,
)
from pocket.deadlines import STALLED_SECONDS
from pocket.domainmodel import (
    EXPIRED,
    MAX_HOLD,
    OPEN,
    Wallet,
    capture_hold,
    check_amount,
    transfer,
    utcnow,
)
from pocket.errors import (
    CommandInFlight,
    HoldEnded,
    HoldNotFound,
    IdempotencyKeyReused,
    InvalidExpiry,
    PocketError,
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
    HoldInfo,
    TransferInfo,
    WalletInfo,
    to_history_entry,
)
from pocket.sqlite import PocketSQLiteFactory
from pocket.unitofwork import UnitOfWork, handler
from pocket.wallets import Deferred, Wallets
from pocket.walletstore import WalletStore

# What the application answers is defined in pocket.results, so that the modules
# the application uses can build it without importing the application; callers
# import it from here, as before.
__all__ = [
    "HISTORY_PAGE_MAX",
    "HistoryEntry",
    "HistoryPage",
    "HoldInfo",
    "Pocket",
    "TransferInfo",
    "WalletInfo",
]

HISTORY_PAGE_MAX = 500
P = TypeVar("P", bound="Pocket")
C = TypeVar("C", bound=Command)
H = TypeVar("H", bound=HoldInfo)
log = logging.getLogger(__name__)


def counted(outcome: str) -> Callable[[Callable[[P, C], H]], Callable[[P, C], H]]:
    """Counts a hold command's outcome in Pocket.hold_counts: outcome when it
    ran, refused when a rule refused it."""

    def decorate(method: Callable[[P, C], H]) -> Callable[[P, C], H]:
        @functools.wraps(method)
        def run(app: P, command: C) -> H:
            try:
                answer = method(app, command)
            except PocketError:
                app.hold_counts["refused"] += 1
                raise
            if not answer.replayed:
                app.hold_counts[outcome] += 1
            return answer

        return run

    return decorate


E = TypeVar("E", bound=CaptureHold | VoidHold)


def refused_if_expired(
    method: Callable[[P, E], HoldInfo],
) -> Callable[[P, E], HoldInfo]:
    """A capture's or void's answer "expired" (it recorded the expiry of the
    hold it found past it) as the refusal its caller hears: HoldEnded, from its
    command record too when the command is sent again."""

    @functools.wraps(method)
    def run(app: P, command: E) -> HoldInfo:
        answer = method(app, command)
        if answer.status == EXPIRED:
            raise HoldEnded(answer.id, EXPIRED, answer)
        return answer

    return run


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
        # Holds placed, captured, voided, expired and refused by this process
        # (for metrics; a resent command answered from its record counts none).
        self.hold_counts: Counter[str] = Counter()
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
        """Closes an empty wallet with no open holds for good."""
        wallet = wallets.get(command.wallet_id)
        wallet.close(command.cause)
        return wallets.save(WalletInfo.of(wallet))

    @counted("placed")
    @handler
    def place_hold(self, command: PlaceHold, wallets: Wallets) -> HoldInfo:
        """Reserves an amount until its expiry, for a destination or another
        wallet; refused as a draw would be. Returns the hold."""
        now = utcnow()
        wallet = wallets.get(command.wallet_id)
        receiver = None
        if command.receiver_id is not None:
            receiver = wallets.get(command.receiver_id)
        hold_id = uuid4()  # One per hold placed (as a transfer's id).
        wallet.place_hold(
            hold_id=hold_id,
            amount=command.amount,
            expires_at=expiry_of(command, now),
            destination=command.destination,
            receiver=receiver,
            description=command.description,
            cause=command.cause,
            now=now,
        )
        hold = HoldInfo.open_of(hold_id, wallet.holds[str(hold_id)])
        return wallets.save(hold.answer(WalletInfo.of(wallet, now)))

    @counted("captured")
    @refused_if_expired
    @handler
    def capture_hold(self, command: CaptureHold, wallets: Wallets) -> HoldInfo:
        """Ends an open hold by moving all it holds, or less, to its destination
        (a wallet's: as a transfer); the rest is released."""
        now = utcnow()
        wallet = wallets.get(command.wallet_id)
        hold = self._open_hold(wallet, command.hold_id, now)
        if hold.expires_at <= now:
            return self._record_expiry(wallet, hold, command, wallets, now)
        receiver = None
        if hold.counterparty_wallet_id is not None:
            receiver = wallets.get(hold.counterparty_wallet_id)
        transfer_id = uuid4()
        taken = capture_hold(
            wallet,
            receiver,
            hold_id=command.hold_id,
            amount=command.amount,
            transfer_id=transfer_id,
            cause=command.cause,
            now=now,
        )
        ended = hold.ended(
            "captured",
            wallet.modified_on,
            captured=taken,
            released=hold.amount - taken,
            transfer_id=None if receiver is None else transfer_id,
        )
        return wallets.save(
            ended.answer(
                WalletInfo.of(wallet, now),
                None if receiver is None else WalletInfo.of(receiver, now),
            )
        )

    @counted("voided")
    @refused_if_expired
    @handler
    def void_hold(self, command: VoidHold, wallets: Wallets) -> HoldInfo:
        """Ends an open hold with nothing taken."""
        now = utcnow()
        wallet = wallets.get(command.wallet_id)
        hold = self._open_hold(wallet, command.hold_id, now)
        if hold.expires_at <= now:
            return self._record_expiry(wallet, hold, command, wallets, now)
        wallet.void_hold(command.hold_id, command.cause, now)
        ended = hold.ended("voided", wallet.modified_on, released=hold.amount)
        return wallets.save(ended.answer(WalletInfo.of(wallet, now)))

    @counted("expired")
    @handler
    def expire_hold(self, command: ExpireHold, wallets: Wallets) -> HoldInfo:
        """Records that a hold reached its expiry (the hold-expiry follower sends
        this); HoldEnded if it ended otherwise first."""
        now = utcnow()
        wallet = wallets.get(command.wallet_id)
        if str(command.hold_id) not in wallet.holds:
            raise self._ended(wallet.id, command.hold_id)
        hold = HoldInfo.open_of(command.hold_id, wallet.holds[str(command.hold_id)])
        wallet.expire_hold(command.hold_id, command.cause, now)
        ended = hold.ended("expired", wallet.modified_on, released=hold.amount)
        return wallets.save(ended.answer(WalletInfo.of(wallet, now)))

    @handler
    def set_credit_limit(self, command: SetCreditLimit, wallets: Wallets) -> WalletInfo:
        """Lets a wallet's available amount go this far below zero (the admin's)."""
        wallet = wallets.get(command.wallet_id)
        wallet.set_credit_limit(command.credit_limit, command.cause)
        return wallets.save(WalletInfo.of(wallet))

    @handler
    def set_daily_limit(self, command: SetDailyLimit, wallets: Wallets) -> WalletInfo:
        """Caps what a wallet spends in a UTC day, or lifts the cap (the admin's)."""
        wallet = wallets.get(command.wallet_id)
        wallet.set_daily_limit(command.daily_limit, command.cause)
        return wallets.save(WalletInfo.of(wallet))

    @handler
    def set_alert_threshold(
        self, command: SetAlertThreshold, wallets: Wallets
    ) -> WalletInfo:
        """Asks for balance.low events below a threshold, or for none (the
        admin's; the change feed sends them: docs/webhooks.md)."""
        wallet = wallets.get(command.wallet_id)
        wallet.set_alert_threshold(command.alert_below, command.cause)
        return wallets.save(WalletInfo.of(wallet))

    def _open_hold(self, wallet: Wallet, hold_id: UUID, now: datetime) -> HoldInfo:
        """A hold the wallet has open (past its expiry, not recorded yet, its
        status says "expired"), or the error saying how it ended."""
        try:
            return HoldInfo.open_of(hold_id, wallet.open_hold(hold_id, now))
        except HoldNotFound:
            raise self._ended(wallet.id, hold_id) from None
        except HoldEnded:
            hold = HoldInfo.open_of(hold_id, wallet.holds[str(hold_id)])
            return replace(hold, status=EXPIRED, released=hold.amount)

    def _record_expiry(
        self,
        wallet: Wallet,
        hold: HoldInfo,
        command: CaptureHold | VoidHold,
        wallets: Wallets,
        now: datetime,
    ) -> HoldInfo:
        """Records the expiry of a hold that a capture or void found past it:
        its caller is told "expired" only if no other ending, decided before
        the expiry and written after this was decided, is written first (a
        refusal that wrote nothing would stand against it, and the hold would
        end as captured or voided after its caller heard "expired")."""
        wallet.expire_hold(hold.id, command.cause, now)
        ended = hold.ended(EXPIRED, wallet.modified_on, released=hold.amount)
        return wallets.save(ended.answer(WalletInfo.of(wallet, now)))

    def _ended(self, wallet_id: UUID, hold_id: UUID) -> HoldEnded | HoldNotFound:
        """How a hold the wallet no longer has open ended (HoldEnded, with the
        hold), or HoldNotFound if the wallet never had it."""
        hold = self._find_hold(wallet_id, hold_id)
        if hold is None:
            return HoldNotFound(hold_id)
        if hold.ended_on is None:
            # Open as stored, ended in the wallet in hand: by a save staged in
            # this batch and not written yet. How it ended is told from the
            # store once it is, in the next batch (or, if that save fails, the
            # command runs on the hold as it then stands).
            raise Deferred
        return HoldEnded(hold_id, hold.status, hold)

    # Queries

    def hold(self, wallet_id: UUID, hold_id: UUID) -> HoldInfo:
        """One of a wallet's holds, open or ended; HoldNotFound if it has none by
        that id."""
        wallet = self._get(wallet_id)
        hold = wallet.holds.get(str(hold_id))
        if hold is not None:
            return HoldInfo.open_of(hold_id, hold)
        found = self._find_hold(wallet_id, hold_id)
        if found is None:
            raise HoldNotFound(hold_id)
        return found

    def open_holds(self, wallet_id: UUID) -> list[HoldInfo]:
        """A wallet's open holds (not past their expiry), soonest to expire first."""
        wallet = self._get(wallet_id)
        holds = [HoldInfo.open_of(i, h) for i, h in wallet.holds.items()]
        return sorted(
            (h for h in holds if h.status == OPEN), key=lambda h: h.expires_at
        )

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
        # As it was then: its holds held what they held at that version's time.
        return WalletInfo.of(wallet, wallet.modified_on)

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
        # Reads until it has one entry more than the page (so it can tell whether
        # another page follows) or the events end: most events are entries, but
        # opening, closing and limits are not.
        entries: list[HistoryEntry] = []
        position = after if newest_first else max(after, 0)
        while len(entries) <= limit:
            if newest_first:
                before = position - 1 if position > 0 else None
                if before is not None and before < 1:
                    break
                events = list(
                    self.events.get(wallet_id, lte=before, desc=True, limit=limit + 3)
                )
            else:
                events = list(self.events.get(wallet_id, gt=position, limit=limit + 3))
            entries.extend(h for e in events if (h := to_history_entry(e)) is not None)
            if len(events) < limit + 3:
                break
            position = events[-1].originator_version
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

    def _find_hold(self, wallet_id: UUID, hold_id: UUID) -> HoldInfo | None:
        """A hold from the wallet's events, newest first, a page at a time, back
        to its placing; None if the wallet never had it."""
        found: list[object] = []
        before: int | None = None
        while True:
            page = list(self.events.get(wallet_id, lte=before, desc=True, limit=500))
            for event in page:
                if getattr(event, "hold_id", None) == hold_id:
                    found.insert(0, event)
                    if isinstance(event, Wallet.HoldPlaced):
                        return HoldInfo.from_events(found)
            if len(page) < 500:
                return None
            before = page[-1].originator_version - 1

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


def expiry_of(command: PlaceHold, now: datetime) -> datetime:
    """A hold's expiry: its time, or its number of seconds from now."""
    if (command.expires_at is None) == (command.expires_in is None):
        msg = "A hold needs an expiry: expires_at (a time) or expires_in (seconds)."
        raise InvalidExpiry("expires_in", msg)
    if command.expires_at is not None:
        return command.expires_at
    seconds = command.expires_in
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidExpiry(
            "expires_in", "expires_in must be a whole number of seconds."
        )
    if not 1 <= seconds <= MAX_HOLD.total_seconds():
        limit = int(MAX_HOLD.total_seconds())
        msg = (
            f"expires_in must be between 1 and {limit} seconds ({MAX_HOLD.days} days)."
        )
        raise InvalidExpiry("expires_in", msg)
    return now + timedelta(seconds=seconds)
