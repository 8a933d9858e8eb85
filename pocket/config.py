"""Configuration: the one place Pocket reads the environment."""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pocket.ratelimit import PERIODS, Rate

DEFAULT_SQLITE_FILE = "pocket.db"
MIN_ADMIN_TOKEN_LENGTH = 16
LOG_FORMATS = ("text", "json")
DEFAULT_SIGNUP_RATE = "10/minute"
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
    # How often one client address may sign up without it (None: no limit).
    signup_rate: Rate | None = field(
        default_factory=lambda: signup_rate(DEFAULT_SIGNUP_RATE)
    )
    # How long a checked token is trusted without asking the database again.
    token_cache_seconds: float = 2.0
    # Where reads that may be a little stale go (POCKET_READ_URL), as the
    # library's environment (None: every read goes to the primary), and how far
    # behind that server may be before those reads go to the primary instead.
    read_env: Mapping[str, str] | None = None
    read_description: str = ""
    read_max_lag_seconds: float = 10.0

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
        reads = read_store(store, environ.get("POCKET_READ_URL", "").strip())
        timeout = environ.get(COMMIT_TIMEOUT_KEY, "").strip()
        if timeout:
            commit_timeout(timeout)  # Refused here, in one line, if it is bad.
            store = replace(store, env={**store.env, COMMIT_TIMEOUT_KEY: timeout})
        extra = {**webhook_env(environ), **broker_env(environ)}
        store = replace(store, env={**store.env, **extra})
        return replace(
            store,
            read_env=None if reads is None else reads.env,
            read_description="" if reads is None else reads.description,
            read_max_lag_seconds=seconds(
                "POCKET_READ_MAX_LAG_SECONDS",
                environ.get("POCKET_READ_MAX_LAG_SECONDS", "10"),
            ),
            admin_token=admin_token(environ.get("POCKET_ADMIN_TOKEN", "")),
            open_signup=signup(environ.get("POCKET_SIGNUP", "open")),
            signup_rate=signup_rate(
                environ.get("POCKET_SIGNUP_RATE", DEFAULT_SIGNUP_RATE)
            ),
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
            return cls._postgres(url, "POCKET_DATABASE_URL")
        raise wrong_scheme("POCKET_DATABASE_URL", url, "sqlite:/// or postgresql://")

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
    def _postgres(
        cls, url: str, variable: str, default_attrs: str | None = None
    ) -> Settings:
        """A PostgreSQL URL in libpq's syntax, one server or several:
        postgresql://u:p@h1:5432,h2:5432/db?target_session_attrs=read-write.

        With several servers Pocket connects to the first that takes writes
        (target_session_attrs=read-write) unless the URL says otherwise, so that
        after a failover every connection finds the new primary by itself.
        default_attrs replaces that default (the read URL's is prefer-standby);
        variable names the URL in error messages.
        """
        params = url_params(url, variable)
        dbname = params.get("dbname", "")
        if not dbname:
            msg = "A PostgreSQL URL names its database: postgresql://u:p@host:5432/db"
            raise ConfigurationError(msg)
        hosts = (params.get("host") or "127.0.0.1").split(",")
        ports = host_ports(params.get("port", ""), len(hosts), variable)
        env = {
            "PERSISTENCE_MODULE": POSTGRES_MODULE,
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": ",".join(hosts),
            "POSTGRES_PORT": ",".join(ports),
            "POSTGRES_USER": params.get("user") or "postgres",
            # The library insists on a password even under trust authentication.
            "POSTGRES_PASSWORD": params.get("password", ""),
        }
        if default_attrs is None:
            default_attrs = "read-write" if len(hosts) > 1 else ""
        attrs = params.get("target_session_attrs") or default_attrs
        if attrs:
            env[TARGET_SESSION_ATTRS_KEY] = session_attrs(attrs)
        if params.get("connect_timeout"):
            env[HOST_CONNECT_TIMEOUT_KEY] = whole_seconds(params["connect_timeout"])
        servers = ",".join(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for host, port in zip(hosts, ports, strict=True)
        )
        user = env["POSTGRES_USER"]
        if len(hosts) == 1:
            where = f"{servers}/{dbname} as {user}"
        else:
            where = f"{dbname} on {servers} as {user}"
        if attrs:
            where += f" (target_session_attrs={attrs})"
        return cls(POSTGRES_MODULE, env, f"PostgreSQL database {where}")


# Pocket's own variables beside the library's: libpq parameters of the URL that
# the library has no variable for, which pocket.postgres passes to every
# connection; and how long a write may wait for its commit, which it applies.
TARGET_SESSION_ATTRS_KEY = "POSTGRES_TARGET_SESSION_ATTRS"
HOST_CONNECT_TIMEOUT_KEY = "POSTGRES_HOST_CONNECT_TIMEOUT"
COMMIT_TIMEOUT_KEY = "POCKET_COMMIT_TIMEOUT_SECONDS"
# Its default: a few seconds (a commit takes milliseconds when all is well).
DEFAULT_COMMIT_TIMEOUT = 5.0


def commit_timeout(value: str | None) -> float:
    """POCKET_COMMIT_TIMEOUT_SECONDS: how long a write waits for its commit
    (and for its synchronous standby) before it is answered 503; more than 0."""
    if value is None or not value.strip():
        return DEFAULT_COMMIT_TIMEOUT
    duration = seconds(COMMIT_TIMEOUT_KEY, value)
    if not 0 < duration < math.inf:
        msg = f"{COMMIT_TIMEOUT_KEY} must be more than 0 seconds, not {value!r}"
        raise ConfigurationError(msg)
    return duration


# libpq's choices for target_session_attrs.
SESSION_ATTRS = (
    "any",
    "read-write",
    "read-only",
    "primary",
    "standby",
    "prefer-standby",
)


def read_store(store: Settings, url: str) -> Settings | None:
    """POCKET_READ_URL: the server (or list of servers) that the reads which may
    be a little stale go to, as Settings; None when unset. libpq tries the
    URL's standbys first (target_session_attrs=prefer-standby) unless it says
    otherwise. Only beside a PostgreSQL database: SQLite has no replicas."""
    if not url:
        return None
    if not store.is_postgres:
        msg = "POCKET_READ_URL needs POCKET_DATABASE_URL to be a PostgreSQL URL"
        raise ConfigurationError(msg)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("postgresql", "postgres"):
        raise wrong_scheme("POCKET_READ_URL", url, "postgresql://", POSTGRES_EXAMPLE)
    reads = Settings._postgres(url, "POCKET_READ_URL", default_attrs="prefer-standby")
    if reads.env["POSTGRES_DBNAME"] != store.env["POSTGRES_DBNAME"]:
        msg = (
            f"POCKET_READ_URL names the database {reads.env['POSTGRES_DBNAME']!r}; "
            f"a replica of POCKET_DATABASE_URL's holds "
            f"{store.env['POSTGRES_DBNAME']!r}"
        )
        raise ConfigurationError(msg)
    return reads


# What a database URL looks like, for a value that is not one.
POSTGRES_EXAMPLE = "postgresql://user:password@host:5432/pocket"
URL_EXAMPLES = (
    "sqlite:///pocket.db (a file in the current folder), "
    "sqlite:////var/lib/pocket/pocket.db (an absolute path) or "
    f"{POSTGRES_EXAMPLE}"
)
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def wrong_scheme(
    variable: str, url: str, expected: str, examples: str = URL_EXAMPLES
) -> ConfigurationError:
    """The error for a URL of a database Pocket does not use, or for a value
    that is no URL at all (a bare file name, say), saying what one looks like.
    A value that may hold a password (an @) is not repeated."""
    scheme = SCHEME.match(url)
    if scheme is not None:
        msg = f"{variable} must start with {expected}, not {scheme.group()}"
        return ConfigurationError(msg)
    shown = f"={url!r}" if "@" not in url else ""
    msg = (
        f"{variable}{shown} is not a URL (it does not start with {expected}): "
        f"a database URL looks like {examples}"
    )
    return ConfigurationError(msg)


def url_params(url: str, variable: str = "POCKET_DATABASE_URL") -> dict[str, str]:
    """A PostgreSQL URL's parameters as libpq reads it (hosts and ports as comma
    lists, percent-decoded); a URL libpq refuses is refused in one line, without
    its password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as error:
        reason = " ".join(str(error).split())
        secret = re.search(r"://[^/@]*?:([^/@]*)@", url)
        if secret and secret.group(1):
            reason = reason.replace(secret.group(1), "***")
        msg = f"Bad {variable}: {reason}"
        raise ConfigurationError(msg) from None
    return {key: str(value) for key, value in params.items()}


def host_ports(
    ports: str, hosts: int, variable: str = "POCKET_DATABASE_URL"
) -> list[str]:
    """One port for each host: libpq's comma list, where an empty entry means
    5432 and a single port serves every host."""
    given = [port or "5432" for port in ports.split(",")]
    if len(given) == 1:
        given *= hosts
    if len(given) != hosts:
        msg = f"{variable} has {len(given)} ports for {hosts} hosts"
        raise ConfigurationError(msg)
    for port in given:
        if not (port.isdigit() and 0 < int(port) < 65536):
            msg = f"Bad port in {variable}: {port!r} (1 to 65535)"
            raise ConfigurationError(msg)
    return given


def session_attrs(value: str) -> str:
    """target_session_attrs, one of libpq's choices."""
    if value not in SESSION_ATTRS:
        msg = (
            f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}, "
            f"not {value!r}"
        )
        raise ConfigurationError(msg)
    return value


