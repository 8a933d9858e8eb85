"""What `pocket serve` costs, this checkout against another, in one run: the
figures issue-style targets are stated in ("against the commit before this
work"), which `make bench` cannot give since it runs one checkout.

For each round, for each checkout (this one, then the other), on one scratch
PostgreSQL database with 64 users: `pocket serve` as `make run` starts it (its
follower in the process, its default threads), then `pocket serve --no-follower`
beside a `pocket follow`; each warmed up for 2 s, then driven by wrk (16
connections, a random user's add_money per request) for --seconds. Prints, per
run, the rate, p99, the server's CPU per request and the follower process's CPU
per event; then each checkout's ranges, and this one's over the other's.

    .venv/bin/python -m tools.ab_serve --against ../pocket-before [--rounds 2]

The other checkout runs on this checkout's virtual environment (its own code
first on PYTHONPATH), so the two differ in Pocket's code only. Needs wrk. Linux
only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tools.bench.figures import Sizes
from tools.bench.http_load import FEW_USERS, sign_up
from tools.bench.servers import cpu_seconds, pocket_env, started, wait_until_serving
from tools.bench.wrk import drive, write_script
from tools.scratch import DEFAULT_ADMIN_URL, free_port, scratch_postgres

HERE = Path(__file__).resolve().parent.parent
MODES = ("default", "split")


@dataclass(frozen=True)
class Run:
    """One measured run of one checkout in one mode."""

    checkout: str
    mode: str
    rate: float
    p99_ms: float
    server_us: float  # CPU per request, the server process
    follower_us: float | None  # CPU per request, the pocket follow process


def process(
    command: list[str], checkout: Path, url: str
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """A pocket command of a checkout on the database while the block runs (run
    in the checkout: `python -m` puts the working folder first on the path)."""
    env = {**pocket_env(url), "PYTHONPATH": str(checkout)}
    return started(command, env, cwd=checkout)


def measure(
    label: str, checkout: Path, mode: str, *, url: str, script: Path, seconds: int
) -> Run:
    """One run: the server (and follower) started fresh, warmed up, measured."""
    port = free_port()
    serve = [sys.executable, "-m", "pocket.cli", "serve", "--port", str(port)]
    if mode == "split":
        serve.append("--no-follower")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(process(serve, checkout, url))
        wait_until_serving(port, server, f"{label} pocket serve")
        follower = None
        if mode == "split":
            follow = [sys.executable, "-m", "pocket.cli", "follow"]
            follower = stack.enter_context(process(follow, checkout, url))
            time.sleep(2)  # Takes its lock and catches up before the clock starts.
        drive([port], script, Sizes(http_seconds=2))
        time.sleep(1)
        before = cpu_seconds(server.pid)
        before_follower = cpu_seconds(follower.pid) if follower else 0.0
        (load,) = drive([port], script, Sizes(http_seconds=seconds))
        time.sleep(1)  # The follower applies what the run wrote.
        requests = load.rate * seconds
        used = cpu_seconds(server.pid) - before
        followed = cpu_seconds(follower.pid) - before_follower if follower else None
    if load.failures:
        msg = f"{label} {mode}: {load.failures} answers other than 200"
        raise RuntimeError(msg)
    return Run(
        label,
        mode,
        load.rate,
        load.p99_ms,
        used / requests * 1e6,
        None if followed is None else followed / requests * 1e6,
    )


def spread(values: list[float]) -> str:
    """A range, as the summary prints it."""
    return f"{min(values):,.0f}-{max(values):,.0f}"


def main() -> int:
    """Runs the rounds and prints every run, then the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args()
    checkouts = {"this": HERE, "other": args.against.resolve()}
    runs: list[Run] = []
    with (
        scratch_postgres(args.admin_url, "pocket_ab") as url,
        tempfile.TemporaryDirectory() as folder,
    ):
        script = write_script(Path(folder, "users.lua"), sign_up(url, FEW_USERS))
        for _ in range(args.rounds):
            for label, checkout in checkouts.items():
                for mode in MODES:
                    run = measure(
                        label,
                        checkout,
                        mode,
                        url=url,
                        script=script,
                        seconds=args.seconds,
                    )
                    runs.append(run)
                    follower = (
                        f", follower {run.follower_us:,.0f} us a request"
                        if run.follower_us is not None
                        else ""
                    )
                    print(
                        f"{label:5} {mode:7} {run.rate:7,.0f}/s "
                        f"p99 {run.p99_ms:5.1f} ms, "
                        f"server {run.server_us:6,.0f} us a request{follower}",
                        flush=True,
                    )
    print()
    for mode in MODES:
        mine = [r for r in runs if r.checkout == "this" and r.mode == mode]
        theirs = [r for r in runs if r.checkout == "other" and r.mode == mode]
        ratio = (sum(r.server_us for r in mine) / len(mine)) / (
            sum(r.server_us for r in theirs) / len(theirs)
        )
        print(
            f"{mode:7} rate this {spread([r.rate for r in mine])}/s, other "
            f"{spread([r.rate for r in theirs])}/s; server CPU a request this "
            f"{spread([r.server_us for r in mine])} us, other "
            f"{spread([r.server_us for r in theirs])} us: {ratio:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
