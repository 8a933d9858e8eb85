"""The composition root: builds Pocket, its tables and its follower from settings,
and offers the user-level operations the HTTP API and the CLI share."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from http import HTTPStatus
from uuid import uuid4

import psycopg
from eventsourcing.persistence import IntegrityError, OperationalError
from eventsourcing.postgres import PostgresDatastore

from pocket.application import (
    HistoryPage,
    Pocket,
    TransferInfo,
    WalletAlreadyExists,
    WalletInfo,
)
from pocket.catalog import ProjectionCatalog, live_records
from pocket.config import Settings
from pocket.database import Database, connect_kwargs
from pocket.domainmodel import Cause, check_text
from pocket.locks import ProcessLock, process_lock
from pocket.postgres import replace_broken_connections
from pocket.runner import follower_lock_name, open_runner
from pocket.system import system, writer
from pocket.users import TokenRevoked, User, UserNotFound, UserStore
from pocket.walletrecords import WalletRecord, table_of

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


def open_catalog(pocket: Pocket) -> ProjectionCatalog:
    """The projection catalogue on Pocket's database, the live version's tables made."""
    catalog = ProjectionCatalog(Database.of(pocket))
    catalog.ensure()
    return catalog


def named_lock(pocket: Pocket, name: str) -> ProcessLock:
    """A lock that one process at a time holds on this database."""
    db = Database.of(pocket)
    return process_lock(db.datastore, pocket.env.get("SQLITE_DBNAME"), name)


def follower_lock(pocket: Pocket, version: int) -> ProcessLock:
    """The lock the active follower of a version holds; standbys wait for it."""
    return named_lock(pocket, follower_lock_name(table_of(version)))


def hash_token(token: str) -> str:
    """What is stored of a token: tokens are random, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh API token (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class DatabaseUnavailable(OperationalError):
    """The database is known to be down; requests are answered without waiting."""


class DatabaseGate:
    """Lets requests through only while the database answers.

    The first request to meet a dead database trips the gate; from then on the
    API answers 503 at once, without waiting on connection timeouts, while a
    background probe checks every half second and reopens the gate when the
    database is back.
    """

    def __init__(self, probe: Callable[[], None] | None, interval: float = 0.5) -> None:
        self.probe = probe
        self.interval = interval
        self.down = threading.Event()
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raises DatabaseUnavailable while the database is known to be down."""
        if self.down.is_set():
            raise DatabaseUnavailable("The database is unavailable")

    def trip(self) -> None:
        """Marks the database down and starts probing for its return."""
        if self.probe is None:
            return
        with self._lock:
            if self.down.is_set():
                return
            self.down.set()
        log.warning("Database unreachable: answering 503 until it is back")
        threading.Thread(target=self._wait_for_return, daemon=True).start()

    def _wait_for_return(self) -> None:
        assert self.probe is not None
        while True:
            try:
                self.probe()
            except Exception:  # Any failure means: still down.
                time.sleep(self.interval)
                continue
            self.down.clear()
            log.info("Database reachable again: serving")
            return


def database_probe(pocket: Pocket) -> Callable[[], None] | None:
    """A cheap check that the database answers (None for an SQLite file)."""
    datastore = Database.of(pocket).datastore
    if not isinstance(datastore, PostgresDatastore):
        return None
    kwargs = connect_kwargs(datastore)

    def probe() -> None:
        with psycopg.connect(connect_timeout=2, **kwargs) as conn:
            conn.execute("SELECT 1")
        # Back: the pool's connections from before are dead; the next requests
        # must not each find one of them.
        replace_broken_connections(datastore)

    return probe


class TokenCache:
    """Tokens checked in the last few seconds, so a busy client's requests skip
    the lookup. A token replaced through this process stops working at once;
    one replaced through another process, within ttl seconds."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self.entries: dict[str, tuple[float, User]] = {}
        self.lock = threading.Lock()
        # Bumped whenever a token is replaced: a lookup that began before the
        # replacement must not put the old token back.
        self.generation = 0

    def get(self, token_hash: str) -> User | None:
        """The user of a recently checked token, if still fresh."""
        entry = self.entries.get(token_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, token_hash: str, user: User, generation: int) -> None:
        """Remembers a token checked since generation (if nothing was replaced)."""
        if self.ttl <= 0:
            return
        with self.lock:
            if generation != self.generation:
                return
            if len(self.entries) >= self.size:
                self.entries.clear()
            self.entries[token_hash] = (time.monotonic() + self.ttl, user)

    def forget(self, user_id: int) -> None:
        """Forgets a user's tokens (theirs was just replaced)."""
        with self.lock:
            self.generation += 1
            self.entries = {h: e for h, e in self.entries.items() if e[1].id != user_id}


class PocketService:
    """Pocket, the users table and (optionally) an in-process follower."""

    def __init__(self, settings: Settings, *, follow: bool = False) -> None:
        self.settings = settings
        # The system, with the projector's followers, or Pocket alone.
        self.runner = open_runner(system if follow else writer, dict(settings.env))
        self.pocket = self.runner.pocket
        self.users = UserStore(Database.of(self.pocket))
        self.users.create_table()
        self.catalog = open_catalog(self.pocket)
        self.gate = DatabaseGate(database_probe(self.pocket))
        self.tokens = TokenCache(settings.token_cache_seconds)
        admin = settings.admin_token
        self.admin_token_hash = None if admin is None else hash_token(admin)
        self.open_pending_wallets()
        self.runner.start()

    def close(self) -> None:
        """Stops the followers (after the batch in hand) and closes the pools."""
        self.runner.stop()

    # Who is asking

    def authenticate(self, token: str, *, fresh: bool = False) -> Principal | None:
        """The principal a bearer token stands for, or None if it stands for nobody.

        A user's token is looked up in the database when fresh (for anything
        that changes something: a token revoked through another process must
        not move money there), else it may come from the short-lived cache.
        """
        token_hash = hash_token(token)
        # Hashes of equal length, compared in constant time.
        if self.admin_token_hash is not None and hmac.compare_digest(
            token_hash, self.admin_token_hash
        ):
            return ADMIN
        user = None if fresh else self.tokens.get(token_hash)
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
        """A user and their wallet as the event store has it now."""
        user = self.user(user)
        return Account(user, self.pocket.get_wallet(user.wallet_id))

    def user(self, user: User | int) -> User:
        """A user (by id, or as already read), their wallet surely opened."""
        if isinstance(user, int):
            user = self.users.get(user)
        if not user.wallet_opened:
            self._open_wallet(user)
            user = self.users.get(user.id)
        return user

    def list_accounts(
        self, after: int, limit: int
    ) -> list[tuple[User, WalletRecord | None]]:
        """A page of users with their wallets as the projection has them."""
        users = self.users.page(after, limit)
        records = live_records(self.users.db, [user.wallet_id for user in users])
        return [(user, records.get(user.wallet_id)) for user in users]

    def wallet_as_of(
        self, user: User | int, *, version: int | None, at: datetime | None
    ) -> Account:
        """A user's wallet as it was at a version or a moment."""
        user = self.user(user)
        wallet = self.pocket.get_wallet(user.wallet_id, version=version, at=at)
        return Account(user, wallet)

    def history(self, user: User | int, after: int, limit: int) -> HistoryPage:
        """A page of a user's transactions."""
        user = self.user(user)
        return self.pocket.history(user.wallet_id, after=after, limit=limit)

    # Money

    def add_money(
        self,
        user: User | int,
        amount: Decimal,
        source: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Puts money into a user's wallet."""
        user = self.user(user)
        wallet = self.pocket.add_money(
            user.wallet_id, amount, source, cause=cause, command_id=command_id
        )
        return Account(user, wallet)

    def draw_money(
        self,
        user: User | int,
        amount: Decimal,
        destination: str,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Takes money out of a user's wallet, never below zero."""
        user = self.user(user)
        wallet = self.pocket.draw_money(
            user.wallet_id, amount, destination, cause=cause, command_id=command_id
        )
        return Account(user, wallet)

    def transfer(
        self,
        user: User | int,
        to_user_id: int,
        amount: Decimal,
        description: str = "",
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> tuple[Account, TransferInfo]:
        """Moves money from one user's wallet to another's, atomically."""
        sender = self.user(user)
        try:
            receiver = self.user(to_user_id)
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
        user: User | int,
        *,
        cause: Cause | None = None,
        command_id: str | None = None,
    ) -> Account:
        """Closes a user's empty wallet for good."""
        user = self.user(user)
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

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_failed"
    field = "to_user_id"
