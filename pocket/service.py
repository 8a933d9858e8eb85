"""The composition root: builds Pocket, its tables and its follower from settings,
and offers the user-level operations the HTTP API and the CLI share."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import uuid4

from eventsourcing.persistence import IntegrityError

from pocket.application import (
    HistoryPage,
    Pocket,
    TransferInfo,
    WalletAlreadyExists,
    WalletInfo,
)
from pocket.config import Settings
from pocket.database import Database
from pocket.domainmodel import Cause, check_text
from pocket.system import (
    ProjectionFollower,
    ThreadedRunner,
    WalletProjection,
    WalletRecord,
    WalletRecordsView,
)
from pocket.users import User, UserNotFound, UserStore

log = logging.getLogger(__name__)
TOKEN_PREFIX = "pkt_"  # noqa: S105 - a marker that makes leaked tokens findable


@dataclass(frozen=True)
class Account:
    """A user and their wallet, as the API shows them."""

    user: User
    wallet: WalletInfo


@dataclass(frozen=True)
class Principal:
    """Who is making a request: one user, or the operator (admin)."""

    user_id: int | None

    @property
    def is_admin(self) -> bool:
        """True for the operator."""
        return self.user_id is None

    @property
    def actor(self) -> str:
        """How events name this principal."""
        return "admin" if self.user_id is None else f"user:{self.user_id}"

    def may_act_for(self, user_id: int) -> bool:
        """Whether this principal may touch that user's wallet."""
        return self.is_admin or self.user_id == user_id


ADMIN = Principal(user_id=None)


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


def hash_token(token: str) -> str:
    """What is stored of a token: tokens are random, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh API token (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


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

    # Who is asking

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None if it stands for nobody."""
        admin = self.settings.admin_token
        if admin is not None and hmac.compare_digest(
            hash_token(token), hash_token(admin)
        ):
            return ADMIN
        user_id = self.users.find_by_token_hash(hash_token(token))
        return None if user_id is None else Principal(user_id)

    def issue_token(self, user_id: int) -> str:
        """Gives the user a new API token; the old one stops working."""
        self.users.get(user_id)
        token = new_token()
        self.users.set_token_hash(user_id, hash_token(token))
        return token

    # Users and wallets

    def create_user(
        self, name: str, *, correlation_id: str = "", by_admin: bool = False
    ) -> tuple[Account, str]:
        """Adds a user, opens their wallet, and returns their API token (once)."""
        token = new_token()
        user = self.users.create(
            check_text("name", name), wallet_id=uuid4(), token_hash=hash_token(token)
        )
        actor = "admin" if by_admin else f"user:{user.id}"
        wallet = self._open_wallet(user, Cause(actor, correlation_id))
        return Account(user, wallet), token

    def get_account(self, user_id: int) -> Account:
        """A user and their wallet as the event store has it now."""
        user = self.users.get(user_id)
        if not user.wallet_opened:
            return Account(user, self._open_wallet(user))
        return Account(user, self.pocket.get_wallet(user.wallet_id))

    def list_accounts(
        self, after: int, limit: int
    ) -> list[tuple[User, WalletRecord | None]]:
        """A page of users with their wallets as the projection has them."""
        users = self.users.page(after, limit)
        records = self.view.get_many([user.wallet_id for user in users])
        return [(user, records.get(user.wallet_id)) for user in users]

    def wallet_as_of(
        self, user_id: int, *, version: int | None, at: datetime | None
    ) -> Account:
        """A user's wallet as it was at a version or a moment."""
        user = self.get_account(user_id).user
        wallet = self.pocket.get_wallet(user.wallet_id, version=version, at=at)
        return Account(user, wallet)

    def history(self, user_id: int, after: int, limit: int) -> HistoryPage:
        """A page of a user's transactions."""
        user = self.get_account(user_id).user
        return self.pocket.history(user.wallet_id, after=after, limit=limit)

    # Money

    def add_money(
        self,
        user_id: int,
        amount: Decimal,
        source: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Puts money into a user's wallet."""
        user = self.get_account(user_id).user
        wallet = self.pocket.add_money(
            user.wallet_id, amount, source, cause=cause, command_id=command_id
        )
        return Account(user, wallet)

    def draw_money(
        self,
        user_id: int,
        amount: Decimal,
        destination: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Takes money out of a user's wallet, never below zero."""
        user = self.get_account(user_id).user
        wallet = self.pocket.draw_money(
            user.wallet_id, amount, destination, cause=cause, command_id=command_id
        )
        return Account(user, wallet)

    def transfer(
        self,
        user_id: int,
        to_user_id: int,
        amount: Decimal,
        description: str = "",
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> tuple[Account, TransferInfo]:
        """Moves money from one user's wallet to another's, atomically."""
        sender = self.get_account(user_id).user
        try:
            receiver = self.get_account(to_user_id).user
        except UserNotFound:
            raise RecipientNotFound(to_user_id) from None
        result = self.pocket.transfer(
            sender.wallet_id,
            receiver.wallet_id,
            amount,
            description,
            cause=cause,
            command_id=command_id,
        )
        return Account(sender, result.sender), result

    def close_wallet(
        self,
        user_id: int,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Closes a user's empty wallet for good."""
        user = self.get_account(user_id).user
        wallet = self.pocket.close_wallet(
            user.wallet_id, cause=cause, command_id=command_id
        )
        return Account(user, wallet)

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

    def _open_wallet(self, user: User, cause: Cause | None = None) -> WalletInfo:
        # Already there if a crash came between opening it and marking it.
        with contextlib.suppress(WalletAlreadyExists):
            self.pocket.create_wallet(
                str(user.id), wallet_id=user.wallet_id, cause=cause
            )
        self.users.mark_wallet_opened(user.id)
        return self.pocket.get_wallet(user.wallet_id)


class RecipientNotFound(UserNotFound):
    """A transfer names a user who does not exist."""
