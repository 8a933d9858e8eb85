"""pocket migrate from wallet_records v2 to v3 while holds are placed, captured
and voided and money is added, on SQLite and PostgreSQL: after the switch v3's
rows are a fold of the whole log (balance, held, available, version), each event
applied once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from uuid import UUID

import pytest

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.commands import AddMoney, CaptureHold, OpenWallet, VoidHold
from pocket.config import Settings
from pocket.migration import migrate
from pocket.operations import verify
from pocket.runner import PocketRunner
from pocket.system import WalletRecordsV3, system
from tests.holds import PAYER_HELD, hold_history, place
from tests.integration.test_operations import quiet, readers_see
from tests.replay import replayed_records


@pytest.fixture
def v2_live(sql_settings: Settings) -> Settings:
    """A database on which v2 is live, as one deployed before v3 existed."""
    pocket = open_pocket(sql_settings)
    try:
        open_catalog(pocket)  # A new database starts on the latest version...
        migrate(pocket, target=2, out=quiet)  # ...so go back to v2 (v3 dropped).
    finally:
        pocket.close()
    return sql_settings


class Shopper(threading.Thread):
    """Places holds on its own wallet, for a shop and for the shared payee;
    captures one in part, one whole to the payee, voids one; adds money; round
    after round until stopped."""

    def __init__(self, pocket: Pocket, payee: UUID) -> None:
        super().__init__(daemon=True)
        self.pocket, self.payee = pocket, payee
        self.wallet = pocket.open_wallet(OpenWallet(user_id="shopper"))
        pocket.add_money(
            AddMoney(wallet_id=self.wallet, amount=Decimal(1000), source="seed")
        )
        self.rounds = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        pocket, wallet = self.pocket, self.wallet
        try:
            while not self.stopping.is_set():
                shop = place(pocket, wallet, "2.00", destination="shop")
                friend = place(pocket, wallet, "1.50", receiver_id=self.payee)
                dropped = place(pocket, wallet, "0.75", destination="cafe")
                place(pocket, wallet, "0.10", destination="left open")
                pocket.capture_hold(
                    CaptureHold(wallet_id=wallet, hold_id=shop, amount=Decimal("1.25"))
                )
                pocket.capture_hold(CaptureHold(wallet_id=wallet, hold_id=friend))
                pocket.void_hold(VoidHold(wallet_id=wallet, hold_id=dropped))
                pocket.add_money(
                    AddMoney(wallet_id=wallet, amount=Decimal("1.00"), source="pay")
                )
                self.rounds += 1
        except BaseException as error:
            self.error = error


def rounds(shoppers: list[Shopper]) -> int:
    return sum(shopper.rounds for shopper in shoppers)


def wait_for_rounds(shoppers: list[Shopper], more_than: int) -> None:
    deadline = time.monotonic() + 60
    while rounds(shoppers) <= more_than:
        assert all(s.error is None for s in shoppers), [s.error for s in shoppers]
        assert time.monotonic() < deadline, "the shoppers stalled"
        time.sleep(0.05)


def test_a_migration_to_v3_under_holds_leaves_rows_that_fold_the_whole_log(
    v2_live: Settings,
) -> None:
    runner = PocketRunner(system, dict(v2_live.env))
    runner.start()
    pocket = runner.pocket
    try:
        payer, payee = hold_history(pocket)  # v2 follows these before v3 exists
        shoppers = [Shopper(pocket, payee) for _ in range(3)]
        for shopper in shoppers:
            shopper.start()
        try:
            wait_for_rounds(shoppers, more_than=20)
            during = rounds(shoppers)
            assert migrate(pocket, batch_size=10, out=quiet) == 3
            after_switch = rounds(shoppers)
            wait_for_rounds(shoppers, more_than=after_switch + 5)
        finally:
            for shopper in shoppers:
                shopper.stopping.set()
            for shopper in shoppers:
                shopper.join(30)
        assert [s.error for s in shoppers] == [None] * len(shoppers)
        assert after_switch > during  # holds came and went while v3 was built
        head = pocket.recorder.max_notification_id()
        live = runner.get(WalletRecordsV3)
        live.recorder.wait("Pocket", head, timeout=30)
        catalog = open_catalog(pocket)
        assert catalog.live_version() == 3
        assert catalog.positions() == {3: head}  # v2 dropped once switched
        rows = {r.aggregate_id: r for r in catalog.records(3)}
        assert rows == replayed_records(pocket, 3)
        assert readers_see(pocket) == rows
        for shopper in shoppers:  # each round leaves one hold of 0.10 open
            row = rows[shopper.wallet]
            assert row.held == Decimal("0.10") * shopper.rounds
            assert row.balance == 1000 - Decimal("1.75") * shopper.rounds
            assert row.available == row.balance - row.held
        assert rows[payer].held == PAYER_HELD
        assert verify(pocket, out=quiet) == 0
    finally:
        runner.stop()
