"""The composition root: builds Pocket, its tables and its follower from settings,
and offers the user-level operations the HTTP API and the CLI share."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import IntegrityError

from pocket.application import (
    Pocket,
    Transaction,
    WalletAlreadyExists,
    WalletInfo,
)
from pocket.config import Settings
from pocket.database import Database
from pocket.domainmodel import check_text
from pocket.system import (
    ProjectionFollower,
    ThreadedRunner,
    WalletProjection,
    WalletRecordsView,
)
from pocket.users import User, UserStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    """A user and their wallet, as the API shows them."""

    user: User
    wallet: WalletInfo


def open_pocket(settings: Settings) -> Pocket:
    """Constructs the application, creating the library's tables if needed."""
    attempts = 5
    for attempt in range(attempts):
        try:
            return Pocket(env=dict(settings.env))
        except IntegrityError:
            # Two processes creating the library's tables on an empty PostgreSQL
            # database at the same moment collide on pg_type; the loser retries.
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError  # pragma: no cover


def open_view(pocket: Pocket) -> WalletRecordsView:
    """The wallet_records view on Pocket's database, its tables created."""
    view = WalletRecordsView(Database.of(pocket))
    view.create_table()
    return view


def build_follower(settings: Settings) -> ProjectionFollower:
    """A follower of Pocket's log for the wallet_records projection."""
    pocket = open_pocket(settings)
    return ProjectionFollower(pocket, WalletProjection(open_view(pocket)))


class PocketService:
    """Pocket, the users table and (optionally) an in-process follower."""

    def __init__(self, settings: Settings, *, follow: bool = False) -> None:
        self.settings = settings
        self.pocket = open_pocket(settings)
        self.users = UserStore(Database.of(self.pocket))
        self.users.create_table()
        self.view = open_view(self.pocket)
        self.runner: ThreadedRunner | None = None
        self.open_pending_wallets()
        if follow:
            follower = ProjectionFollower(self.pocket, WalletProjection(self.view))
            self.runner = ThreadedRunner(follower)
            self.runner.start()

    def close(self) -> None:
        """Stops the follower (after its batch in hand) and closes the pool."""
        if self.runner is not None:
            self.runner.stop()
        self.pocket.close()

    def create_user(self, name: str) -> Account:
        """Adds a user and opens their wallet."""
        user = self.users.create(check_text("name", name), wallet_id=uuid4())
        return Account(user, self._open_wallet(user))

    def get_account(self, user_id: int) -> Account:
        """A user and their wallet as the event store has it now."""
        user = self.users.get(user_id)
        if not user.wallet_opened:
            return Account(user, self._open_wallet(user))
        return Account(user, self.pocket.get_wallet(user.wallet_id))

    def add_money(self, user_id: int, amount: Decimal, source: str) -> Account:
        """Puts money into a user's wallet."""
        user = self.get_account(user_id).user
        return Account(user, self.pocket.add_money(user.wallet_id, amount, source))

    def draw_money(self, user_id: int, amount: Decimal, destination: str) -> Account:
        """Takes money out of a user's wallet, never below zero."""
        user = self.get_account(user_id).user
        wallet = self.pocket.draw_money(user.wallet_id, amount, destination)
        return Account(user, wallet)

    def transactions(self, user_id: int) -> tuple[WalletInfo, list[Transaction]]:
        """A user's balance and the money movements that explain it."""
        account = self.get_account(user_id)
        wallet_id = account.wallet.aggregate_id
        return account.wallet, self.pocket.transactions(wallet_id)

    def open_pending_wallets(self) -> int:
        """Opens the wallets a crash left unopened; returns how many."""
        pending = self.users.pending_wallets()
        for user in pending:
            self._open_wallet(user)
        if pending:
            log.info(
                "Opened %d wallet(s) left pending by an earlier failure", len(pending)
            )
        return len(pending)

    def _open_wallet(self, user: User) -> WalletInfo:
        # Already there if a crash came between opening it and marking it.
        with contextlib.suppress(WalletAlreadyExists):
            self.pocket.create_wallet(str(user.id), wallet_id=user.wallet_id)
        self.users.mark_wallet_opened(user.id)
        return self.pocket.get_wallet(user.wallet_id)
