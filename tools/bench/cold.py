"""`python -m tools.bench.cold URL WALLET`: one command on a wallet not yet
loaded, in the new process the history figures start for it; prints its
milliseconds."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from uuid import UUID

from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, OpenWallet
from pocket.config import Settings


def cold_command(url: str, wallet_id: str) -> float:
    """(In a new process.) Milliseconds of one command on a wallet not yet loaded."""
    pocket = open_pocket(Settings.from_url(url))
    warm = pocket.open_wallet(OpenWallet(user_id="warm-up"))
    pocket.add_money(
        AddMoney(wallet_id=warm, amount=Decimal("1"), source="warm-up")
    )  # connections, committer, imports
    started = time.perf_counter()
    pocket.add_money(
        AddMoney(wallet_id=UUID(wallet_id), amount=Decimal("1"), source="cold")
    )
    elapsed = (time.perf_counter() - started) * 1000
    pocket.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Prints the milliseconds of one cold command (the history figures' own)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2:
        print(f"{cold_command(args[0], args[1]):.3f}")
        return 0
    print("Use `make bench`.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
