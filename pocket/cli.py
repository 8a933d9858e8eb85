"""The `pocket` command: serve the API, follow the log, migrate, status, verify."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import replace
from types import FrameType
from typing import NoReturn, TypeVar
from wsgiref.simple_server import WSGIServer

from eventsourcing.persistence import InterfaceError, OperationalError
from prometheus_client import start_http_server

from pocket import __version__, logs
from pocket.application import Pocket
from pocket.bootstrap import bootstrap, open_pocket
from pocket.broker import system_for
from pocket.catalog import ProjectionCatalog
from pocket.config import ConfigurationError, LogSettings, Settings
from pocket.database import Database
from pocket.metrics import registry_for
from pocket.migration import (
    MigrationInterrupted,
    MigrationRefused,
    Progress,
    migrate,
)
from pocket.operations import format_status, replication, status, verify
from pocket.outages import PATIENCE_SECONDS
from pocket.preflight import DatabaseDown, DatabaseProblem, check_database, one_line
from pocket.reads import Reads
from pocket.runner import PocketRunner, open_runner
from pocket.server import Limits, build_server
from pocket.system import VERSIONS
from pocket.walletrecords import LATEST_VERSION
from pocket.web import create_app
from pocket.writes import commit_waits, writes_report

log = logging.getLogger("pocket")
T = TypeVar("T")


# Requests `pocket serve` handles at once. 16, not fewer: a batch of the group
# commit holds at most this many commands, and measured with 16 clients 16
# threads answered 14% more than 8 at 10% less CPU a request (docs/performance.md).
SERVE_THREADS = 16


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pocket` console script."""
    args, unknown = build_parser().parse_known_args(argv)
    command: Callable[[argparse.Namespace, Settings], int] = args.command
    name = command.__name__.removeprefix("run_")
    if unknown:  # Said of the command they were given to, not of `pocket`.
        refuse(f"pocket {name}", f"unrecognized arguments: {' '.join(unknown)}")
    try:
        log_settings = LogSettings.from_environ()
        logs.configure(log_settings.level, log_settings.format)
        settings = Settings.from_environ()
    except ConfigurationError as error:
        # The environment is wrong, not the command line: no usage block.
        logs.say(f"pocket {name}: {error}", error=True)
        return 2
    try:
        return command(args, settings)
    except (DatabaseProblem, CannotListen) as problem:
        logs.say(f"pocket {name}: {problem}", error=True)
    except (OperationalError, InterfaceError) as error:
        logs.say(f"pocket {name}: the database failed: {one_line(error)}", error=True)
    return 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line on stderr, exit
    2, as the commands' other refusals are: what is wrong and where to read
    more, without the usage block."""

    def error(self, message: str) -> NoReturn:
        """Exits 2 after one line naming the command, the mistake and --help."""
        refuse(self.prog, message)


def refuse(prog: str, message: str) -> NoReturn:
    """A mistake on the command line, in one line; exit 2."""
    print(f"{prog}: {message} (see {prog} --help)", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar."""
    parser = OneLineParser(prog="pocket", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pocket {__version__}")
    commands = parser.add_subparsers(required=True, metavar="command")

    serve_parser = commands.add_parser("serve", help="serve the HTTP API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=port_number, default=5000)
    serve_parser.add_argument(
        "--threads",
        type=positive_int,
        default=SERVE_THREADS,
        help=f"requests handled at once ({SERVE_THREADS})",
    )
    serve_parser.add_argument(
        "--no-follower",
        action="store_true",
        help="do not run the projection follower in this process",
    )
    add_limits(serve_parser)
    serve_parser.set_defaults(command=serve)

    follow_parser = commands.add_parser(
        "follow", help="follow the event log into the wallet_records projection"
    )
    follow_parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=1000,
        help="events per transaction, at most (1000)",
    )
    follow_parser.add_argument(
        "--metrics-port",
        metavar="N",
        type=port_number,
        help="serve this follower's metrics (Prometheus) on port N (none by default)",
    )
    follow_parser.add_argument(
        "--metrics-host",
        metavar="H",
        default="127.0.0.1",
        help="the address of the metrics port (127.0.0.1)",
    )
    follow_parser.set_defaults(command=follow)

    migrate_parser = commands.add_parser(
        "migrate",
        help="rebuild wallet_records at a version beside the live one, then switch",
    )
    migrate_parser.add_argument(
        "--version",
        type=int,
        default=LATEST_VERSION,
        choices=sorted(VERSIONS),
        help=f"the version to build and make live (default: latest, {LATEST_VERSION})",
    )
    migrate_parser.add_argument(
        "--keep-old", action="store_true", help="keep the old version's tables"
    )
    migrate_parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=2000,
        help="events per transaction (2000)",
    )
    migrate_parser.add_argument(
        "--retry-seconds",
        metavar="S",
        type=positive_seconds,
        default=PATIENCE_SECONDS,
        help="how long to keep trying while the database fails (a lost link, a "
        f"failover) before stopping; running again resumes ({PATIENCE_SECONDS:g})",
    )
    migrate_parser.set_defaults(command=run_migrate)

    status_parser = commands.add_parser(
        "status", help="each projection's version, position, lag and follower"
    )
    status_parser.add_argument("--json", action="store_true", help="print JSON")
    status_parser.set_defaults(command=run_status)

    verify_parser = commands.add_parser(
        "verify", help="recompute every balance from the events and compare"
    )
    verify_parser.set_defaults(command=run_verify)
    return parser