def whole_seconds(value: str) -> str:
    """connect_timeout: libpq's whole seconds for each host (0: wait forever)."""
    if not value.strip().isdigit():
        msg = f"connect_timeout must be a whole number of seconds, not {value!r}"
        raise ConfigurationError(msg)
    return value.strip()


# The broker the publisher follower sends every wallet event to (pocket.broker):
# copied into the library's environment, where the follower reads them.
DEFAULT_AMQP_EXCHANGE = "pocket.events"
AMQP_EXCHANGE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}")


def broker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """POCKET_AMQP_URL (amqp:// or amqps://) and POCKET_AMQP_EXCHANGE, checked,
    as the library's environment ({} when no broker is named)."""
    url = environ.get("POCKET_AMQP_URL", "").strip()
    if not url:
        return {}
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("amqp", "amqps") or "://" not in url:
        raise wrong_scheme(
            "POCKET_AMQP_URL",
            url,
            "amqp:// or amqps://",
            "amqp://user:password@host:5672/%2F",
        )
    exchange = environ.get("POCKET_AMQP_EXCHANGE", "").strip() or DEFAULT_AMQP_EXCHANGE
    if not AMQP_EXCHANGE_NAME.fullmatch(exchange) or exchange.startswith("amq."):
        msg = (
            "POCKET_AMQP_EXCHANGE must be letters, digits, '-', '_', '.' or ':' "
            f"(at most 255, not starting with amq.), not {exchange!r}"
        )
        raise ConfigurationError(msg)
    return {"POCKET_AMQP_URL": url, "POCKET_AMQP_EXCHANGE": exchange}


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


