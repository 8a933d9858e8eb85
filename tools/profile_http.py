"""Where a POST add_money's CPU goes in `pocket serve`: the breakdown in
docs/performance.md.

Starts `pocket serve --no-follower --threads 16` on a scratch PostgreSQL database,
drives it with wrk (16 connections, 64 users, a random one per request), measures
the server's CPU per request from /proc, then samples it with py-spy (only the
thread holding the GIL, so the samples are the interpreter's CPU) and sorts each
sample into a part of the request path by the innermost frame it recognises.

    .venv/bin/python -m tools.profile_http [--seconds 10] [--admin-url URL]
        [--server-python OTHER_CHECKOUT/.venv/bin/python]

Needs wrk and py-spy (`pip install py-spy`; sampling another process may need
root or ptrace rights). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tools.bench.figures import Sizes
from tools.bench.http_load import FEW_USERS, sign_up
from tools.bench.servers import beside_python, cpu_seconds, server_process
from tools.bench.wrk import drive, write_script
from tools.scratch import DEFAULT_ADMIN_URL, scratch_postgres

# The parts of the request path, each known by markers in a frame's file or
# function; a sample goes to the innermost frame that matches one.
PARTS = [
    ("database driver (psycopg)", ["psycopg/", "psycopg_pool/"]),
    ("authentication", ["pocket/web/auth.py", "pocket/tokens.py", "pocket/users.py"]),
    (
        "parsing (body, fields, query)",
        [
            "pocket/web/body.py",
            "pocket/web/fields.py",
            "pocket/web/query.py",
            "json/de",
        ],
    ),
    (
        "serialising the answer",
        ["pocket/web/json_views.py", "flask/json/", "json/encoder.py", "jsonify"],
    ),
    (
        "metrics and access log",
        ["pocket/web/observe.py", "prometheus_client/", "logging/"],
    ),
    (
        "the command (Pocket, group commit, eventsourcing)",
        [
            "pocket/groupcommit.py",
            "pocket/unitofwork.py",
            "pocket/wallets.py",
            "pocket/walletcache.py",
            "pocket/walletstore.py",
            "pocket/commands.py",
            "pocket/application.py",
            "pocket/service.py",
            "pocket/domainmodel.py",
            "pocket/idempotency.py",
            "pocket/postgres.py",
            "pocket/postgres_events.py",
            "pocket/results.py",
            "pocket/web/money.py",
            "pocket/web/context.py",
            "eventsourcing/",
        ],
    ),
    ("Flask and Werkzeug", ["flask/", "werkzeug/"]),
    ("server (waitress)", ["waitress/", "pocket/server.py"]),
]
OTHER = "other (threads, locks, the interpreter)"


def part_of(frames: list[str]) -> str:
    """The part of the request path a sampled stack belongs to."""
    for frame in reversed(frames):
        for name, markers in PARTS:
            if any(marker in frame for marker in markers):
                return name
    return OTHER


def breakdown(raw: Path) -> Counter[str]:
    """Samples per part, from py-spy's raw (collapsed stacks) output."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[part_of(stack.split(";"))] += int(count)
    return counts


def main() -> int:
    """Runs the measurement and prints the breakdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument(
        "--server-python",
        default=sys.executable,
        help="the Python of the checkout to serve (another one's .venv/bin/python, "
        "to compare two versions)",
    )
    args = parser.parse_args()
    sizes = Sizes(http_seconds=args.seconds)
    with (
        scratch_postgres(args.admin_url, "pocket_profile") as url,
        tempfile.TemporaryDirectory() as folder,
    ):
        script = write_script(Path(folder, "users.lua"), sign_up(url, FEW_USERS))
        with server_process(url, args.server_python) as (port, server):
            drive([port], script, Sizes(http_seconds=3))  # warm up
            before = cpu_seconds(server.pid)
            (load,) = drive([port], script, sizes)
            used = cpu_seconds(server.pid) - before
            raw = Path(folder, "profile.txt")
            sampler = subprocess.Popen(
                [
                    beside_python("py-spy") or "py-spy",
                    "record",
                    "--pid",
                    str(server.pid),
                    "--gil",
                    "--rate",
                    "400",
                    "--duration",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            drive([port], script, Sizes(http_seconds=args.seconds + 2))
            sampler.wait(60)
            counts = breakdown(raw)
    per_request = used / (load.rate * args.seconds) * 1e6
    print(
        f"POST add_money: {load.rate:,.0f}/s, p50 {load.p50_ms:.1f} ms, "
        f"p99 {load.p99_ms:.1f} ms; server CPU {per_request:,.0f} us a request"
    )
    total = sum(counts.values()) or 1
    for name, count in counts.most_common():
        share = count / total
        print(f"{share:6.1%}  ~{share * per_request:4.0f} us  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
