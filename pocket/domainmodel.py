"""The wallet aggregate: its events and its rules (whose refusals are declared,
with every error a caller hears of, in pocket.errors)."""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, cast
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from pocket.errors import (
    CaptureExceedsHold,
    DailyLimitExceeded,
    HoldEnded,
    HoldNotDue,
    HoldNotFound,
    HoldsOpen,
    InsufficientFunds,
    InvalidAmount,
    InvalidExpiry,
    InvalidLimit,
    InvalidText,
    SameWallet,
    WalletClosed,
    WalletNotEmpty,
)

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_AMOUNT = Decimal("1000000000.00")
MAX_TEXT_LENGTH = 255
# A hold lasts at least a second and at most this long (a card authorisation
# lasts days, not months): a hold is money the owner cannot spend.
MIN_HOLD = timedelta(seconds=1)
MAX_HOLD = timedelta(days=30)
# How a hold ended, or that it has not.
OPEN: Final = "open"
CAPTURED: Final = "captured"
VOIDED: Final = "voided"
EXPIRED: Final = "expired"


@dataclass(frozen=True)
class Cause:
    """Who caused a change (a user, the admin, the system) and under which request."""

    actor: str = "system"
    correlation_id: str = ""


def correlation_id() -> str:
    """A fresh id for a request or a change: 128 random bits as 32 hex digits.

    Not a secret, so it comes from Python's own generator (seeded from the OS at
    start) rather than from os.urandom, which costs a system call every time.
    """
    return f"{random.getrandbits(128):032x}"


def add_cause(state: dict[str, Any]) -> None:
    """Upcasts an event recorded before events said who caused them."""
    state["actor"] = None
    state["correlation_id"] = None


