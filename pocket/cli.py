"""The `pocket` command: serve the HTTP API, or follow the event log."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from waitress import create_server

from pocket.config import ConfigurationError, Settings
from pocket.service import PocketService, build_follower
from pocket.web import create_app

log = logging.getLogger("pocket")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `pocket` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("POCKET_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = Settings.from_environ()
    except ConfigurationError as error:
        parser.error(str(error))
    command: Callable[[argparse.Namespace, Settings], int] = args.command
    return command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    """The command line's grammar."""
    parser = argparse.ArgumentParser(prog="pocket", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="command")

    serve_parser = commands.add_parser("serve", help="serve the HTTP API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=5000)
    serve_parser.add_argument(
        "--threads", type=int, default=8, help="requests handled at once (8)"
    )
    serve_parser.add_argument(
        "--no-follower",
        action="store_true",
        help="do not run the projection follower in this process",
    )
    serve_parser.set_defaults(command=serve)

    follow_parser = commands.add_parser(
        "follow", help="follow the event log into the wallet_records projection"
    )
    follow_parser.add_argument(
        "--batch-size", type=int, default=500, help="events per transaction (500)"
    )
    follow_parser.set_defaults(command=follow)
    return parser


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serves the API with waitress until SIGTERM or SIGINT."""
    service = PocketService(settings, follow=not args.no_follower)
    try:
        server = create_server(
            create_app(service), host=args.host, port=args.port, threads=args.threads
        )
        follower = "no follower" if args.no_follower else "follower in this process"
        print(
            f"Pocket serving on http://{args.host}:{server.effective_port} "
            f"({follower})\nData: {settings.description}",
            flush=True,
        )
        # waitress shuts down cleanly on SystemExit; make SIGTERM raise it too.
        signal.signal(signal.SIGTERM, raise_system_exit)
        server.run()
    finally:
        service.close()
    return 0


def follow(args: argparse.Namespace, settings: Settings) -> int:
    """Follows Pocket's log until SIGTERM or SIGINT, between two transactions."""
    follower = build_follower(settings)
    follower.batch_size = args.batch_size

    def stop(signum: int, _: FrameType | None) -> None:
        log.info(
            "Received %s; stopping after the batch in hand", signal.strsignal(signum)
        )
        follower.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("Following %s from position %s", settings.description, follower.position)
    try:
        follower.run()
        log.info("Stopped at position %s", follower.position)
    finally:
        follower.pocket.close()
    return 0


def raise_system_exit(signum: int, _: FrameType | None) -> None:
    """A signal handler that unwinds the main thread."""
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
