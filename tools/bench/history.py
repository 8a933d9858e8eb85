"""The benchmark's history figures: does a long history slow a command (in a new
process, the wallet not yet loaded) or a page of transactions at its end?"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from uuid import UUID

from pocket.application import Pocket
from pocket.domainmodel import Cause, Wallet
from tools.bench.figures import Results, Sizes

# The checkout holding tools/, where `python -m tools.bench.cold` is found.
CHECKOUT = Path(__file__).resolve().parents[2]


def history(pocket: Pocket, url: str, sizes: Sizes, results: Results) -> None:
    """A command and a page on a short and on a long history."""
    small = long_wallet(pocket, 10)
    large = long_wallet(pocket, sizes.history_events)
    results.add("latency_small", cold_latency(url, small, sizes.repeats))
    results.add("latency_large", cold_latency(url, large, sizes.repeats))
    last = pocket.get_wallet(large).version
    results.add("page_start", page_latency(pocket, large, 0, sizes.repeats * 4))
    results.add("page_end", page_latency(pocket, large, last - 50, sizes.repeats * 4))


def long_wallet(pocket: Pocket, events: int) -> UUID:
    """A wallet with about that many events, written a thousand at a time."""
    wallet = Wallet.open("history", uuid.uuid4(), Cause())
    for n in range(1, events):
        wallet.add_money(Decimal("0.01"), "bench", Cause())
        if n % 1000 == 0:
            pocket.save(wallet)
    pocket.save(wallet)
    return wallet.id


def cold_latency(url: str, wallet_id: UUID, repeats: int) -> float:
    """Median milliseconds of the first command on a wallet, in a new process."""
    timings = []
    for _ in range(repeats):
        answer = subprocess.run(
            [sys.executable, "-m", "tools.bench.cold", url, str(wallet_id)],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            check=True,
        )
        timings.append(float(answer.stdout.strip().splitlines()[-1]))
    return statistics.median(timings)


def page_latency(pocket: Pocket, wallet_id: UUID, after: int, repeats: int) -> float:
    """Median milliseconds to read one page of 50 transactions."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        page = pocket.history(wallet_id, after=after, limit=50)
        timings.append((time.perf_counter() - started) * 1000)
        assert page.transactions
    return statistics.median(timings)
