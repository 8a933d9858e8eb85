"""The user-level operations the HTTP API and the CLI share: users and their
wallets, tokens, money. Built by pocket.bootstrap."""

from __future__ import annotations

import contextlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from pocket.application import HistoryPage, HoldInfo, WalletInfo
from pocket.catalog import ProjectionCatalog, live_records
from pocket.commands import OpenWallet, new_cause
from pocket.config import Settings
from pocket.database import Database
from pocket.domainmodel import Cause, check_text
from pocket.errors import (
    HoldNotFound,
    RecipientNotFound,
    TokenRevoked,
    UserNotFound,
    VersionNotFound,
    WalletAlreadyExists,
)
from pocket.gate import DatabaseGate
from pocket.guards import TokenGuard
from pocket.reads import Reads
from pocket.runner import PocketRunner
from pocket.tokens import TokenCache, hash_token, new_token
from pocket.users import User, UserStore
from pocket.walletrecords import WalletRecord
from pocket.writes import commit_waits, writes_report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    """A user and their wallet, as the API shows them."""

    user: User
    wallet: WalletInfo


@dataclass(frozen=True)
class Principal:
    """Who is making a request: one user, or the operator (admin)."""

    user_id: int | None
    # The user's row, as read when their token was checked (None for the admin).
    user: User | None = None
    # The hash of the token the user presented (None for the admin).
    token_hash: str | None = None

    @property
    def is_admin(self) -> bool:
        """True for the operator."""
        return self.user_id is None

    @property
    def actor(self) -> str:
        """How events name this principal."""
        return "admin" if self.user_id is None else f"user:{self.user_id}"

    @property
    def guard(self) -> TokenGuard | None:
        """What a command sent by this principal needs to still hold when it
        commits: the user's token still theirs (None for the admin)."""
        if self.user_id is None or self.token_hash is None:
            return None
        return TokenGuard(self.user_id, self.token_hash)

    def may_act_for(self, user_id: int) -> bool:
        """Whether this principal may touch that user's wallet."""
        return self.is_admin or self.user_id == user_id


ADMIN = Principal(user_id=None)


