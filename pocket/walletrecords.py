"""What the wallet_records projection holds: its versions, its rows, and what a
batch of events does to them. No input or output: the projector (system.py) folds
events into WalletChanges, and each database's recorder applies them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, PersistenceError

from pocket.domainmodel import CENT, ZERO, Wallet

PROJECTION = "wallet_records"
# The versions of wallet_records this code can build and follow, with the
# columns readers see. Version 2 added closed (wallets can close); version 3
# held (what the open holds in the log reserve), available (balance - held +
# credit_limit) and credit_limit. To change the table: describe the new
# version here and in system.py, and run pocket migrate.
COLUMNS: dict[int, str] = {
    1: "aggregate_id, user_id, balance, version",
    2: "aggregate_id, user_id, balance, version, closed",
    3: "aggregate_id, user_id, balance, version, closed, held, available, credit_limit",
}
LATEST_VERSION = max(COLUMNS)
TABLE_NAME = re.compile(rf"{PROJECTION}_v(\d+)")


def table_of(version: int) -> str:
    """The table that holds one version's rows (and names its projector)."""
    return f"{PROJECTION}_v{version}"


def version_of(table: str) -> int | None:
    """The version whose rows a table holds, or None if it holds none."""
    match = TABLE_NAME.fullmatch(table)
    return int(match.group(1)) if match and int(match.group(1)) in COLUMNS else None


def has_closed(version: int) -> bool:
    """Whether a version's rows say if the wallet is closed."""
    return "closed" in COLUMNS[version]


def has_holds(version: int) -> bool:
    """Whether a version's rows keep held, available and credit_limit."""
    return "held" in COLUMNS[version]


@dataclass(frozen=True)
class WalletRecord:
    """One row of wallet_records (a column a version lacks is None).

    held is what the holds the log has not seen end reserve: a hold past its
    expiry counts until the hold-expiry follower records its end."""

    aggregate_id: UUID
    user_id: str
    balance: Decimal
    version: int
    closed: bool | None = None
    held: Decimal | None = None
    available: Decimal | None = None
    credit_limit: Decimal | None = None


def record_from_row(row: dict[str, Any]) -> WalletRecord:
    """A WalletRecord from a row of any version, on either database."""
    closed = row.get("closed")
    aggregate_id = row["aggregate_id"]
    return WalletRecord(
        aggregate_id=aggregate_id
        if isinstance(aggregate_id, UUID)
        else UUID(aggregate_id),
        user_id=str(row["user_id"]),
        balance=money(row["balance"]),
        version=int(row["version"]),
        closed=None if closed is None else bool(closed),
        held=optional_money(row.get("held")),
        available=optional_money(row.get("available")),
        credit_limit=optional_money(row.get("credit_limit")),
    )


def money(value: object) -> Decimal:
    """An amount of a row (numeric on PostgreSQL, text on SQLite)."""
    return Decimal(str(value)).quantize(CENT)


def optional_money(value: object) -> Decimal | None:
    """An amount of a column that some versions lack."""
    return None if value is None else money(value)


@dataclass
class WalletChanges:
    """What a batch of events does to wallet_records, folded per wallet."""

    opened: dict[UUID, tuple[str, int]] = field(default_factory=dict)
    # Every wallet the batch changes: its balance's change and its last version.
    deltas: dict[UUID, tuple[Decimal, int]] = field(default_factory=dict)
    closed: set[UUID] = field(default_factory=set)
    # The change of what open holds reserve, and the last credit limit set
    # (versions with holds apply them; every such wallet is in deltas too).
    held: dict[UUID, Decimal] = field(default_factory=dict)
    credit_limits: dict[UUID, Decimal] = field(default_factory=dict)

    def open(self, wallet_id: UUID, user_id: str, version: int) -> None:
        """A wallet was created."""
        self.opened[wallet_id] = (user_id, version)

    def move(self, wallet_id: UUID, amount: Decimal, version: int) -> None:
        """Money moved in (positive) or out (negative) of a wallet."""
        delta, _ = self.deltas.get(wallet_id, (ZERO, 0))
        self.deltas[wallet_id] = (delta + amount, version)

    def close(self, wallet_id: UUID, version: int) -> None:
        """A wallet was closed."""
        self.move(wallet_id, ZERO, version)
        self.closed.add(wallet_id)

    def hold(self, wallet_id: UUID, amount: Decimal, version: int) -> None:
        """A hold reserved an amount (positive) or ended (negative)."""
        self.move(wallet_id, ZERO, version)
        self.held[wallet_id] = self.held.get(wallet_id, ZERO) + amount

    def limit(self, wallet_id: UUID, credit_limit: Decimal, version: int) -> None:
        """The wallet's credit limit was set."""
        self.move(wallet_id, ZERO, version)
        self.credit_limits[wallet_id] = credit_limit

    def fold(self, event: object) -> None:
        """Adds one event's effect. Every wallet event moves the row's version,
        the ones that move no money too."""
        if isinstance(event, Wallet.Created):
            self.open(event.originator_id, event.user_id, event.originator_version)
        elif isinstance(event, Wallet.MoneyAdded | Wallet.TransferReceived):
            self.move(event.originator_id, event.amount, event.originator_version)
        elif isinstance(event, Wallet.MoneyDrawn | Wallet.TransferSent):
            self.move(event.originator_id, -event.amount, event.originator_version)
        elif isinstance(event, Wallet.Closed):
            self.close(event.originator_id, event.originator_version)
        elif isinstance(event, Wallet.HoldPlaced):
            self.hold(event.originator_id, event.amount, event.originator_version)
        elif isinstance(event, Wallet.HoldCaptured):
            # What it took leaves the wallet; the hold, all of it, ends.
            self.move(event.originator_id, -event.amount, event.originator_version)
            ended = event.amount + event.released
            self.hold(event.originator_id, -ended, event.originator_version)
        elif isinstance(event, Wallet.HoldVoided | Wallet.HoldExpired):
            self.hold(event.originator_id, -event.amount, event.originator_version)
        elif isinstance(event, Wallet.CreditLimitSet):
            self.limit(
                event.originator_id, event.credit_limit, event.originator_version
            )
        elif isinstance(event, WALLET_EVENTS):
            self.move(event.originator_id, ZERO, event.originator_version)


# The wallet events the projector reads: every one, since each moves a wallet's
# version (a test holds this list to Wallet's events).
WALLET_EVENTS = (
    Wallet.Created,
    Wallet.MoneyAdded,
    Wallet.MoneyDrawn,
    Wallet.TransferSent,
    Wallet.TransferReceived,
    Wallet.Closed,
    Wallet.HoldPlaced,
    Wallet.HoldCaptured,
    Wallet.HoldVoided,
    Wallet.HoldExpired,
    Wallet.CreditLimitSet,
    Wallet.DailyLimitSet,
    Wallet.AlertThresholdSet,
)


@dataclass(frozen=True)
class Batch:
    """How a recorder applies a batch: the changes, and the position the batch
    was read after (the compare-and-set that makes it apply exactly once)."""

    changes: WalletChanges
    after: int | None
    # Apply only while this version is the live one (followers); a rebuild by
    # pocket migrate applies to a version that is not live yet.
    live_only: bool


class ProjectionError(PersistenceError):
    """The projection's table disagrees with the events applied to it."""


class ProjectionSwitched(IntegrityError):
    """The live version changed: this version's follower must stand down."""
