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
    """Drawing would take the wallet below zero."""

    def __init__(self, balance: Decimal, amount: Decimal) -> None:
        super().__init__(
            f"Insufficient funds: the balance is {balance:.2f}, "
            f"{amount:.2f} was asked for."
        )
        self.balance = balance
        self.amount = amount


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