class PocketService:
    """Users and their wallets: Pocket, the users table, the projection, tokens."""

    def __init__(
        self,
        settings: Settings,
        *,
        runner: PocketRunner,
        users: UserStore,
        catalog: ProjectionCatalog,
        gate: DatabaseGate,
        tokens: TokenCache,
        admin_token_hash: str | None = None,
        reads: Reads | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner
        self.pocket = runner.pocket
        self.users = users
        self.catalog = catalog
        self.gate = gate
        self.tokens = tokens
        self.admin_token_hash = admin_token_hash
        # Where the reads that may be a little stale go (POCKET_READ_URL).
        self.reads = Reads(users.db) if reads is None else reads

    def close(self) -> None:
        """Stops the followers (after the batch in hand) and closes the pools."""
        self.runner.stop()
        self.reads.close()

    def check_database(self) -> None:
        """Raises, as a request would meet it, unless the database answers now."""
        self.gate.check()
        self.users.db.query("SELECT 1 AS ok")

    def writes(self) -> dict[str, Any]:
        """Whether writes are being confirmed now, and if not, since when and
        why (pocket.writes)."""
        waits = commit_waits(self.users.db)
        return writes_report(self.pocket.writes_health, waits)

    # Who is asking

    def authenticate(self, token: str, *, for_change: bool = False) -> Principal | None:
        """The principal a bearer token stands for, or None if it stands for nobody.

        A user's token may come from the cache (pocket.tokens): a read may trust
        a token checked a moment ago; a change (for_change) one checked longer
        ago, because it is made only if the token is still the user's when it
        commits (the principal's guard, checked in the command's transaction; a
        new token replaces the old one only if that is still the user's), so a
        token revoked through another process moves no money there.
        """
        token_hash = hash_token(token)
        # Hashes of equal length, compared in constant time.
        if self.admin_token_hash is not None and hmac.compare_digest(
            token_hash, self.admin_token_hash
        ):
            return ADMIN
        user = self.tokens.get(token_hash, for_change=for_change)
        if user is None:
            generation = self.tokens.generation
            user = self.users.find_by_token_hash(token_hash)
            if user is None:
                return None
            self.tokens.put(token_hash, user, generation)
        return Principal(user.id, user, token_hash)

    def issue_token(self, user_id: int, *, replacing: str | None = None) -> str:
        """Gives the user a new API token; the old one stops working.

        replacing is the hash of the token the user presented: the new token is
        issued only if that is still their token, so a stolen token that was
        revoked cannot take the wallet back. The admin replaces any token.
        """
        self.users.get(user_id)
        token = new_token()
        replaced = self.users.replace_token_hash(
            user_id, hash_token(token), replacing=replacing
        )
        self.tokens.forget(user_id)
        if not replaced:
            raise TokenRevoked(user_id)
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

    def get_account(self, user: User | int) -> Account:
        """A user and their wallet as the event store has it now (a wallet a
        crash left unopened reads as empty: a read never writes)."""
        user = self.users.get(user) if isinstance(user, int) else user
        if not user.wallet_opened:
            return Account(user, unopened_wallet(user))
        return Account(user, self.pocket.get_wallet(user.wallet_id))

    def user(self, user: User | int) -> User:
        """A user (by id, or as already read), their wallet surely opened: for a
        command, which opens a wallet a crash left unopened before it moves
        money (reads do not: see get_account)."""
        if isinstance(user, int):
            user = self.users.get(user)
        if not user.wallet_opened:
            self._open_wallet(user)
            user = self.users.get(user.id)
        return user

    def reader(self, user: User | int) -> User:
        """A user (by id, or as already read), for a read of their wallet's past:
        a wallet a crash left unopened has none (VersionNotFound, no entries)."""
        return self.users.get(user) if isinstance(user, int) else user

    def list_accounts(
        self, after: int, limit: int
    ) -> list[tuple[User, WalletRecord | None]]:
        """A page of users with their wallets as the projection has them, from
        the read server while it keeps up (pocket.reads): it may lag a little."""

        def page(db: Database) -> list[tuple[User, WalletRecord | None]]:
            users = UserStore(db).page(after, limit)
            records = live_records(db, [user.wallet_id for user in users])
            return [(user, records.get(user.wallet_id)) for user in users]

        return self.reads.run(page)

    def wallet_as_of(
        self, user: User | int, *, version: int | None, at: datetime | None
    ) -> Account:
        """A user's wallet as it was at a version or a moment."""
        user = self.reader(user)
        if not user.wallet_opened:
            raise VersionNotFound(user.wallet_id, version or 0)
        wallet = self.pocket.get_wallet(user.wallet_id, version=version, at=at)
        return Account(user, wallet)

    def history(
        self, user: User | int, after: int, limit: int, *, newest_first: bool = False
    ) -> HistoryPage:
        """A page of a user's transactions, oldest first or newest first, from
        where the previous page ended (after is its last entry's position; 0
        for the first page)."""
        user = self.reader(user)
        if not user.wallet_opened:
            return HistoryPage(unopened_wallet(user), [], has_more=False)
        return self.pocket.history(
            user.wallet_id, after=after, limit=limit, newest_first=newest_first
        )

    def open_holds(self, user: User | int) -> list[HoldInfo]:
        """A user's open holds, soonest to expire first."""
        user = self.reader(user)
        if not user.wallet_opened:
            return []
        return self.pocket.open_holds(user.wallet_id)

    def hold(self, user: User | int, hold_id: UUID) -> HoldInfo:
        """One of a user's holds, open or ended (HoldNotFound if their wallet
        has none by that id)."""
        user = self.reader(user)
        if not user.wallet_opened:
            raise HoldNotFound(hold_id)
        return self.pocket.hold(user.wallet_id, hold_id)

    def recipient(self, user_id: int) -> User:
        """The user a transfer (or a hold) is for, their wallet surely opened."""
        try:
            return self.user(user_id)
        except UserNotFound:
            raise RecipientNotFound(user_id) from None

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
        opening = OpenWallet(
            user_id=str(user.id), wallet_id=user.wallet_id, cause=cause or new_cause()
        )
        with contextlib.suppress(WalletAlreadyExists):
            self.pocket.open_wallet(opening)
        self.users.mark_wallet_opened(user.id)
        return self.pocket.get_wallet(user.wallet_id)


def unopened_wallet(user: User) -> WalletInfo:
    """The wallet of a user whose sign-up a crash interrupted before it opened
    it: empty, and at version 0 (its first command opens it)."""
    return WalletInfo(
        aggregate_id=user.wallet_id,
        user_id=str(user.id),
        balance=Decimal("0.00"),
        version=0,
        closed=False,
        modified_on=user.created_at,
    )
