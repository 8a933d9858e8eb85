"""The wallet aggregate: its events, its rules, and the errors those rules raise."""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from uuid import UUID

from eventsourcing.domain import Aggregate, event

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
MAX_AMOUNT = Decimal("1000000000.00")
MAX_LABEL_LENGTH = 255


class Wallet(Aggregate):
    """A user's wallet: money in, money out, never below zero."""

    class Created(Aggregate.Created):
        """The wallet was opened for a user."""

        user_id: str

    class MoneyAdded(Aggregate.Event):
        """Money came in; balance is what the wallet held afterwards."""

        amount: Decimal
        source: str
        balance: Decimal

    class MoneyDrawn(Aggregate.Event):
        """Money went out; balance is what the wallet held afterwards."""

        amount: Decimal
        destination: str
        balance: Decimal

    @event(Created)
    def __init__(self, user_id: str, id: UUID) -> None:
        # Naming id here lets the caller choose it (the library sets it itself).
        self.user_id = user_id
        self.balance = ZERO

    def add_money(self, amount: Decimal, source: str) -> None:
        """Puts money into the wallet from a named source."""
        amount = check_amount(amount)
        source = check_text("source", source)
        self._money_added(amount=amount, source=source, balance=self.balance + amount)

    def draw_money(self, amount: Decimal, destination: str) -> None:
        """Takes money out of the wallet to a named destination."""
        amount = check_amount(amount)
        destination = check_text("destination", destination)
        if amount > self.balance:
            raise InsufficientFunds(balance=self.balance, amount=amount)
        self._money_drawn(
            amount=amount, destination=destination, balance=self.balance - amount
        )

    # Each money event records the balance it leaves behind, so a page of history
    # can show running balances without replaying everything before it.
    @event(MoneyAdded)
    def _money_added(self, amount: Decimal, source: str, balance: Decimal) -> None:
        self.balance = balance

    @event(MoneyDrawn)
    def _money_drawn(self, amount: Decimal, destination: str, balance: Decimal) -> None:
        self.balance = balance


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


def check_text(field: str, value: object) -> str:
    """Returns a valid source, destination or name, or raises InvalidText."""
    if not isinstance(value, str):
        raise InvalidText(field, "must be a string.")
    if not value.strip():
        raise InvalidText(field, "must not be empty.")
    if len(value) > MAX_LABEL_LENGTH:
        raise InvalidText(field, f"must be at most {MAX_LABEL_LENGTH} characters.")
    # Control characters (NUL above all) and lone surrogates cannot be stored
    # faithfully as text in every database, so they are refused at the door.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidText(field, "must not contain control characters.")
    return value


class PocketError(Exception):
    """Base class for the errors Pocket's rules raise."""


class InvalidAmount(PocketError, ValueError):
    """The amount breaks the money rules."""


class InvalidText(PocketError, ValueError):
    """A text field (source, destination, name) breaks the text rules."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field.capitalize()} {problem}")
        self.field = field


class InsufficientFunds(PocketError):
    """Drawing would take the wallet below zero."""

    def __init__(self, balance: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"Insufficient funds: the balance is {balance:.2f}, "
            f"{amount:.2f} was asked for."
        )
        self.balance = balance
        self.amount = amount
