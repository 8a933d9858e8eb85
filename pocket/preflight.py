"""Before a command touches the database: can it be used, and does it hold Pocket?

The library's connection pool reports any failure to connect as "couldn't get a
connection after 3.00 sec"; an operator needs PostgreSQL's own reason, and needs
to know whether waiting helps (the server is down or starting) or not (the
database or role does not exist, the password is wrong, a connection pooler
shares server processes between clients in a way Pocket cannot work with).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import psycopg

from pocket.config import Settings
from pocket.pooling import PoolerProblem, ProbeTimedOut, check_sessions
from pocket.postgres_pool import POSTGRES_DEFAULTS, libpq_options

# What PostgreSQL says when it is there but cannot take connections yet (or any
# more): waiting helps. Every other refusal from the server is for good.
PASSING_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)


class DatabaseProblem(Exception):
    """The database cannot be used; the message says why, in one line."""


class DatabaseRefused(DatabaseProblem):
    """The server answered and refused for good (no such database or role, a
    wrong password): waiting will not help."""


class DatabaseDown(DatabaseProblem):
    """The server cannot be reached now (down, starting, unreachable)."""


class NoPocketHere(DatabaseProblem):
    """The database exists but holds no Pocket tables."""


class PoolerRefused(DatabaseRefused):
    """The connection goes through a connection pooler whose mode Pocket cannot
    work with (pocket.pooling)."""


# How long the check that connections keep their server process may wait for
# an answer (a pooler in session mode with a full pool makes it wait).
SESSIONS_CHECK_SECONDS = 5.0


def check_database(
    settings: Settings, *, must_hold_pocket: bool = False, may_be_old: bool = False
) -> None:
    """Raises a DatabaseProblem saying why the database cannot be used.

    With must_hold_pocket (for operator commands: status, verify, migrate;
    and follow on SQLite, where a missing file means the wrong folder), a
    database without Pocket's events is a problem too, and nothing is created
    to find that out; and one without the projection catalogue (made by
    Pocket versions before it existed) unless may_be_old.
    """
    if settings.is_postgres:
        check_postgres(settings, must_hold_pocket, may_be_old)
    elif settings.is_sqlite:
        path = Path(settings.env["SQLITE_DBNAME"])
        check_sqlite(settings, path, must_hold_pocket, may_be_old)


def check_postgres(
    settings: Settings, must_hold_pocket: bool, may_be_old: bool
) -> None:
    """Connects as the library would, and reports PostgreSQL's reason; makes
    sure the connections keep their server process (pocket.pooling)."""
    env = {**POSTGRES_DEFAULTS, **os.environ, **settings.env}
    schema = env.get("POSTGRES_SCHEMA", "").strip() or "public"

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(
            autocommit=True,
            dbname=env.get("POSTGRES_DBNAME", ""),
            host=env.get("POSTGRES_HOST", ""),
            port=env.get("POSTGRES_PORT", "5432"),
            user=env.get("POSTGRES_USER", ""),
            password=env.get("POSTGRES_PASSWORD", ""),
            # The pool's: each server of a multi-host URL in turn, for the
            # primary when target_session_attrs says so.
            **libpq_options(env),
        )

    try:
        check_sessions(connect, SESSIONS_CHECK_SECONDS)
        if not must_hold_pocket:
            return
        with connect() as conn:
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                [f'"{schema}".pocket_events', f'"{schema}".pocket_projections'],
            ).fetchone()
    except PoolerProblem as problem:
        raise PoolerRefused(f"{settings.description} {problem}") from None
    except ProbeTimedOut:
        msg = (
            f"{settings.description} left a second connection without an answer "
            f"for {SESSIONS_CHECK_SECONDS:g}s (a connection pooler whose pool "
            "is full?)"
        )
        raise DatabaseDown(msg) from None
    except psycopg.Error as error:
        reason = one_line(str(error).removeprefix("connection failed: "))
        if "FATAL" in reason and not any(p in reason for p in PASSING_REFUSALS):
            raise DatabaseRefused(reason) from None
        raise DatabaseDown(reason) from None
    assert row is not None
    has_events, has_catalog = row
    check_tables(settings, has_events, has_catalog or may_be_old)


def check_tables(settings: Settings, has_events: bool, has_catalog: bool) -> None:
    """Raises NoPocketHere unless a database has Pocket's tables."""
    if not has_events:
        msg = f"{settings.description} holds no Pocket tables"
        raise NoPocketHere(msg)
    if not has_catalog:
        msg = (
            f"{settings.description} was last run by an older Pocket: start "
            "pocket serve or pocket follow once to bring its tables up to date"
        )
        raise NoPocketHere(msg)


def check_sqlite(
    settings: Settings, path: Path, must_hold_pocket: bool, may_be_old: bool
) -> None:
    """The file (or, for a new one, its folder) is there; without creating it."""
    if not must_hold_pocket:
        if not path.parent.is_dir():
            msg = f"Cannot create {path}: {path.parent} is not a folder"
            raise DatabaseRefused(msg)
        return
    if not path.is_file():
        msg = (
            f"No Pocket database at {path} (SQLite): there is no such file (pocket "
            "serve makes it; run this in its folder or set POCKET_DATABASE_URL)"
        )
        raise NoPocketHere(msg)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('stored_events', 'pocket_projections')"
            ).fetchall()
    except sqlite3.Error as error:
        msg = f"Cannot read {path}: {error}"
        raise DatabaseRefused(msg) from None
    names = {name for (name,) in rows}
    has_catalog = "pocket_projections" in names or may_be_old
    check_tables(settings, "stored_events" in names, has_catalog)


def one_line(text: object) -> str:
    """A message of several lines (libpq's hints) as one."""
    return " ".join(str(text).split())
