"""Configuration: the one place Pocket reads the environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_SQLITE_FILE = "pocket.db"
MIN_ADMIN_TOKEN_LENGTH = 16
LOG_FORMATS = ("text", "json")
SQLITE_MODULE = "eventsourcing.sqlite"
POSTGRES_MODULE = "eventsourcing.postgres"


class ConfigurationError(ValueError):
    """The environment describes something Pocket cannot run on."""


@dataclass(frozen=True)
class Settings:
    """Where Pocket keeps its data, as the eventsourcing library's environment."""

    persistence_module: str
    env: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    # The operator's token; None means nobody has admin access.
    admin_token: str | None = None
    # Whether anyone may sign up (POST /users) without the admin token.
    open_signup: bool = True
    # How long a checked token is trusted without asking the database again.
    token_cache_seconds: float = 2.0

    @property
    def is_postgres(self) -> bool:
        """True when the data lives in PostgreSQL."""
        return self.persistence_module == POSTGRES_MODULE

    @property
    def is_sqlite(self) -> bool:
        """True when the data lives in an SQLite file."""
        return self.persistence_module == SQLITE_MODULE

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Settings:
        """Reads POCKET_DATABASE_URL, or falls back to an SQLite file in cwd."""
        environ = os.environ if environ is None else environ
        url = environ.get("POCKET_DATABASE_URL", "").strip()
        if url:
            store = cls.from_url(url, cwd)
        elif environ.get("PERSISTENCE_MODULE"):
            # The library's own variables describe the store: leave them be.
            module = environ["PERSISTENCE_MODULE"]
            store = cls(module, description=f"{module} (the library's variables)")
        else:
            store = cls.from_url(f"sqlite:///{DEFAULT_SQLITE_FILE}", cwd)
        return replace(
            store,
            admin_token=admin_token(environ.get("POCKET_ADMIN_TOKEN", "")),
            open_signup=signup(environ.get("POCKET_SIGNUP", "open")),
            token_cache_seconds=seconds(
                "POCKET_TOKEN_CACHE_SECONDS",
                environ.get("POCKET_TOKEN_CACHE_SECONDS", "2"),
            ),
        )

    @classmethod
    def from_url(cls, url: str, cwd: Path | None = None) -> Settings:
        """Turns a database URL into the library's environment variables."""
        scheme = url.split(":", 1)[0].lower()
        if scheme == "sqlite":
            return cls._sqlite(url, cwd or Path.cwd())
        if scheme in ("postgresql", "postgres"):
            return cls._postgres(url)
        msg = (
            f"POCKET_DATABASE_URL must start with sqlite:/// or postgresql://, "
            f"not {scheme}://"
        )
        raise ConfigurationError(msg)

    @classmethod
    def _sqlite(cls, url: str, cwd: Path) -> Settings:
        prefix = "sqlite:///"
        if not url.lower().startswith(prefix) or len(url) == len(prefix):
            msg = "An SQLite URL looks like sqlite:///pocket.db or sqlite:////abs.db"
            raise ConfigurationError(msg)
        path = Path(unquote(url[len(prefix) :]))
        path = path if path.is_absolute() else cwd / path
        env = {"PERSISTENCE_MODULE": SQLITE_MODULE, "SQLITE_DBNAME": str(path)}
        return cls(SQLITE_MODULE, env, f"SQLite database {path}")

    @classmethod
    def _postgres(cls, url: str) -> Settings:
        parts = urlsplit(url)
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            msg = "A PostgreSQL URL names its database: postgresql://u:p@host:5432/db"
            raise ConfigurationError(msg)
        try:
            port = parts.port or 5432
        except ValueError as error:
            msg = f"Bad port in POCKET_DATABASE_URL: {error}"
            raise ConfigurationError(msg) from None
        env = {
            "PERSISTENCE_MODULE": POSTGRES_MODULE,
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(port),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            # The library insists on a password even under trust authentication.
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
        where = f"{env['POSTGRES_HOST']}:{port}/{dbname} as {env['POSTGRES_USER']}"
        return cls(POSTGRES_MODULE, env, f"PostgreSQL database {where}")


@dataclass(frozen=True)
class LogSettings:
    """How the commands log: POCKET_LOG_LEVEL and POCKET_LOG_FORMAT."""

    level: str = "INFO"
    format: str = "text"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> LogSettings:
        """Reads the two variables; refuses a level or format that does not exist."""
        environ = os.environ if environ is None else environ
        level = environ.get("POCKET_LOG_LEVEL", "INFO").strip().upper()
        if not isinstance(logging.getLevelName(level), int):
            msg = (
                f"POCKET_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}"
            )
            raise ConfigurationError(msg)
        log_format = environ.get("POCKET_LOG_FORMAT", "text").strip().lower()
        if log_format not in LOG_FORMATS:
            msg = f"POCKET_LOG_FORMAT must be text or json, not {log_format!r}"
            raise ConfigurationError(msg)
        return cls(level, log_format)


def admin_token(value: str) -> str | None:
    """The admin token, if one is configured; short ones are refused."""
    token = value.strip()
    if not token:
        return None
    if len(token) < MIN_ADMIN_TOKEN_LENGTH:
        msg = f"POCKET_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters"
        raise ConfigurationError(msg)
    return token


def signup(value: str) -> bool:
    """POCKET_SIGNUP: open (anyone may sign up) or closed (admin only)."""
    choice = value.strip().lower()
    if choice not in ("open", "closed"):
        msg = f"POCKET_SIGNUP must be open or closed, not {value!r}"
        raise ConfigurationError(msg)
    return choice == "open"


def seconds(name: str, value: str) -> float:
    """A duration in seconds, zero or more."""
    try:
        duration = float(value)
    except ValueError:
        duration = -1.0
    if not duration >= 0:
        msg = f"{name} must be a number of seconds, 0 or more, not {value!r}"
        raise ConfigurationError(msg)
    return duration
