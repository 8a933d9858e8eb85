"""Configuration: POCKET_DATABASE_URL to the library's environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eventsourcing.utils import Environment

from pocket import config
from pocket.config import (
    DEFAULT_SIGNUP_RATE,
    ConfigurationError,
    Settings,
    commit_timeout,
)
from pocket.postgres import PocketPostgresFactory
from pocket.postgres_pool import connect_kwargs, libpq_options
from pocket.ratelimit import Rate
from pocket.webhooks import WebhookSettings
from tests.docs import README, page, section


def test_unset_means_an_sqlite_file_in_the_current_directory(tmp_path: Path) -> None:
    settings = Settings.from_environ({}, cwd=tmp_path)
    assert settings.is_sqlite
    assert settings.env["SQLITE_DBNAME"] == str(tmp_path / "pocket.db")
    assert str(tmp_path / "pocket.db") in settings.description


def test_relative_and_absolute_sqlite_paths(tmp_path: Path) -> None:
    relative = Settings.from_url("sqlite:///data/p.db", cwd=tmp_path)
    absolute = Settings.from_url("sqlite:////var/lib/pocket/p.db", cwd=tmp_path)
    assert relative.env["SQLITE_DBNAME"] == str(tmp_path / "data/p.db")
    assert absolute.env["SQLITE_DBNAME"] == "/var/lib/pocket/p.db"


def test_a_postgresql_url_becomes_the_library_variables() -> None:
    settings = Settings.from_url("postgresql://ann:s%40cret@db.local:6543/wallets")
    assert settings.is_postgres
    assert dict(settings.env) == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "wallets",
        "POSTGRES_HOST": "db.local",
        "POSTGRES_PORT": "6543",
        "POSTGRES_USER": "ann",
        "POSTGRES_PASSWORD": "s@cret",
    }
    assert "s@cret" not in settings.description


def test_a_password_is_set_even_when_the_url_has_none() -> None:
    settings = Settings.from_url("postgresql://postgres@127.0.0.1/pocket")
    assert settings.env["POSTGRES_PASSWORD"] == ""
    assert settings.env["POSTGRES_PORT"] == "5432"


def test_the_library_variables_decide_when_no_url_is_set() -> None:
    settings = Settings.from_environ({"PERSISTENCE_MODULE": "eventsourcing.postgres"})
    assert settings.is_postgres
    assert dict(settings.env) == {}


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x/y",
        "sqlite://",
        "sqlite:///",
        "postgresql://h:5432/",
        "postgresql://h:99999/db",
    ],
)
def test_urls_pocket_cannot_use_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_url(url)


# Multi-host URLs (libpq's syntax): every server of a replicated cluster, of which
# Pocket connects to the one that takes writes.


def test_a_multi_host_url_names_every_server_and_finds_the_writable_one() -> None:
    settings = Settings.from_url(
        "postgresql://ann:s%40cret@db1:5432,db2:5433/wallets?connect_timeout=4"
    )
    assert dict(settings.env) == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "wallets",
        "POSTGRES_HOST": "db1,db2",
        "POSTGRES_PORT": "5432,5433",
        "POSTGRES_USER": "ann",
        "POSTGRES_PASSWORD": "s@cret",
        # Unless the URL says otherwise, a list of servers means: the primary.
        "POSTGRES_TARGET_SESSION_ATTRS": "read-write",
        "POSTGRES_HOST_CONNECT_TIMEOUT": "4",
    }
    assert settings.description == (
        "PostgreSQL database wallets on db1:5432,db2:5433 as ann "
        "(target_session_attrs=read-write)"
    )
    assert "s@cret" not in settings.description


def test_a_host_without_a_port_gets_5432() -> None:
    settings = Settings.from_url("postgresql://db1,db2:6000,[::1]/pocket")
    assert settings.env["POSTGRES_HOST"] == "db1,db2,::1"
    assert settings.env["POSTGRES_PORT"] == "5432,6000,5432"
    assert "db1:5432,db2:6000,[::1]:5432" in settings.description


def test_target_session_attrs_in_the_url_wins() -> None:
    one = Settings.from_url("postgresql://h/db?target_session_attrs=primary")
    many = Settings.from_url("postgresql://h1,h2/db?target_session_attrs=any")
    assert one.env["POSTGRES_TARGET_SESSION_ATTRS"] == "primary"
    assert many.env["POSTGRES_TARGET_SESSION_ATTRS"] == "any"


def test_a_single_host_url_without_options_is_as_before() -> None:
    settings = Settings.from_url("postgres://postgres@127.0.0.1:5433/pocket")
    assert "POSTGRES_TARGET_SESSION_ATTRS" not in settings.env
    assert "POSTGRES_HOST_CONNECT_TIMEOUT" not in settings.env
    assert settings.description == (
        "PostgreSQL database 127.0.0.1:5433/pocket as postgres"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://h:abc/db", "Bad port in POCKET_DATABASE_URL: 'abc'"),
        ("postgresql://h1:1,h2:70000/db", "Bad port in POCKET_DATABASE_URL: '70000'"),
        ("postgresql://h1,h2,h3/db?port=1,2", "2 ports for 3 hosts"),
        ("postgresql://h/db?nonsense=1", 'invalid URI query parameter: "nonsense"'),
        ("postgresql://h/db?target_session_attrs=rw", "target_session_attrs must be"),
        ("postgresql://h/db?connect_timeout=soon", "connect_timeout must be"),
        ("postgresql://h1,h2/", "names its database"),
    ],
)
def test_a_bad_url_is_refused_in_one_line(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as refused:
        Settings.from_url(url)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("pocket.db", "'pocket.db'"),
        ("/var/lib/pocket/pocket.db", "'/var/lib/pocket/pocket.db'"),
        ("localhost:5432/pocket", "'localhost:5432/pocket'"),
    ],
)
def test_a_url_without_a_scheme_is_called_that_with_what_a_url_looks_like(
    url: str, shown: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environ({"POCKET_DATABASE_URL": url})
    message = str(refused.value)
    assert message.startswith(f"POCKET_DATABASE_URL={shown} is not a URL")
    assert "://" not in message.split(" is not a URL", maxsplit=1)[0]
    assert "sqlite:///pocket.db" in message
    assert "postgresql://user:password@host:5432/pocket" in message
    assert "\n" not in message


def test_a_url_without_a_scheme_that_may_hold_a_password_is_not_shown() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environ({"POCKET_DATABASE_URL": "ann:hunter2@db/pocket"})
    assert "hunter2" not in str(refused.value)
    assert "is not a URL" in str(refused.value)


def test_a_url_of_another_database_names_its_scheme() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_url("mysql://h/pocket")
    assert str(refused.value).startswith(
        "POCKET_DATABASE_URL must start with sqlite:/// or postgresql://, not mysql://"
    )


def test_a_refused_url_does_not_show_its_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_url("postgresql://ann:hunter 2@h/db")
    assert "hunter" not in str(refused.value)
    assert "unexpected spaces" in str(refused.value)


def test_every_connection_gets_the_urls_libpq_options() -> None:
    settings = Settings.from_url(
        "postgresql://ann@db1:5432,db2:5433/wallets?connect_timeout=4"
    )
    factory = PocketPostgresFactory(Environment(env=settings.env))
    try:
        pooled = factory.datastore.pool.kwargs
        assert isinstance(pooled, dict)
        assert pooled["host"] == "db1,db2"
        assert pooled["port"] == "5432,5433"
        assert pooled["target_session_attrs"] == "read-write"
        assert pooled["connect_timeout"] == 4
        # Pocket's own connections (locks, LISTEN, probes): the same servers
        # and attributes, their own timeouts.
        own = connect_kwargs(factory.datastore)
        assert own["target_session_attrs"] == "read-write"
        assert "connect_timeout" not in own
        assert "row_factory" not in own
    finally:
        factory.close()


def test_a_single_server_waits_two_seconds_for_a_connection() -> None:
    settings = Settings.from_url("postgresql://ann@db1/wallets")
    assert libpq_options(settings.env)["connect_timeout"] == 2


def test_every_connection_finds_a_silent_link_dead_within_seconds() -> None:
    options = libpq_options(Settings.from_url("postgresql://ann@db1/wallets").env)
    # Keep-alive probes after 3 s of silence, and the link dropped once what it
    # sent has gone unacknowledged for 6 s: not the kernel's two hours.
    assert options["keepalives"] == 1
    assert options["keepalives_idle"] == 3
    assert options["tcp_user_timeout"] == 6000


def test_the_commit_timeout_is_five_seconds_unless_set() -> None:
    assert commit_timeout(None) == 5.0
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": "postgresql://ann@db1/wallets",
            "POCKET_COMMIT_TIMEOUT_SECONDS": "2.5",
        }
    )
    assert commit_timeout(settings.env["POCKET_COMMIT_TIMEOUT_SECONDS"]) == 2.5


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_commit_timeout_that_is_not_a_positive_duration_is_refused(
    value: str,
) -> None:
    with pytest.raises(ConfigurationError, match="POCKET_COMMIT_TIMEOUT_SECONDS"):
        Settings.from_environ(
            {
                "POCKET_DATABASE_URL": "postgresql://ann@db1/wallets",
                "POCKET_COMMIT_TIMEOUT_SECONDS": value,
            }
        )


# POCKET_READ_URL: the reads that may lag a little, on a replica

PRIMARY = "postgresql://ann@db1:5432,db2:5432/wallets"


def test_a_read_url_prefers_standbys_and_keeps_its_own_servers() -> None:
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": PRIMARY,
            "POCKET_READ_URL": "postgresql://ann@db2:5432,db3:5433/wallets",
            "POCKET_READ_MAX_LAG_SECONDS": "2.5",
        }
    )
    assert settings.read_env is not None
    assert settings.read_env["POSTGRES_HOST"] == "db2,db3"
    assert settings.read_env["POSTGRES_PORT"] == "5432,5433"
    # libpq tries the standbys first, and takes the primary if none answers.
    assert settings.read_env["POSTGRES_TARGET_SESSION_ATTRS"] == "prefer-standby"
    assert settings.read_max_lag_seconds == 2.5
    assert "db2:5432,db3:5433" in settings.read_description
    # The writes still find the primary.
    assert settings.env["POSTGRES_TARGET_SESSION_ATTRS"] == "read-write"


def test_a_read_url_may_choose_its_servers_kind() -> None:
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": PRIMARY,
            "POCKET_READ_URL": "postgresql://ann@db3/wallets?target_session_attrs=standby",
        }
    )
    assert settings.read_env is not None
    assert settings.read_env["POSTGRES_TARGET_SESSION_ATTRS"] == "standby"


def test_without_a_read_url_every_read_goes_to_the_primary() -> None:
    settings = Settings.from_environ({"POCKET_DATABASE_URL": PRIMARY})
    assert settings.read_env is None
    assert settings.read_max_lag_seconds == 10.0


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"POCKET_READ_URL": "postgresql://db2/wallets"},
            "POCKET_READ_URL needs POCKET_DATABASE_URL to be a PostgreSQL URL",
        ),
        (
            {"POCKET_DATABASE_URL": PRIMARY, "POCKET_READ_URL": "sqlite:///x.db"},
            "POCKET_READ_URL must start with postgresql://",
        ),
        (
            {
                "POCKET_DATABASE_URL": PRIMARY,
                "POCKET_READ_URL": "postgresql://db2/other",
            },
            "POCKET_READ_URL names the database 'other'",
        ),
        (
            {"POCKET_DATABASE_URL": PRIMARY, "POCKET_READ_URL": "postgresql://db2:x/w"},
            "Bad port in POCKET_READ_URL: 'x'",
        ),
        (
            {
                "POCKET_DATABASE_URL": PRIMARY,
                "POCKET_READ_URL": "postgresql://h/w?no=1",
            },
            "Bad POCKET_READ_URL",
        ),
        (
            {"POCKET_DATABASE_URL": PRIMARY, "POCKET_READ_MAX_LAG_SECONDS": "-1"},
            "POCKET_READ_MAX_LAG_SECONDS must be a number of seconds",
        ),
    ],
)
def test_a_bad_read_url_is_refused_in_one_line(
    environ: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        Settings.from_environ(environ, cwd=tmp_path)


# POCKET_SIGNUP_RATE: how often one client address may sign up.


def test_sign_ups_are_limited_by_default_to_the_documented_rate() -> None:
    assert Settings.from_environ({}).signup_rate == Rate(10, 60.0)
    assert str(Settings.from_environ({}).signup_rate) == DEFAULT_SIGNUP_RATE
    table = section(page("configuration.md"), "Environment variables")
    assert f"| `POCKET_SIGNUP_RATE` | `{DEFAULT_SIGNUP_RATE}` |" in table


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("5/hour", Rate(5, 3600.0)),
        (" 2/Second ", Rate(2, 1.0)),
        ("100/minute", Rate(100, 60.0)),
        ("off", None),
        ("OFF", None),
        ("0", None),
    ],
)
def test_a_sign_up_rate_is_a_count_per_period_or_off(
    value: str, rate: Rate | None
) -> None:
    assert Settings.from_environ({"POCKET_SIGNUP_RATE": value}).signup_rate == rate


@pytest.mark.parametrize(
    "value",
    ["", "10", "10/day", "0/minute", "-1/minute", "ten/minute", "\uff11/minute"],
)
def test_a_sign_up_rate_pocket_cannot_read_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="POCKET_SIGNUP_RATE"):
        Settings.from_environ({"POCKET_SIGNUP_RATE": value})


def variable_rows(text: str) -> dict[str, str]:
    """Each `POCKET_*` row of a table: the variable and its default, as written."""
    rows = re.findall(r"^\| `(POCKET_\w+)` \| ([^|]+) \|", text, re.MULTILINE)
    return dict(rows)


def test_every_pocket_variable_read_here_is_in_the_configuration_table() -> None:
    read = set(re.findall(r'"(POCKET_\w+)"', Path(config.__file__).read_text()))
    table = section(page("configuration.md"), "Environment variables")
    documented = set(variable_rows(table))
    assert "POCKET_SIGNUP_RATE" in read
    assert read <= documented


def test_the_readme_s_summary_agrees_with_the_configuration_table() -> None:
    summary = variable_rows(section(README.read_text(), "Configuration, in short"))
    table = variable_rows(section(page("configuration.md"), "Environment variables"))
    assert "POCKET_DATABASE_URL" in summary
    assert {name: table.get(name) for name in summary} == summary


def test_webhook_settings_reach_the_followers_environment(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": "sqlite:///x.db",
            "POCKET_WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "POCKET_WEBHOOK_CONCURRENCY": "8",
        },
        tmp_path,
    )
    webhooks = WebhookSettings.from_env(settings.env)
    assert (webhooks.timeout, webhooks.concurrency) == (2.5, 8)
    assert webhooks.retry_for == WebhookSettings.retry_for


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("POCKET_WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("POCKET_WEBHOOK_RETRY_SECONDS", "soon"),
        ("POCKET_WEBHOOK_CONCURRENCY", "0"),
        ("POCKET_WEBHOOK_CONCURRENCY", "2.5"),
    ],
)
def test_a_webhook_setting_pocket_cannot_use_is_refused(
    key: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=key):
        Settings.from_environ({key: value}, tmp_path)
