"""The baselines Pocket's HTTP figures are printed beside, each served by pocket
serve's own server in a process of its own (tools.bench.baseline_apps): GET
/health of a bare Flask app, and deposits through the eventsourcing library's
documented shape (an Application, an aggregate, one save per request) on a
PostgreSQL database of its own, with the server's CPU per request."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pocket.config import Settings
from tools.bench.baseline_apps import Accounts
from tools.bench.figures import CALLERS, Results, Sizes
from tools.bench.http_figures import answered, money_found, record, record_cpu
from tools.bench.servers import baseline_process, cpu_seconds
from tools.bench.wrk import drive, write_posts
from tools.scratch import scratch_postgres


def bare_flask(health: Path, sizes: Sizes, results: Results) -> None:
    """GET /health of a bare Flask app on pocket serve's server."""
    with baseline_process("flask") as (port, _):
        record(results, "http_flask", drive([port], health, sizes))


def library_shape(
    admin_url: str, accounts_count: int, folder: Path, sizes: Sizes, results: Results
) -> None:
    """POST deposit through the library's documented shape, over accounts_count
    accounts opened beforehand, driven as add_money is; checks the money."""
    with scratch_postgres(admin_url, "pocket_bench_library") as url:
        # A connection for each of the server's threads, as Pocket's pool has.
        env = {**Settings.from_url(url).env, "POSTGRES_POOL_SIZE": str(CALLERS)}
        accounts = Accounts(env=env)
        try:
            ids = [accounts.open_account() for _ in range(accounts_count)]
            targets = [(f"/accounts/{account_id}/deposit", "") for account_id in ids]
            script = write_posts(folder / "library.lua", targets)
            with baseline_process("library", env) as (port, server):
                before = cpu_seconds(server.pid)
                loads = record(results, "http_library", drive([port], script, sizes))
                used = cpu_seconds(server.pid) - before
            record_cpu(results, "http_library_cpu_us", used, answered(loads))
            held = sum((accounts.balance(i) for i in ids), Decimal(0))
            events = accounts.recorder.max_notification_id() or 0
        finally:
            accounts.close()
    results.note(money_found(held, loads, f"the library's {len(ids)} accounts"))
    # Each request replays its account's events (the shape takes no snapshots):
    # the more a run deposits, the longer each request takes.
    results.note(
        f"library shape: {events / len(ids):,.0f} events an account at the end "
        "(each request replays them all: no snapshots, no cache)"
    )
