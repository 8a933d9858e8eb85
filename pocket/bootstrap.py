"""The composition root: opens the stores, creates the tables, starts the
threads, and hands each part what it needs. Nothing else in Pocket does input or
output when it is constructed."""

from __future__ import annotations

import time

from eventsourcing.persistence import IntegrityError

from pocket.application import Pocket
from pocket.broker import system_for
from pocket.catalog import ProjectionCatalog
from pocket.config import Settings
from pocket.database import Database
from pocket.gate import DatabaseGate, database_probe
from pocket.locks import ProcessLock, process_lock
from pocket.reads import Reads
from pocket.runner import follower_lock_name, open_runner
from pocket.service import PocketService
from pocket.system import writer
from pocket.tokens import TokenCache, hash_token
from pocket.users import UserStore
from pocket.verifications import VerificationLog
from pocket.walletrecords import table_of
from pocket.webhook_store import create_tables as create_webhook_tables


def bootstrap(settings: Settings, *, follow: bool = False) -> PocketService:
    """The service the API and the CLI use: the system (with the projector's
    followers, or Pocket alone), the users table, the projection catalogue,
    the 503 gate and the token cache; the followers started."""
    runner = open_runner(
        system_for(settings.env) if follow else writer, dict(settings.env)
    )
    try:
        pocket = runner.pocket
        users = UserStore(Database.of(pocket))
        users.create_table()
        VerificationLog(users.db).create_table()
        with users.db.transaction() as tx:
            create_webhook_tables(tx)
        admin = settings.admin_token
        service = PocketService(
            settings,
            runner=runner,
            users=users,
            catalog=open_catalog(pocket),
            gate=DatabaseGate(database_probe(pocket)),
            tokens=TokenCache(settings.token_cache_seconds),
            admin_token_hash=None if admin is None else hash_token(admin),
            reads=Reads.open(settings, users.db),
        )
        service.open_pending_wallets()
        runner.start()
    except BaseException:
        runner.stop()
        raise
    return service


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
