"""Every error Pocket raises for a caller to hear of: its rules' refusals, what
was not found, keys used wrongly. Plain exceptions with no HTTP in them: the web
layer answers each in one table (pocket.web.errors), from which the OpenAPI
document's error responses and the docs' errors table are built or checked."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID


class PocketError(Exception):
    """Base class for the errors a caller hears of (any other is a fault of ours)."""

    # The input a validation error is about, where the rule knows it.
    field: str | None = None


class InvalidAmount(PocketError, ValueError):
    """The amount breaks the money rules."""

    field = "amount"


class InvalidText(PocketError, ValueError):
    """A text field (source, destination, name) breaks the text rules."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field.capitalize()} {problem}")
        self.field = field


class InsufficientFunds(PocketError):
    """Drawing, sending or holding would take the available amount below zero
    (the balance, less what open holds reserve, plus any credit limit)."""

    def __init__(
        self,
        balance: Decimal,
        amount: Decimal,
        *,
        held: Decimal = Decimal("0.00"),
        credit_limit: Decimal = Decimal("0.00"),
    ) -> None:
        available = balance - held + credit_limit
        if held or credit_limit:
            parts = [f"the balance {balance:.2f}"]
            if held:
                parts.append(f"less {held:.2f} held")
            if credit_limit:
                parts.append(f"plus a credit limit of {credit_limit:.2f}")
            message = (
                f"Insufficient funds: {available:.2f} is available "
                f"({', '.join(parts)}), {amount:.2f} was asked for."
            )
        else:
            message = (
                f"Insufficient funds: the balance is {balance:.2f}, "
                f"{amount:.2f} was asked for."
            )
        super().__init__(message)
        self.balance = balance
        self.amount = amount
        self.held = held
        self.credit_limit = credit_limit
        self.available = available


class DailyLimitExceeded(PocketError):
    """The wallet's daily spending limit would be passed: draws, outgoing
    transfers and captures of the current UTC day, with its open holds."""

    def __init__(self, limit: Decimal, spent: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"Daily limit exceeded: the wallet may spend {limit:.2f} a day (UTC); "
            f"{spent:.2f} is spent or held today, {amount:.2f} more was asked for."
        )
        self.limit = limit
        self.spent = spent
        self.amount = amount


class HoldNotFound(PocketError, LookupError):
    """The wallet has no hold with this id."""

    def __init__(self, hold_id: object) -> None:
        super().__init__(f"There is no hold {hold_id} on this wallet.")
        self.hold_id = hold_id


class HoldEnded(PocketError):
    """The hold has already ended (captured, voided or expired): it ends once."""

    def __init__(self, hold_id: UUID, status: str, hold: object = None) -> None:
        super().__init__(
            f"The hold {hold_id} is already {status}: a hold ends only once."
        )
        self.hold_id = hold_id
        self.status = status
        # The hold as it ended (a pocket.results.HoldInfo), where it is known.
        self.hold = hold


class CaptureExceedsHold(PocketError):
    """A capture may take at most the amount held."""

    def __init__(self, held: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"A capture may take at most the {held:.2f} held; "
            f"{amount:.2f} was asked for."
        )
        self.held = held
        self.amount = amount


class HoldNotDue(PocketError):
    """A hold expires only once its time has come."""

    def __init__(self, hold_id: UUID, expires_at: object) -> None:
        super().__init__(f"The hold {hold_id} expires at {expires_at}, not before.")
        self.hold_id = hold_id


class HoldsOpen(PocketError):
    """A wallet with open holds cannot be closed."""

    def __init__(self, held: Decimal) -> None:
        super().__init__(
            f"The wallet has {held:.2f} in open holds: capture or void them "
            "before closing it."
        )
        self.held = held


class InvalidExpiry(PocketError, ValueError):
    """A hold's expiry is missing, in the past, or beyond the maximum."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


class InvalidLimit(PocketError, ValueError):
    """A limit breaks the money rules (it may be zero)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


class WalletClosed(PocketError):
    """The wallet is closed: no money goes in or out."""

    def __init__(self, wallet_id: UUID, user_id: str = "", role: str = "") -> None:
        which = f"The {role} wallet" if role else "The wallet"
        owner = f", user {user_id}'s," if user_id else ""
        super().__init__(f"{which}{owner} is closed: no money goes in or out of it.")
        self.wallet_id = wallet_id
        self.user_id = user_id
        self.role = role


class WalletNotEmpty(PocketError):
    """Only an empty wallet can be closed."""

    def __init__(self, balance: Decimal) -> None:
        super().__init__(
            f"Only an empty wallet can be closed; this one holds {balance:.2f}."
        )
        self.balance = balance


class SameWallet(PocketError, ValueError):
    """A transfer must go to another wallet."""

    def __init__(self, wallet_id: UUID) -> None:
        super().__init__("A transfer must go to another wallet.")
        self.wallet_id = wallet_id


class ConcurrencyConflict(PocketError):
    """Other writers kept changing the wallet; the command was not applied."""


class WalletNotFound(PocketError, LookupError):
    """No wallet has this id."""

    def __init__(self, wallet_id: UUID) -> None:
        super().__init__(f"There is no wallet {wallet_id}.")
        self.wallet_id = wallet_id


class VersionNotFound(PocketError, LookupError):
    """The wallet had no such version (or did not exist at that moment)."""

    def __init__(self, wallet_id: UUID, version: int) -> None:
        super().__init__(f"Wallet {wallet_id} has no version {version}.")
        self.wallet_id = wallet_id
        self.version = version


class WalletAlreadyExists(PocketError):
    """A wallet with this id was already created."""


class IdempotencyKeyReused(PocketError, ValueError):
    """The command id was already used for a different command."""


class CommandInFlight(PocketError):
    """A command with this id is running right now; its result is not known yet."""


class UserNotFound(PocketError, LookupError):
    """No user has this id (or none the caller may see)."""

    def __init__(self, user_id: object) -> None:
        super().__init__(self.describe(user_id))
        self.user_id = user_id

    @staticmethod
    def describe(user_id: object) -> str:
        """The message, naming the user asked for."""
        return f"There is no user {user_id}."


class TokenRevoked(PocketError):
    """The token presented was replaced before the request could use it (to move
    money, or to replace the token itself)."""


class RecipientNotFound(UserNotFound):
    """A transfer names a user who does not exist."""

    @staticmethod
    def describe(user_id: object) -> str:
        """The message, naming the user the money was for."""
        return f"There is no user {user_id} to send money to."


class WebhookNotFound(PocketError, LookupError):
    """No webhook subscription has this id."""


class InvalidWebhook(PocketError, ValueError):
    """A field of a webhook subscription is not acceptable."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