def add_limits(parser: argparse.ArgumentParser) -> None:
    """`pocket serve`'s bounds on what one client connection may hold."""
    default = Limits()
    parser.add_argument(
        "--connection-limit",
        metavar="N",
        type=positive_int,
        default=default.connections,
        help=f"client connections held at once ({default.connections})",
    )
    parser.add_argument(
        "--header-timeout",
        metavar="S",
        type=positive_seconds,
        default=default.header_timeout,
        help="seconds a client has to send a request's line and headers "
        f"({default.header_timeout:g})",
    )
    parser.add_argument(
        "--body-timeout",
        metavar="S",
        type=positive_seconds,
        default=default.body_timeout,
        help="seconds a client has to send a request's body once its headers "
        f"are in ({default.body_timeout:g})",
    )
    parser.add_argument(
        "--keepalive-timeout",
        metavar="S",
        type=positive_seconds,
        default=default.keepalive_timeout,
        help="seconds a connection may stay idle between requests "
        f"({default.keepalive_timeout:g})",
    )


def positive_int(value: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        msg = f"must be a whole number above 0, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def port_number(value: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    if not value.isdigit() or int(value) > 65535:
        msg = f"must be a port number, 0 to 65535, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(value)


def positive_seconds(value: str) -> float:
    """An argparse type: a finite number of seconds above zero."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not (math.isfinite(seconds) and seconds > 0):
        msg = f"must be a number of seconds above 0, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return seconds


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serves the API with waitress until SIGTERM or SIGINT."""
    check_port(args.host, args.port)  # Before waiting for the database.
    service = when_database_answers(
        settings, lambda: bootstrap(settings, follow=not args.no_follower)
    )
    limits = Limits(
        connections=args.connection_limit,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        keepalive_timeout=args.keepalive_timeout,
    )
    try:
        try:
            server = build_server(
                create_app(service), args.host, args.port, args.threads, limits
            )
        except OSError as error:
            raise CannotListen(args.host, args.port, error) from None
        follower = "no follower" if args.no_follower else "follower in this process"
        logs.say(
            f"Pocket serving on http://{args.host}:{server.port} "
            f"({follower})\nData: {settings.description}"
        )
        # waitress shuts down cleanly on SystemExit; make SIGTERM raise it too.
        signal.signal(signal.SIGTERM, raise_system_exit)
        server.run()
    finally:
        service.close()
    return 0


class CannotListen(Exception):
    """The address to serve on is taken, or not this machine's."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        # socket.create_server adds the address to the reason: it is said already.
        reason = (error.strerror or str(error)).split(" (while attempting")[0]
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


def check_port(host: str, port: int) -> None:
    """Raises CannotListen now if the address cannot be served on."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise CannotListen(host, port, error) from None


def follow(args: argparse.Namespace, settings: Settings) -> int:
    """Follows Pocket's log until SIGTERM or SIGINT, between two transactions."""
    if args.metrics_port is not None:  # Before waiting for the database.
        check_port(args.metrics_host, args.metrics_port)
    if settings.is_sqlite:
        # Run in the wrong folder, it would make a new pocket.db and follow that:
        # the file is pocket serve's to make (a PostgreSQL database is named, and
        # may be followed before pocket serve first starts on it).
        check_database(settings, must_hold_pocket=True, may_be_old=True)
    runner = when_database_answers(
        settings,
        lambda: started(
            open_runner(
                system_for(settings.env),
                dict(settings.env),
                batch_size=args.batch_size,
            )
        ),
    )
    metrics: WSGIServer | None = None
    try:
        if args.metrics_port is not None:
            metrics = serve_metrics(runner, args.metrics_host, args.metrics_port)
        return follow_until_stopped(runner, settings)
    finally:
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        runner.stop()


def serve_metrics(runner: PocketRunner, host: str, port: int) -> WSGIServer:
    """The follower's metrics, served on a port of their own (in a thread)."""
    catalog = ProjectionCatalog(Database.of(runner.pocket))
    registry = registry_for(runner, catalog, commits=False)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise CannotListen(host, port, error) from None
    log.info("Metrics at http://%s:%d/metrics", host, server.server_port)
    return server


def follow_until_stopped(runner: PocketRunner, settings: Settings) -> int:
    """Waits for SIGTERM or SIGINT, then stops the threads after their batch."""
    stopping = threading.Event()

    def stop(signum: int, _: FrameType | None) -> None:
        log.info(
            "Received %s; stopping after the batch in hand", signal.strsignal(signum)
        )
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "Following %s from %s", settings.description, where(runner.live_position())
    )
    stopping.wait()
    runner.stop_threads()
    log.info("Stopped at %s", where(runner.live_position()))
    return 0


