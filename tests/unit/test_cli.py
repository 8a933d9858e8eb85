"""The command line's grammar: `pocket serve`'s limits and their defaults."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pocket import __version__
from pocket.cli import build_parser
from pocket.groupcommit import WritesHealth
from pocket.operations import format_reads, format_replication
from pocket.server import Limits
from pocket.writes import format_writes, writes_report
from tests.docs import page, section


def test_serve_s_limits_default_to_the_server_s_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (
        args.connection_limit,
        args.header_timeout,
        args.body_timeout,
        args.keepalive_timeout,
    ) == (1000, 10.0, 30.0, 60.0)
    assert Limits() == Limits(1000, 10.0, 30.0, 60.0)


def test_serve_s_limits_can_be_set() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--connection-limit=50",
            "--header-timeout=2.5",
            "--body-timeout=5",
            "--keepalive-timeout=7",
        ]
    )
    assert (
        args.connection_limit,
        args.header_timeout,
        args.body_timeout,
        args.keepalive_timeout,
    ) == (50, 2.5, 5.0, 7.0)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--connection-limit", "0"),
        ("--connection-limit", "-5"),
        ("--connection-limit", "2.5"),
        ("--connection-limit", "lots"),
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--keepalive-timeout", "nan"),
        ("--keepalive-timeout", "inf"),
        ("--header-timeout", "soon"),
    ],
)
def test_serve_refuses_limits_that_are_not_positive_numbers(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["serve", option, value])
    assert exit_.value.code == 2
    assert option in capsys.readouterr().err


def test_the_deployment_page_documents_each_limit_with_its_default() -> None:
    limits = section(page("deployment.md"), "Slow clients cannot take the API down")
    default = Limits()
    for option, value in [
        ("--connection-limit N", default.connections),
        ("--header-timeout S", default.header_timeout),
        ("--body-timeout S", default.body_timeout),
        ("--keepalive-timeout S", default.keepalive_timeout),
    ]:
        assert f"| `{option}` | `{value:g}` |" in limits, option


def test_pocket_says_its_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"pocket {__version__}\n"
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    assert __version__ == tomllib.loads(pyproject.read_text())["project"]["version"]


def test_follow_serves_no_metrics_unless_asked_and_then_on_localhost() -> None:
    args = build_parser().parse_args(["follow"])
    assert (args.metrics_port, args.metrics_host) == (None, "127.0.0.1")
    args = build_parser().parse_args(["follow", "--metrics-port", "9464"])
    assert (args.metrics_port, args.metrics_host) == (9464, "127.0.0.1")
    args = build_parser().parse_args(
        ["follow", "--metrics-port=9464", "--metrics-host=10.0.0.7"]
    )
    assert args.metrics_host == "10.0.0.7"


@pytest.mark.parametrize("value", ["-1", "65536", "http", ""])
def test_follow_refuses_a_metrics_port_that_is_not_a_port(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["follow", "--metrics-port", value])
    assert "--metrics-port" in capsys.readouterr().err


def test_status_names_the_primary_and_each_standby_with_its_lag() -> None:
    primary = {"host": "10.0.0.1", "port": 5432, "in_recovery": False}
    servers: dict[str, Any] = {
        "primary": primary,
        "standbys": [
            {
                "name": "db2",
                "host": "10.0.0.2",
                "state": "streaming",
                "sync_state": "sync",
                "lag_bytes": 12345,
                "lag_seconds": 0.25,
            },
            {
                "name": "db3",
                "host": None,
                "state": "catchup",
                "sync_state": "async",
                "lag_bytes": None,
                "lag_seconds": None,
            },
        ],
    }
    assert format_replication(servers) == [
        "Primary: 10.0.0.1:5432",
        "Standby: db2 at 10.0.0.2, streaming, sync, lag 12,345 bytes, 0.2 s",
        "Standby: db3 at local, catchup, async, lag unknown (needs pg_monitor)",
    ]
    alone = {"primary": {**primary, "in_recovery": True}, "standbys": []}
    assert format_replication(alone) == [
        "Server: 10.0.0.1:5432, a standby (read-only)",
        "Standby: none streaming from this server",
    ]


def test_status_says_where_the_reads_that_may_lag_go() -> None:
    on_standby = {
        "url": "PostgreSQL database pocket on db2:5432 as pocket",
        "server": "10.0.0.2:5432",
        "standby": True,
        "lag_seconds": 0.04,
        "max_lag_seconds": 10.0,
        "served_by": "read server",
        "problem": None,
    }
    assert format_reads(on_standby) == (
        "Reads: on the standby 10.0.0.2:5432, 0.0 s behind (at most 10 s)"
    )
    primary_left = {**on_standby, "standby": False}
    assert format_reads(primary_left) == (
        "Reads: on the read server (not a standby) 10.0.0.2:5432, 0.0 s behind "
        "(at most 10 s)"
    )
    behind = {
        **on_standby,
        "lag_seconds": 12.3,
        "served_by": "primary",
        "problem": "the read server 10.0.0.2:5432 is 12.3 s behind "
        "(POCKET_READ_MAX_LAG_SECONDS=10)",
    }
    assert format_reads(behind) == (
        "Reads: on the primary, because the read server 10.0.0.2:5432 is 12.3 s "
        "behind (POCKET_READ_MAX_LAG_SECONDS=10)"
    )


def test_status_says_whether_writes_are_confirmed_and_if_not_why() -> None:
    waits = {
        "synchronous_standby_names": "FIRST 1 (db2)",
        "synchronous_commit": "on",
        "synchronous_standbys_streaming": 1,
        "commits_waiting": 0,
        "oldest_wait_seconds": 0.0,
    }
    healthy = writes_report(None, waits)
    assert healthy["confirmed"] is True
    assert format_writes(healthy) == (
        "Writes: confirmed by the synchronous standby (1 streaming; "
        "synchronous_standby_names = 'FIRST 1 (db2)')"
    )
    gone = {**waits, "synchronous_standbys_streaming": 0, "commits_waiting": 3}
    gone["oldest_wait_seconds"] = 4.21
    stuck = writes_report(None, gone)
    assert stuck["confirmed"] is False
    assert format_writes(stuck) == (
        "Writes: stuck, waiting for the synchronous standby "
        "(synchronous_standby_names = 'FIRST 1 (db2)'; none is streaming); "
        "3 commit(s) waiting, the oldest for 4.2 s"
    )
    # A process whose own commits stalled says so even where the database's
    # view is hidden (no pg_monitor) or points elsewhere.
    hidden = {**waits, "synchronous_standbys_streaming": None}
    mine = writes_report(
        WritesHealth(0.0, "a commit has not been confirmed yet"), hidden
    )
    assert mine["confirmed"] is False
    assert mine["stuck_since"] == "1970-01-01T00:00:00+00:00"
    assert mine["why"] == "a commit has not been confirmed yet"
    alone = writes_report(None, None)
    assert format_writes(alone) == (
        "Writes: confirmed by this server alone (no synchronous standby)"
    )


def test_migrate_waits_out_a_database_outage_for_a_minute_unless_told() -> None:
    assert build_parser().parse_args(["migrate"]).retry_seconds == 60
    args = build_parser().parse_args(["migrate", "--retry-seconds", "5"])
    assert args.retry_seconds == 5
    with pytest.raises(SystemExit):
        build_parser().parse_args(["migrate", "--retry-seconds", "0"])


def test_the_configuration_page_documents_every_option_of_every_command() -> None:
    parser = build_parser()
    commands = next(
        action
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    rows = {
        match[1]: match[2]
        for match in re.finditer(
            r"^\| `(pocket(?: \w+)?)` \| (.*)$",
            section(page("configuration.md"), "Command line"),
            re.MULTILINE,
        )
    }
    missing = [
        f"{name} {option}"
        for name, command in [
            ("pocket", parser),
            *((f"pocket {c}", p) for c, p in commands.choices.items()),
        ]
        for action in command._actions
        for option in action.option_strings
        if option.startswith("--")
        and option != "--help"
        and f"`{option}" not in rows.get(name, "")
    ]
    assert set(rows) == {"pocket", *(f"pocket {c}" for c in commands.choices)}
    assert missing == []
