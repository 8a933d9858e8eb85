"""`python -m tools.bench` (what `make bench` runs): prints the table, or JSON,
of every figure beside its baseline; progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import os
import sys

from pocket.cli import positive_int
from tools.bench.figures import TINY, Sizes
from tools.bench.report import report
from tools.bench.run import run
from tools.scratch import DEFAULT_ADMIN_URL


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's options: which backends, where PostgreSQL is, the sizes."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench",
        description="measure throughput and latency, each beside its baseline",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes: checks it runs, figures mean nothing",
    )
    parser.add_argument(
        "--backend", choices=["sqlite", "postgres", "both"], default="both"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("POCKET_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL),
        help="a server where the benchmark may create and drop databases",
    )
    defaults = Sizes()
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument(
        "--http-seconds",
        type=positive_int,
        default=defaults.http_seconds,
        help=f"each wrk run, in whole seconds ({defaults.http_seconds})",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=defaults.events,
        help="events to catch up and rebuild",
    )
    parser.add_argument("--history-events", type=int, default=defaults.history_events)
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; prints the table (or JSON) of figures and baselines."""
    args = build_parser().parse_args(argv)
    sizes = (
        TINY
        if args.tiny
        else Sizes(
            commands=args.commands,
            http_seconds=args.http_seconds,
            events=args.events,
            history_events=args.history_events,
        )
    )
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results = run(
        sizes,
        backends,
        args.postgres_url,
        out=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps({r.backend: r.figures for r in results}, indent=2))
    else:
        print(report(results, sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