def where(position: int | None) -> str:
    """A projection's place in Pocket's log, for a person: None is no position
    yet, because no event has been applied."""
    if position is None:
        return "the start of the log (no event applied yet)"
    return f"position {position}"


def started(runner: PocketRunner) -> PocketRunner:
    """The runner, started; closed again if it cannot start."""
    try:
        runner.start()
    except BaseException:
        runner.stop()
        raise
    return runner


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """`pocket migrate`: exit 0 when the version asked for is live, 2 if refused
    or interrupted (the database failed for longer than --retry-seconds)."""
    with closing(open_existing(settings, may_be_old=True)) as pocket:
        try:
            migrate(
                pocket,
                target=args.version,
                keep_old=args.keep_old,
                batch_size=args.batch_size,
                progress=Progress(f"Building wallet_records v{args.version}"),
                patience=args.retry_seconds,
            )
        except (MigrationRefused, MigrationInterrupted) as error:
            print(f"pocket migrate: {error}", file=sys.stderr)
            return 2
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    """`pocket status`: the projections' state, for people or (--json) machines."""
    with (
        closing(open_existing(settings)) as pocket,
        closing(Reads.open(settings, Database.of(pocket))) as reads,
    ):
        report = {
            "database": settings.description,
            "servers": replication(pocket),
            "writes": writes_report(None, commit_waits(Database.of(pocket))),
            "reads": reads.state(),
            **status(pocket),
        }
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def run_verify(args: argparse.Namespace, settings: Settings) -> int:
    """`pocket verify`: exit 1 when wallet_records disagrees with the events."""
    with closing(open_existing(settings)) as pocket:
        print(f"Database: {settings.description}")
        with closing(Reads.open(settings, Database.of(pocket))) as reads:
            return 1 if verify(pocket, reads=reads) else 0


def open_existing(settings: Settings, *, may_be_old: bool = False) -> Pocket:
    """Pocket on a database that must already hold it: an operator command run
    on the wrong database must not leave Pocket's tables there."""
    check_database(settings, must_hold_pocket=True, may_be_old=may_be_old)
    return open_pocket(replace(settings, env={**settings.env, "CREATE_TABLE": "no"}))


def when_database_answers(settings: Settings, build: Callable[[], T]) -> T:
    """Builds something that needs the database, waiting while it is down.

    A database that refuses for good (no such database or role, a wrong
    password) is not waited for: the DatabaseRefused goes up, in one line.
    """
    delay = 0.5
    while True:
        try:
            check_database(settings)
            return build()
        except DatabaseDown as down:
            reason = str(down)
        except (OperationalError, InterfaceError) as error:
            reason = one_line(error)
        log.warning("Database unreachable (%s); trying again in %.1fs", reason, delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def raise_system_exit(signum: int, _: FrameType | None) -> None:
    """A signal handler that unwinds the main thread."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