class Wallet(Aggregate):
    """A user's wallet: money in, money out, never below what it may spend, closed
    for good.

    What it may spend (its available amount) is its balance, less what its open
    holds reserve, plus its credit limit (0 unless the admin sets one); a daily
    limit, if set, caps what it spends in a UTC day. A hold that has passed its
    expiry no longer reserves anything, whether or not its expiry is recorded
    yet (the hold-expiry follower records it).
    """

    class_version = 4

    class Created(Aggregate.Created):
        """The wallet was opened for a user."""

        class_version = 2
        user_id: str
        actor: str | None
        correlation_id: str | None
        upcast_v1_v2 = staticmethod(add_cause)

    class MoneyAdded(Aggregate.Event):
        """Money came in; balance is what the wallet held afterwards."""

        class_version = 2
        amount: Decimal
        source: str
        balance: Decimal
        actor: str | None
        correlation_id: str | None
        upcast_v1_v2 = staticmethod(add_cause)

    class MoneyDrawn(Aggregate.Event):
        """Money went out; balance is what the wallet held afterwards."""

        class_version = 2
        amount: Decimal
        destination: str
        balance: Decimal
        actor: str | None
        correlation_id: str | None
        upcast_v1_v2 = staticmethod(add_cause)

        def apply(self, aggregate: Any) -> None:
            wallet = cast(Wallet, aggregate)
            wallet.balance = self.balance
            wallet.spend(self.amount, self.timestamp)

    class TransferSent(Aggregate.Event):
        """Money went to another wallet, as one side of a transfer."""

        amount: Decimal
        transfer_id: UUID
        counterparty_wallet_id: UUID
        counterparty_user_id: str
        description: str
        balance: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            wallet = cast(Wallet, aggregate)
            wallet.balance = self.balance
            wallet.spend(self.amount, self.timestamp)

    class TransferReceived(Aggregate.Event):
        """Money came from another wallet, as one side of a transfer."""

        amount: Decimal
        transfer_id: UUID
        counterparty_wallet_id: UUID
        counterparty_user_id: str
        description: str
        balance: Decimal
        actor: str
        correlation_id: str

    class Closed(Aggregate.Event):
        """The wallet was closed; it takes no more money in or out."""

        actor: str
        correlation_id: str

    class HoldPlaced(Aggregate.Event):
        """An amount was reserved until expires_at, for a destination outside
        Pocket or for another wallet (counterparty_*), to be captured, voided or
        expired later; held is what the wallet's open holds reserved afterwards."""

        hold_id: UUID
        amount: Decimal
        expires_at: datetime
        destination: str | None
        counterparty_wallet_id: UUID | None
        counterparty_user_id: str | None
        description: str
        held: Decimal
        balance: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            wallet = cast(Wallet, aggregate)
            wallet.holds = {
                **wallet.holds,
                str(self.hold_id): {
                    "amount": self.amount,
                    "expires_at": self.expires_at,
                    "destination": self.destination,
                    "counterparty_wallet_id": self.counterparty_wallet_id,
                    "counterparty_user_id": self.counterparty_user_id,
                    "description": self.description,
                    "placed_on": self.timestamp,
                },
            }

    class HoldCaptured(Aggregate.Event):
        """A hold ended by moving amount (all it held, or less: the rest,
        released, is free again) to its destination, or to its wallet as a
        transfer (transfer_id, named by the receiver's TransferReceived);
        balance is what the wallet held afterwards."""

        hold_id: UUID
        amount: Decimal
        released: Decimal
        destination: str | None
        transfer_id: UUID | None
        counterparty_wallet_id: UUID | None
        counterparty_user_id: str | None
        description: str
        balance: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            wallet = cast(Wallet, aggregate)
            wallet.end_hold(self.hold_id)
            wallet.balance = self.balance
            wallet.spend(self.amount, self.timestamp)

    class HoldVoided(Aggregate.Event):
        """A hold ended with nothing taken: amount is free again."""

        hold_id: UUID
        amount: Decimal
        balance: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            cast(Wallet, aggregate).end_hold(self.hold_id)

    class HoldExpired(Aggregate.Event):
        """A hold ended at its expiry with nothing taken: amount is free again."""

        hold_id: UUID
        amount: Decimal
        balance: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            cast(Wallet, aggregate).end_hold(self.hold_id)

    class CreditLimitSet(Aggregate.Event):
        """The admin let the available amount go this far below zero."""

        credit_limit: Decimal
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            cast(Wallet, aggregate).credit_limit = self.credit_limit

    class DailyLimitSet(Aggregate.Event):
        """The admin capped what the wallet spends in a UTC day (None: no cap)."""

        daily_limit: Decimal | None
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            cast(Wallet, aggregate).daily_limit = self.daily_limit

    class AlertThresholdSet(Aggregate.Event):
        """The admin asked to be told (a balance.low event of the change feed)
        when the available amount goes below alert_below (None: never)."""

        alert_below: Decimal | None
        actor: str
        correlation_id: str

        def apply(self, aggregate: Any) -> None:
            cast(Wallet, aggregate).alert_below = self.alert_below

    @event(Created)
    def __init__(
        self, user_id: str, id: UUID, actor: str | None, correlation_id: str | None
    ) -> None:
        # Naming id here lets the caller choose it (the library sets it itself).
        self.user_id = user_id
        self.balance = ZERO
        self.closed = False
        # Open holds, by the text of their id (a snapshot's keys are text).
        # Replaced, never changed in place: a snapshot copies the wallet's
        # attributes, not what they hold, and is put after the batch's write,
        # by when the wallet may have moved on.
        self.holds: dict[str, dict[str, Any]] = {}
        self.credit_limit = ZERO
        self.daily_limit: Decimal | None = None
        self.alert_below: Decimal | None = None
        # What went out on spent_on (a UTC day, ISO): draws, transfers, captures.
        self.spent_on = ""
        self.spent = ZERO

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshots taken before wallets could close were of open wallets."""
        state["closed"] = False

    @staticmethod
    def upcast_v2_v3(state: dict[str, Any]) -> None:
        """Snapshots taken before holds and limits: none of either, nothing spent
        today that the snapshot knows of (a day's draws before the snapshot are
        not counted against a daily limit set after it)."""
        state.update(
            holds={}, credit_limit=ZERO, daily_limit=None, spent_on="", spent=ZERO
        )

    @staticmethod
    def upcast_v3_v4(state: dict[str, Any]) -> None:
        """Snapshots taken before balance alerts: no threshold."""
        state["alert_below"] = None

    @classmethod
    def open(cls, user_id: str, wallet_id: UUID, cause: Cause) -> Wallet:
        """Opens an empty wallet for a user."""
        return cls(
            user_id=check_text("user_id", user_id),
            id=wallet_id,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    # What the wallet may spend, at a moment.

    def held(self, now: datetime | None = None) -> Decimal:
        """What open holds reserve at a moment (now by default): a hold past its
        expiry reserves nothing, its expiry recorded or not."""
        now = now or utcnow()
        return sum(
            (h["amount"] for h in self.holds.values() if h["expires_at"] > now), ZERO
        )

    def available(self, now: datetime | None = None) -> Decimal:
        """What the wallet may spend at a moment: the balance, less what open
        holds reserve, plus the credit limit."""
        return self.balance - self.held(now) + self.credit_limit

    def spent_today(self, now: datetime | None = None) -> Decimal:
        """What counts against the daily limit at a moment: what went out on its
        UTC day, and what open holds reserve."""
        now = now or utcnow()
        spent = self.spent if self.spent_on == day_of(now) else ZERO
        return spent + self.held(now)

    def end_hold(self, hold_id: UUID) -> None:
        """Drops an ended hold (into a new dict: see __init__)."""
        key = str(hold_id)
        self.holds = {k: h for k, h in self.holds.items() if k != key}

    def spend(self, amount: Decimal, moment: datetime) -> None:
        """Counts money that went out at a moment against its day."""
        day = day_of(moment)
        if day != self.spent_on:
            self.spent_on, self.spent = day, ZERO
        self.spent += amount

    # Commands

    def add_money(self, amount: Decimal, source: str, cause: Cause) -> None:
        """Puts money into the wallet from a named source."""
        amount = check_amount(amount)
        source = check_text("source", source)
        self.check_open()
        self._money_added(
            amount=amount,
            source=source,
            balance=self.balance + amount,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def draw_money(
        self,
        amount: Decimal,
        destination: str,
        cause: Cause,
        now: datetime | None = None,
    ) -> None:
        """Takes money out of the wallet to a named destination."""
        amount = check_amount(amount)
        destination = check_text("destination", destination)
        self.check_open()
        self.check_funds(amount, now)
        self.trigger_event(
            self.MoneyDrawn,
            amount=amount,
            destination=destination,
            balance=self.balance - amount,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def close(self, cause: Cause, now: datetime | None = None) -> None:
        """Closes an empty wallet with no open holds for good; its history stays
        readable."""
        self.check_open()
        held = self.held(now)
        if held:
            raise HoldsOpen(held)
        if self.balance != ZERO:
            raise WalletNotEmpty(self.balance)
        self._closed(actor=cause.actor, correlation_id=cause.correlation_id)

    def place_hold(
        self,
        *,
        hold_id: UUID,
        amount: Decimal,
        expires_at: datetime,
        cause: Cause,
        destination: str | None = None,
        receiver: Wallet | None = None,
        description: str = "",
        now: datetime | None = None,
    ) -> None:
        """Reserves an amount until expires_at, for a destination outside Pocket
        or for another wallet; refused as a draw would be."""
        now = now or utcnow()
        amount = check_amount(amount)
        expires_at = check_expiry(expires_at, now)
        if (destination is None) == (receiver is None):
            msg = "A hold goes either to a destination or to another user's wallet."
            raise InvalidText("destination", msg)
        if destination is not None:
            destination = check_text("destination", destination)
        if description:
            description = check_text("description", description)
        self.check_open()
        if receiver is not None:
            if receiver.id == self.id:
                raise SameWallet(self.id)
            receiver.check_open("receiving")
        self.check_funds(amount, now)
        self.trigger_event(
            self.HoldPlaced,
            hold_id=hold_id,
            amount=amount,
            expires_at=expires_at,
            destination=destination,
            counterparty_wallet_id=None if receiver is None else receiver.id,
            counterparty_user_id=None if receiver is None else receiver.user_id,
            description=description,
            held=self.held(now) + amount,
            balance=self.balance,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def void_hold(
        self, hold_id: UUID, cause: Cause, now: datetime | None = None
    ) -> None:
        """Ends an open hold with nothing taken."""
        hold = self.open_hold(hold_id, now)
        self.trigger_event(
            self.HoldVoided,
            hold_id=hold_id,
            amount=hold["amount"],
            balance=self.balance,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def expire_hold(
        self, hold_id: UUID, cause: Cause, now: datetime | None = None
    ) -> None:
        """Records that a hold reached its expiry (the hold-expiry follower does)."""
        now = now or utcnow()
        hold = self.holds.get(str(hold_id))
        if hold is None:
            raise HoldNotFound(hold_id)  # Ended already, or never placed here.
        if hold["expires_at"] > now:
            raise HoldNotDue(hold_id, hold["expires_at"])
        self.trigger_event(
            self.HoldExpired,
            hold_id=hold_id,
            amount=hold["amount"],
            balance=self.balance,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def open_hold(self, hold_id: UUID, now: datetime | None = None) -> dict[str, Any]:
        """An open hold that has not passed its expiry, or raises HoldNotFound
        (none open by that id: the application says how it ended) or HoldEnded
        (expired, its expiry not recorded yet)."""
        now = now or utcnow()
        hold = self.holds.get(str(hold_id))
        if hold is None:
            raise HoldNotFound(hold_id)
        if hold["expires_at"] <= now:
            raise HoldEnded(hold_id, EXPIRED)
        return hold

    def set_credit_limit(self, credit_limit: Decimal, cause: Cause) -> None:
        """Lets the available amount go as far as this below zero (0: not at
        all). Lowering it refuses what would pass it, and takes back nothing."""
        self.check_open()
        self.trigger_event(
            self.CreditLimitSet,
            credit_limit=check_limit("credit_limit", credit_limit),
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def set_daily_limit(self, daily_limit: Decimal | None, cause: Cause) -> None:
        """Caps what the wallet spends in a UTC day (None: no cap)."""
        self.check_open()
        if daily_limit is not None:
            daily_limit = check_limit("daily_limit", daily_limit)
        self.trigger_event(
            self.DailyLimitSet,
            daily_limit=daily_limit,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def set_alert_threshold(self, alert_below: Decimal | None, cause: Cause) -> None:
        """Asks for a balance.low event when the available amount goes below
        alert_below (None: no alert)."""
        self.check_open()
        if alert_below is not None:
            alert_below = check_limit("alert_below", alert_below)
        self.trigger_event(
            self.AlertThresholdSet,
            alert_below=alert_below,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    # Rules

    def check_open(self, role: str = "") -> None:
        """Raises WalletClosed if the wallet takes no more money; role says which
        side of a transfer it is ("sending", "receiving")."""
        if self.closed:
            raise WalletClosed(self.id, self.user_id, role)

    def check_funds(self, amount: Decimal, now: datetime | None = None) -> None:
        """Raises InsufficientFunds if spending amount would take the available
        amount below zero, or DailyLimitExceeded if it would pass the day's limit."""
        now = now or utcnow()
        held = self.held(now)
        if amount > self.balance - held + self.credit_limit:
            raise InsufficientFunds(
                balance=self.balance,
                amount=amount,
                held=held,
                credit_limit=self.credit_limit,
            )
        if self.daily_limit is not None:
            spent = self.spent_today(now)
            if spent + amount > self.daily_limit:
                raise DailyLimitExceeded(self.daily_limit, spent, amount)

    # Each money event records the balance it leaves behind, so a page of history
    # can show running balances without replaying everything before it.
    @event(MoneyAdded)
    def _money_added(
        self,
        amount: Decimal,
        source: str,
        balance: Decimal,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.balance = balance

    def _transfer_sent(self, **kwargs: Any) -> None:
        self.trigger_event(self.TransferSent, **kwargs)

    @event(TransferReceived)
    def _transfer_received(
        self,
        *,
        amount: Decimal,
        transfer_id: UUID,
        counterparty_wallet_id: UUID,
        counterparty_user_id: str,
        description: str,
        balance: Decimal,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.balance = balance

    @event(Closed)
    def _closed(self, actor: str, correlation_id: str) -> None:
        self.closed = True


# How a hold ends, by the event that ends it.
HoldEnding = Wallet.HoldCaptured | Wallet.HoldVoided | Wallet.HoldExpired
ENDED_BY: dict[type[HoldEnding], str] = {
    Wallet.HoldCaptured: CAPTURED,
    Wallet.HoldVoided: VOIDED,
    Wallet.HoldExpired: EXPIRED,
}
HOLD_ENDINGS: tuple[type[HoldEnding], ...] = tuple(ENDED_BY)


def utcnow() -> datetime:
    """Now, in UTC (the domain's clock; its methods take another for tests)."""
    return datetime.now(UTC)


def day_of(moment: datetime) -> str:
    """A moment's UTC day, as daily limits count them (ISO: 2026-12-03)."""
    return moment.astimezone(UTC).date().isoformat()


def check_expiry(expires_at: object, now: datetime) -> datetime:
    """Returns a hold's expiry, or raises InvalidExpiry: an aware time between
    a second and MAX_HOLD from now."""
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        msg = "A hold's expiry must be a time with its UTC offset."
        raise InvalidExpiry("expires_at", msg)
    if expires_at - now < MIN_HOLD:
        msg = "A hold must last at least a second from now."
        raise InvalidExpiry("expires_at", msg)
    if expires_at - now > MAX_HOLD:
        msg = f"A hold may last at most {MAX_HOLD.days} days."
        raise InvalidExpiry("expires_at", msg)
    return expires_at.astimezone(UTC)


def check_limit(field: str, limit: object) -> Decimal:
    """Returns a limit with two places (0 or more), or raises InvalidLimit."""
    if isinstance(limit, bool) or not isinstance(limit, Decimal | int):
        msg = "A limit must be a Decimal (or an int), never a float or a string."
        raise InvalidLimit(field, msg)
    value = Decimal(limit)
    if not value.is_finite() or value < 0:
        raise InvalidLimit(field, "A limit must be zero or more.")
    if value > MAX_AMOUNT:
        raise InvalidLimit(field, f"A limit must be at most {MAX_AMOUNT}.")
    if value != value.quantize(CENT):
        raise InvalidLimit(field, "A limit must have at most 2 decimal places.")
    return value.quantize(CENT)


def capture_hold(
    sender: Wallet,
    receiver: Wallet | None,
    *,
    hold_id: UUID,
    amount: Decimal | None,
    transfer_id: UUID,
    cause: Cause,
    now: datetime | None = None,
) -> Decimal:
    """Ends an open hold by moving all it holds, or less (the rest is released),
    to its destination, or to its wallet as a transfer: both sides, or neither.
    Returns the amount captured."""
    hold = sender.open_hold(hold_id, now)
    held: Decimal = hold["amount"]
    taken = held if amount is None else check_amount(amount)
    if taken > held:
        raise CaptureExceedsHold(held, taken)
    to_wallet = hold["counterparty_wallet_id"]
    if to_wallet is not None:
        if receiver is None or receiver.id != to_wallet:
            raise ValueError("A hold for a wallet is captured with that wallet.")
        receiver.check_open("receiving")
    sender.trigger_event(
        sender.HoldCaptured,
        hold_id=hold_id,
        amount=taken,
        released=held - taken,
        destination=hold["destination"],
        transfer_id=None if to_wallet is None else transfer_id,
        counterparty_wallet_id=to_wallet,
        counterparty_user_id=hold["counterparty_user_id"],
        description=hold["description"],
        balance=sender.balance - taken,
        actor=cause.actor,
        correlation_id=cause.correlation_id,
    )
    if receiver is not None:
        receiver._transfer_received(
            amount=taken,
            transfer_id=transfer_id,
            counterparty_wallet_id=sender.id,
            counterparty_user_id=sender.user_id,
            description=hold["description"],
            balance=receiver.balance + taken,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )
    return taken


def transfer(
    sender: Wallet,
    receiver: Wallet,
    *,
    amount: Decimal,
    description: str,
    transfer_id: UUID,
    cause: Cause,
    now: datetime | None = None,
) -> None:
    """Moves money from one wallet to another: both sides, or neither."""
    amount = check_amount(amount)
    if description:
        description = check_text("description", description)
    if sender.id == receiver.id:
        raise SameWallet(sender.id)
    sender.check_open("sending")
    receiver.check_open("receiving")
    sender.check_funds(amount, now)
    # One rule spanning two wallets: this function owns both sides' events.
    sender._transfer_sent(
        amount=amount,
        transfer_id=transfer_id,
        counterparty_wallet_id=receiver.id,
        counterparty_user_id=receiver.user_id,
        description=description,
        balance=sender.balance - amount,
        actor=cause.actor,
        correlation_id=cause.correlation_id,
    )
    receiver._transfer_received(
        amount=amount,
        transfer_id=transfer_id,
        counterparty_wallet_id=sender.id,
        counterparty_user_id=sender.user_id,
        description=description,
        balance=receiver.balance + amount,
        actor=cause.actor,
        correlation_id=cause.correlation_id,
    )


class CommandRecord(Aggregate):
    """A command that changed wallets, kept so that a retry of it changes nothing.

    Saved in the same transaction as the events the command caused, so there is
    never one without the other.
    """

    class Recorded(Aggregate.Created):
        """The command ran; result is what its caller was told."""

        command_id: str
        fingerprint: str
        result: dict[str, Any]

    @event(Recorded)
    def __init__(
        self, command_id: str, fingerprint: str, result: dict[str, Any], id: UUID
    ) -> None:
        self.command_id = command_id
        self.fingerprint = fingerprint
        self.result = result

    @staticmethod
    def id_for(command_id: str) -> UUID:
        """The record's id: the same command id always gives the same record."""
        return uuid5(NAMESPACE_URL, f"pocket:command:{command_id}")


def check_amount(amount: object) -> Decimal:
    """Returns the amount with two places, or raises InvalidAmount."""
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        msg = "Amount must be a Decimal (or an int), never a float or a string."
        raise InvalidAmount(msg)
    value = Decimal(amount)
    if not value.is_finite():
        raise InvalidAmount("Amount must be a finite number.")
    if value <= 0:
        raise InvalidAmount("Amount must be greater than zero.")
    if value > MAX_AMOUNT:
        raise InvalidAmount(f"Amount must be at most {MAX_AMOUNT}.")
    if value != value.quantize(CENT):
        raise InvalidAmount("Amount must have at most 2 decimal places.")
    return value.quantize(CENT)


# The characters a text (a name, a source, a destination, a description) may
# not hold, by Unicode category. Control characters (NUL above all) and lone
# surrogates cannot be stored faithfully as text in every database. Format
# characters are invisible, and some reorder what is shown around them (the
# bidirectional overrides, embeddings, isolates and marks): with them a name
# shows as another (U+202E and "nimda" shows "admin"), or two names that differ
# look the same. Line and paragraph separators break the line a text is shown on.
REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Cf": "an invisible formatting character (such as a bidirectional control "
    "or a zero-width space), with which a text can show as another",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
# Letters that are drawn as blank space, another way to look like nothing.
BLANK_LETTERS = dict.fromkeys(
    "\u115f\u1160\u3164\uffa0", "a letter that shows as blank"
)


def refused_character(char: str) -> str | None:
    """Why a text may not hold this character, or None when it may."""
    return BLANK_LETTERS.get(char) or REFUSED_CATEGORIES.get(unicodedata.category(char))


def check_text(field: str, value: object) -> str:
    """Returns a valid source, destination, name or description, or raises
    InvalidText."""
    if not isinstance(value, str):
        raise InvalidText(field, "must be a string.")
    if not value.strip():
        raise InvalidText(field, "must not be empty.")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidText(field, f"must be at most {MAX_TEXT_LENGTH} characters.")
    for char in value:
        why = refused_character(char)
        if why is not None:
            raise InvalidText(field, f"must not contain {code_point(char)}, {why}.")
    return value


def code_point(char: str) -> str:
    """A character as a person can find it: U+202E (RIGHT-TO-LEFT OVERRIDE)."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")
