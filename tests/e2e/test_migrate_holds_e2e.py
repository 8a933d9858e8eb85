"""End to end on PostgreSQL: `pocket migrate` from wallet_records v2 to v3 while a
client adds money over HTTP to a real `pocket serve`, another process places,
captures and voids holds on the same wallets, and a real `pocket follow` keeps
the live version. (The API has no hold routes on this branch: the holds go
through the Python API, from the test's process.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.commands import CaptureHold, VoidHold
from pocket.config import Settings
from pocket.errors import ConcurrencyConflict
from pocket.migration import migrate
from tests.e2e.processes import (
    Api,
    follow,
    records,
    replay,
    run_pocket,
    serve,
    wait_for,
)
from tests.e2e.test_operations_e2e import Writer, signed_up
from tests.holds import place

pytestmark = pytest.mark.e2e
T = TypeVar("T")


class Holder(threading.Thread):
    """Places holds on a wallet (for a shop, and for the payee's wallet), captures
    one in part and one whole, voids one, and leaves one open, round after round."""

    def __init__(self, pocket: Pocket, wallet: UUID, payee: UUID) -> None:
        super().__init__(daemon=True)
        self.pocket, self.wallet, self.payee = pocket, wallet, payee
        self.rounds = self.conflicts = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        wallet = self.wallet
        try:
            while not self.stopping.is_set():
                shop = self.retried(lambda: self.place("0.40", destination="shop"))
                friend = self.retried(
                    lambda: self.place("0.30", receiver_id=self.payee)
                )
                dropped = self.retried(lambda: self.place("0.20", destination="cafe"))
                self.retried(lambda: self.place("0.01", destination="left open"))
                part = CaptureHold(
                    wallet_id=wallet, hold_id=shop, amount=Decimal("0.25")
                )
                self.retried(partial(self.pocket.capture_hold, part))
                whole = CaptureHold(wallet_id=wallet, hold_id=friend)
                self.retried(partial(self.pocket.capture_hold, whole))
                voided = VoidHold(wallet_id=wallet, hold_id=dropped)
                self.retried(partial(self.pocket.void_hold, voided))
                self.rounds += 1
        except BaseException as error:
            self.error = error

    def place(self, amount: str, **to: Any) -> UUID:
        return place(self.pocket, self.wallet, amount, **to)

    def retried(self, command: Callable[[], T]) -> T:
        """A command sent again while the server process's writes to the same
        wallet keep beating it (as the API answers 409 concurrent_update, and
        the writer sends its key again): a conflict applied nothing."""
        while True:
            try:
                return command()
            except ConcurrencyConflict:
                self.conflicts += 1


def wallet_of(api: Api, user_id: int) -> UUID:
    status, body = api.get(f"/users/{user_id}")
    assert status == 200, body
    return UUID(body["wallet"]["aggregate_id"])


def test_a_migration_to_v3_while_holds_come_and_go_in_another_process(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    settings = Settings.from_url(postgres_url)
    pocket = open_pocket(settings)
    try:
        open_catalog(pocket)
        migrate(pocket, target=2, out=lambda _: None)  # deployed before v3
        server, api = serve(tmp_path, env, "--no-follower")
        follower = follow(tmp_path, env)
        try:
            user, user_id = signed_up(api)
            payee, payee_id = signed_up(api)
            status, body = user.post(
                f"/users/{user_id}/add_money", {"amount": "500", "source": "seed"}
            )
            assert status == 200, body
            holder = Holder(
                pocket, wallet_of(user, user_id), wallet_of(payee, payee_id)
            )
            with Writer(user, user_id) as writer:
                holder.start()
                try:
                    wait_for(lambda: holder.rounds > 10, what="holds before")
                    up = run_pocket(tmp_path, env, "migrate", "--batch-size", "5")
                    assert up.returncode == 0, up.stderr
                    assert "wallet_records v3 is live (was v2)." in up.stdout
                    after = holder.rounds
                    wait_for(lambda: holder.rounds > after + 10, what="holds after")
                finally:
                    holder.stopping.set()
                    holder.join(30)
            assert holder.error is None, holder.error
            # Two processes writing one wallet as fast as they can: some of the
            # writer's tries lose every retry, and are sent again, under their key.
            assert set(writer.answers) <= {"200", "409 concurrent_update"}
            wait_for(
                lambda: records(settings) == replay(settings), what="the projection"
            )
            row = records(settings)[holder.wallet]
            assert row.held == Decimal("0.01") * holder.rounds
            assert row.available == row.balance - row.held
            report = json.loads(run_pocket(tmp_path, env, "status", "--json").stdout)
            (projection,) = report["projections"]
            assert projection["live_version"] == 3
            assert [v["version"] for v in projection["versions"]] == [3]
            checked = run_pocket(tmp_path, env, "verify")
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert "0 mismatch(es)" in checked.stdout
            assert follower.process.poll() is None, follower.output
        finally:
            follower.close()
            server.close()
    finally:
        pocket.close()
