"""The benchmark's HTTP figures: add_money through `pocket serve` under wrk,
beside GET /health of the same server and of a bare Flask app, and beside the
eventsourcing library's documented shape; with few users and many, on one
server and two, with the follower in the server and in a process of its own,
and under granian for comparison; a run with any failed answer is a note, not a
figure; and the money the answers say was added is checked."""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from pocket.application import Pocket
from pocket.bootstrap import bootstrap
from pocket.config import Settings
from tools.bench.deployments import deployments
from tools.bench.figures import CALLERS, Results, Sizes
from tools.bench.http_baselines import bare_flask, library_shape
from tools.bench.http_figures import money_found, record
from tools.bench.servers import granian_serving, serving
from tools.bench.wrk import BenchUser, Load, drive, write_script, wrk_command
from tools.scratch import DEFAULT_ADMIN_URL

# The users add_money picks from (few, then many).
FEW_USERS = 64
MANY_USERS = 2000
WRK_MISSING = "wrk not installed: apt-get install wrk (no HTTP figures)"
GRANIAN_MISSING = "granian not installed: pip install granian (no comparison figures)"
LIBRARY_ON_POSTGRES = "the library's shape is measured on PostgreSQL only"


def http_api(
    pocket: Pocket,
    url: str,
    sizes: Sizes,
    results: Results,
    admin_url: str = DEFAULT_ADMIN_URL,
) -> None:
    """add_money through `pocket serve`, driven by wrk, beside GET /health of the
    same server and of a bare Flask app, and beside the library's shape; then
    with more users, on two servers at once, and with the follower in the
    server or beside it. Checks that the wallets hold the money the answers say
    was added."""
    if wrk_command() is None:
        results.note(WRK_MISSING)
        return
    users = sign_up(url, FEW_USERS + MANY_USERS)
    few, many = users[:FEW_USERS], users[FEW_USERS:]
    with tempfile.TemporaryDirectory(prefix="pocket-bench-wrk-") as directory:
        folder = Path(directory)
        health = write_script(folder / "health.lua", [])
        few_script = write_script(folder / "few.lua", few)
        many_script = write_script(folder / "many.lua", many)
        # Routed by user: each server gets its own half of the users (as a proxy
        # routing on the user id in the path would), so no wallet is written by
        # both and neither server's cached wallets go stale.
        halves = [write_script(folder / f"half{n}.lua", many[n::2]) for n in (0, 1)]
        bare_flask(health, sizes, results)
        if Settings.from_url(url).is_postgres:
            library_shape(admin_url, FEW_USERS, folder, sizes, results)
        else:
            results.note(LIBRARY_ON_POSTGRES)
        with serving(url) as port:
            record(results, "http_trivial", drive([port], health, sizes))
            loads = record(
                results, "http_add_money", drive([port], few_script, sizes), p50=True
            )
            loads += record(
                results, "http_add_money_2000", drive([port], many_script, sizes)
            )
            with granian_serving(url) as other:
                if other is None:
                    results.note(GRANIAN_MISSING)
                else:
                    record(
                        results, "http_granian_trivial", drive([other], health, sizes)
                    )
                    loads += record(
                        results, "http_granian", drive([other], few_script, sizes)
                    )
            with serving(url) as second:
                loads += record(
                    results,
                    "http_two_processes",
                    drive([port, second], many_script, sizes),
                )
                loads += record(
                    results,
                    "http_two_routed",
                    drive([port, second], halves, sizes),
                )
        loads += deployments(pocket, url, few_script, sizes, results)
    # The servers have stopped: what wrk left in flight has landed, or never will.
    results.note(check_money(pocket, users, loads))


def sign_up(url: str, count: int) -> list[BenchUser]:
    """New users, signed up through PocketService (what POST /users calls) from
    several threads: quicker than over HTTP, and the same rows and events."""
    service = bootstrap(Settings.from_url(url))

    def one(_: int) -> BenchUser:
        account, token = service.create_user("bench")
        return BenchUser(account.user.id, token, account.user.wallet_id)

    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            return list(pool.map(one, range(count)))
    finally:
        service.close()


def check_money(pocket: Pocket, users: list[BenchUser], loads: list[Load]) -> str:
    """Raises unless the users' wallets hold the amount for every 200 answer to
    add_money, and no more than for every request the scripts made; returns
    what it found, in words."""
    held = settled_total(pocket, users)
    return money_found(held, loads, f"the {len(users):,} users' wallets")


def settled_total(pocket: Pocket, users: list[BenchUser]) -> Decimal:
    """The sum of the users' balances, once two reads a moment apart agree: the
    requests wrk left in flight are answered after it stops."""
    held = None
    for _ in range(20):
        again = sum(
            (pocket.get_wallet(user.wallet_id).balance for user in users), Decimal(0)
        )
        if again == held:
            break
        held = again
        time.sleep(0.5)
    assert held is not None
    return held
