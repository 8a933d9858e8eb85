"""The wallet aggregate: its events and its rules (whose refusals are declared,
with every error a caller hears of, in pocket.errors)."""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from pocket.errors import (
    InsufficientFunds,
    InvalidAmount,
    InvalidText,
    SameWallet,
    WalletClosed,
    WalletNotEmpty,
)

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_AMOUNT = Decimal("1000000000.00")
MAX_TEXT_LENGTH = 255


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
    """A user's wallet: money in, money out, never below zero, closed for good."""

    class_version = 2

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

    @event(Created)
    def __init__(
        self, user_id: str, id: UUID, actor: str | None, correlation_id: str | None
    ) -> None:
        # Naming id here lets the caller choose it (the library sets it itself).
        self.user_id = user_id
        self.balance = ZERO
        self.closed = False

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """Snapshots taken before wallets could close were of open wallets."""
        state["closed"] = False

    @classmethod
    def open(cls, user_id: str, wallet_id: UUID, cause: Cause) -> Wallet:
        """Opens an empty wallet for a user."""
        return cls(
            user_id=check_text("user_id", user_id),
            id=wallet_id,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

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

    def draw_money(self, amount: Decimal, destination: str, cause: Cause) -> None:
        """Takes money out of the wallet to a named destination."""
        amount = check_amount(amount)
        destination = check_text("destination", destination)
        self.check_open()
        self.check_funds(amount)
        self._money_drawn(
            amount=amount,
            destination=destination,
            balance=self.balance - amount,
            actor=cause.actor,
            correlation_id=cause.correlation_id,
        )

    def close(self, cause: Cause) -> None:
        """Closes an empty wallet for good; its history stays readable."""
        self.check_open()
        if self.balance != ZERO:
            raise WalletNotEmpty(self.balance)
        self._closed(actor=cause.actor, correlation_id=cause.correlation_id)

    def check_open(self, role: str = "") -> None:
        """Raises WalletClosed if the wallet takes no more money; role says which
        side of a transfer it is ("sending", "receiving")."""
        if self.closed:
            raise WalletClosed(self.id, self.user_id, role)

    def check_funds(self, amount: Decimal) -> None:
        """Raises InsufficientFunds if drawing amount would go below zero."""
        if amount > self.balance:
            raise InsufficientFunds(balance=self.balance, amount=amount)

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

    @event(MoneyDrawn)
    def _money_drawn(
        self,
        amount: Decimal,
        destination: str,
        balance: Decimal,
        actor: str,
        correlation_id: str,
    ) -> None:
        self.balance = balance

    @event(TransferSent)
    def _transfer_sent(
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


def transfer(
    sender: Wallet,
    receiver: Wallet,
    *,
    amount: Decimal,
    description: str,
    transfer_id: UUID,
    cause: Cause,
) -> None:
    """Moves money from one wallet to another: both sides, or neither."""
    amount = check_amount(amount)
    if description:
        description = check_text("description", description)
    if sender.id == receiver.id:
        raise SameWallet(sender.id)
    sender.check_open("sending")
    receiver.check_open("receiving")
    sender.check_funds(amount)
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
