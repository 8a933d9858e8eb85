"""How a wrk run becomes figures: its rate and p99, or, if any answer failed, a
note instead; the CPU a server spent per request; and the check that the money
the answers say was added is held."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from tools.bench.figures import Results
from tools.bench.wrk import AMOUNT, Load


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


def record_cpu(results: Results, key: str, seconds: float, count: int) -> None:
    """Adds CPU microseconds per request (or per event), when there were some."""
    if count:
        results.add(key, seconds / count * 1e6)


def answered(loads: list[Load]) -> int:
    """Answers to the run's requests, if all were 200s; else 0 (no figure)."""
    if any(load.failures for load in loads):
        return 0
    return sum(load.ok for load in loads)


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


def money_found(held: Decimal, loads: list[Load], where: str) -> str:
    """Raises unless what is held is the amount for every 200 answer, and no more
    than for every request the scripts made (wrk stops with a request in flight
    on each connection, which the server still commits); says so, in words."""
    ok = sum(load.ok for load in loads)
    made = sum(load.made for load in loads)
    found = (
        f"{where} hold {held:,}; wrk had {ok:,} answers 200 to a POST of {AMOUNT} "
        f"and its scripts made {made:,} requests"
    )
    if not ok * AMOUNT <= held <= made * AMOUNT:
        msg = f"Money lost or made up: {found}"
        raise RuntimeError(msg)
    in_flight = (held - ok * AMOUNT) / AMOUNT
    return f"money checked: {found} ({in_flight:,.0f} in flight as wrk stopped)"