def signup_rate(value: str) -> Rate | None:
    """POCKET_SIGNUP_RATE: `<count>/<second|minute|hour>` per client address, or
    `off` (or `0`) for no limit."""
    text = value.strip().lower()
    if text in ("off", "0"):
        return None
    count, _, unit = text.partition("/")
    counted = count.isascii() and count.isdigit() and int(count) > 0
    if not counted or unit not in PERIODS:
        msg = (
            "POCKET_SIGNUP_RATE must be <count>/second, /minute or /hour "
            f"(such as {DEFAULT_SIGNUP_RATE}), or off, not {value!r}"
        )
        raise ConfigurationError(msg)
    return Rate(int(count), PERIODS[unit])


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


# How the webhook follower sends (pocket.webhooks.WebhookSettings reads them from
# the library's environment, where the followers find them): each a number of
# seconds but the concurrency, a count of one or more.
WEBHOOK_SECONDS = (
    "POCKET_WEBHOOK_TIMEOUT_SECONDS",
    "POCKET_WEBHOOK_RETRY_SECONDS",
    "POCKET_WEBHOOK_BACKOFF_CAP_SECONDS",
    "POCKET_WEBHOOK_KEEP_SECONDS",
)
WEBHOOK_CONCURRENCY = "POCKET_WEBHOOK_CONCURRENCY"


def webhook_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The POCKET_WEBHOOK_* variables set, checked (refused in one line)."""
    env: dict[str, str] = {}
    for key in WEBHOOK_SECONDS:
        value = environ.get(key, "").strip()
        if value:
            if not 0 < seconds(key, value) < math.inf:
                msg = f"{key} must be more than 0 seconds, not {value!r}"
                raise ConfigurationError(msg)
            env[key] = value
    count = environ.get(WEBHOOK_CONCURRENCY, "").strip()
    if count:
        if not count.isdigit() or not 1 <= int(count) <= 64:
            msg = f"{WEBHOOK_CONCURRENCY} must be from 1 to 64, not {count!r}"
            raise ConfigurationError(msg)
        env[WEBHOOK_CONCURRENCY] = count
    return env
