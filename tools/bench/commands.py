"""The benchmark's commands through the Python API: add_money per second from one
caller, then from many at once (each on its own wallet, then all on one hot
wallet), and how many the group commit put in a transaction."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from uuid import UUID

from pocket.application import Pocket
from pocket.commands import AddMoney, OpenWallet
from tools.bench.figures import CALLERS, Results, Sizes, rate


def python_api(pocket: Pocket, sizes: Sizes, results: Results) -> None:
    """Commands per second from 1 caller, then from 16 at once, then from 16 at
    once on one wallet (whose commands must be decided one after another)."""
    results.add("commands_1", commands_per_second(pocket, 1, sizes.commands))
    batches, commands = pocket.commit_counts
    results.add("commands_16", commands_per_second(pocket, CALLERS, sizes.commands))
    batches_after, commands_after = pocket.commit_counts
    grouped = (commands_after - commands) / max(1, batches_after - batches)
    results.add("group_size", grouped)
    results.add("commands_hot", commands_per_second(pocket, CALLERS, sizes.commands, 1))


def commands_per_second(
    pocket: Pocket, callers: int, total: int, wallets_count: int | None = None
) -> float:
    """add_money calls per second, from callers threads, each on its own wallet
    (or spread over wallets_count wallets)."""
    count = callers if wallets_count is None else wallets_count
    created = [
        pocket.open_wallet(OpenWallet(user_id=f"bench-{n}")) for n in range(count)
    ]
    wallets = [created[n % count] for n in range(callers)]
    each = max(1, total // callers)
    start = threading.Barrier(callers + 1)

    def work(wallet_id: UUID) -> None:
        start.wait()
        for _ in range(each):
            command = AddMoney(
                wallet_id=wallet_id, amount=Decimal("1.00"), source="bench"
            )
            pocket.add_money(command)

    threads = [threading.Thread(target=work, args=(w,)) for w in wallets]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return rate(each * callers, started)
