"""Before a command touches the database: can it be used, and does it hold Pocket?

The library's connection pool reports any failure to connect as "couldn't get a
connection after 3.00 sec"; an operator needs PostgreSQL's own reason, and needs
to know whether waiting helps (the server is down or starting) or not (the
database or role does not exist, the password is wrong).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import psycopg

from pocket.config import Settings
from pocket.postgres import POSTGRES_DEFAULTS

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


def check_database(settings: Settings, *, must_hold_pocket: bool = False) -> None:
    """Raises a DatabaseProblem saying why the database cannot be used.

    With must_hold_pocket (for commands that only read, like status and
    verify), a database without Pocket's tables is a problem too, and nothing
    is created to find that out.
    """
    if settings.is_postgres:
        check_postgres(settings, must_hold_pocket=must_hold_pocket)
    elif settings.is_sqlite:
        check_sqlite(Path(settings.env["SQLITE_DBNAME"]), must_hold_pocket)


def check_postgres(settings: Settings, *, must_hold_pocket: bool) -> None:
    """Connects once, as the library would, and reports PostgreSQL's reason."""
    env = {**POSTGRES_DEFAULTS, **os.environ, **settings.env}
    try:
        timeout = max(1, round(float(env["POSTGRES_CONNECT_TIMEOUT"])))
    except ValueError:
        timeout = 3
    schema = env.get("POSTGRES_SCHEMA", "").strip() or "public"
    try:
        with psycopg.connect(
            dbname=env.get("POSTGRES_DBNAME", ""),
            host=env.get("POSTGRES_HOST", ""),
            port=env.get("POSTGRES_PORT", "5432"),
            user=env.get("POSTGRES_USER", ""),
            password=env.get("POSTGRES_PASSWORD", ""),
            connect_timeout=timeout,
        ) as conn:
            if not must_hold_pocket:
                return
            row = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                [f'"{schema}".pocket_events', f'"{schema}".pocket_projections'],
            ).fetchone()
    except psycopg.Error as error:
        reason = one_line(str(error).removeprefix("connection failed: "))
        if "FATAL" in reason and not any(p in reason for p in PASSING_REFUSALS):
            raise DatabaseRefused(reason) from None
        raise DatabaseDown(reason) from None
    assert row is not None
    has_events, has_catalog = row
    if not has_events:
        msg = f"{settings.description} holds no Pocket tables"
        raise NoPocketHere(msg)
    if not has_catalog:
        msg = (
            f"{settings.description} was last run by an older Pocket: start "
            "pocket serve or pocket follow once to bring its tables up to date"
        )
        raise NoPocketHere(msg)


def check_sqlite(path: Path, must_hold_pocket: bool) -> None:
    """The file (or, for a new one, its folder) is there; without creating it."""
    if not must_hold_pocket:
        if not path.parent.is_dir():
            msg = f"Cannot create {path}: {path.parent} is not a folder"
            raise DatabaseRefused(msg)
        return
    if not path.is_file():
        msg = f"No Pocket database at {path} (SQLite): there is no such file"
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
    if {name for (name,) in rows} != {"stored_events", "pocket_projections"}:
        msg = f"SQLite database {path} holds no Pocket tables"
        raise NoPocketHere(msg)


def one_line(text: object) -> str:
    """A message of several lines (libpq's hints) as one."""
    return " ".join(str(text).split())
