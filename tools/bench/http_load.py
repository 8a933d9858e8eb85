"""The benchmark's HTTP figures: add_money through `pocket serve` under wrk,
beside GET /health of the same server, with few users and many, on one server
and two, and under granian for comparison; a run with any failed answer is a
note, not a figure; and the money the answers say was added is checked."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from pocket.application import Pocket
from pocket.bootstrap import bootstrap
from pocket.config import Settings
from tools.bench.figures import CALLERS, Results, Sizes
from tools.bench.servers import granian_serving, serving
from tools.bench.wrk import AMOUNT, BenchUser, Load, drive, write_script, wrk_command

# The users add_money picks from (few, then many).
FEW_USERS = 64
MANY_USERS = 2000
WRK_MISSING = "wrk not installed: apt-get install wrk (no HTTP figures)"
GRANIAN_MISSING = "granian not installed: pip install granian (no comparison figures)"


def http_api(pocket: Pocket, url: str, sizes: Sizes, results: Results) -> None:
    """add_money through `pocket serve`, driven by wrk, beside GET /health of the
    same server; then with more users, then on two servers at once. Checks that
    the wallets hold the money the answers say was added."""
    if wrk_command() is None:
        results.note(WRK_MISSING)
        return
    users = sign_up(url, FEW_USERS + MANY_USERS)
    few, many = users[:FEW_USERS], users[FEW_USERS:]
    with tempfile.TemporaryDirectory(prefix="pocket-bench-wrk-") as directory:
        health = write_script(Path(directory, "health.lua"), [])
        few_script = write_script(Path(directory, "few.lua"), few)
        many_script = write_script(Path(directory, "many.lua"), many)
        # Routed by user: each server gets its own half of the users (as a proxy
        # routing on the user id in the path would), so no wallet is written by
        # both and neither server's cached wallets go stale.
        halves = [
            write_script(Path(directory, f"half{n}.lua"), many[n::2]) for n in (0, 1)
        ]
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
                # While both servers run: what wrk left in flight has landed.
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


def record(
    results: Results, key: str, loads: list[Load], *, p50: bool = False
) -> list[Load]:
    """Adds a run's rate (summed over its wrk processes) and p99 (the worse), and
    p50 if asked; or, if any answer was not a 200 or a socket failed, a note
    instead of the figures: failures are never counted as throughput."""
    if any(load.failures for load in loads):
        results.note(f"{key} left out: {describe_failures(loads)}")
        return loads
    results.add(key, sum(load.rate for load in loads))
    results.add(f"{key}_p99", max(load.p99_ms for load in loads))
    if p50:
        (load,) = loads
        results.add(f"{key}_p50", load.p50_ms)
    return loads


def describe_failures(loads: list[Load]) -> str:
    """What went wrong in a run, in words."""
    statuses: Counter[int] = Counter()
    for load in loads:
        statuses.update(load.statuses)
    answers = ", ".join(
        f"{count:,} x {status}" for status, count in sorted(statuses.items())
    )
    sockets = sum(load.socket_errors for load in loads)
    return f"answers {answers}; {sockets:,} socket errors"


def check_money(pocket: Pocket, users: list[BenchUser], loads: list[Load]) -> str:
    """Raises unless the users' wallets hold the amount for every 200 answer to
    add_money, and no more than for every request the scripts made (wrk stops
    with a request in flight on each connection, which the server still
    commits); returns what it found, in words."""
    held = settled_total(pocket, users)
    ok = sum(load.ok for load in loads)
    made = sum(load.made for load in loads)
    found = (
        f"the {len(users):,} users' wallets hold {held:,}; wrk had {ok:,} answers "
        f"200 to add_money {AMOUNT} and its scripts made {made:,} requests"
    )
    if not ok * AMOUNT <= held <= made * AMOUNT:
        msg = f"Money lost or made up: {found}"
        raise RuntimeError(msg)
    in_flight = (held - ok * AMOUNT) / AMOUNT
    return f"money checked: {found} ({in_flight:,.0f} in flight as wrk stopped)"


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
