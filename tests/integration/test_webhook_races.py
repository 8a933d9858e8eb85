"""The admin and the webhook follower at the same moment: a subscription made
while events flow and the follower queues them gets every event after its
start position, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from uuid import UUID

import pytest

from pocket.catalog import tracked_position
from pocket.commands import AddMoney, OpenWallet
from pocket.config import Settings
from pocket.database import Transaction
from pocket.runner import PocketRunner
from pocket.system import system
from pocket.webhook_admin import Webhooks
from pocket.webhook_store import DELIVERIES, Subscription, add_subscription
from tests.e2e.processes import wait_for

# Nobody listens here: deliveries fail and stay queued, which is all these
# tests look at.
NOWHERE = "http://127.0.0.1:9/"


@pytest.fixture
def runner(sql_settings: Settings) -> Iterator[PocketRunner]:
    r = PocketRunner(system, dict(sql_settings.env))
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_a_subscription_made_while_events_are_queued_gets_each_one_after_its_start(
    runner: PocketRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its start is the log's head when it is made; a section the follower
    queued between that reading and the subscription's commit did not see it,
    and left out the events after its start (the moment is widened here to
    make the race certain; under load a busy database or pool widens it)."""

    def slowly(tx: Transaction, sub: Subscription) -> None:
        time.sleep(0.15)
        add_subscription(tx, sub)

    monkeypatch.setattr("pocket.webhook_admin.add_subscription", slowly)
    wallets = [runner.pocket.open_wallet(OpenWallet(user_id=str(n))) for n in (1, 2)]
    stopping = threading.Event()

    def write(wallet_id: UUID) -> None:
        while not stopping.is_set():
            command = AddMoney(wallet_id=wallet_id, amount=Decimal(1), source="x")
            runner.pocket.add_money(command)
            time.sleep(0.005)

    writers = [threading.Thread(target=write, args=(w,)) for w in wallets]
    for writer in writers:
        writer.start()
    webhooks = Webhooks.of(runner.pocket)
    try:
        subs = [webhooks.subscribe(NOWHERE, ["money.added"]) for _ in range(5)]
    finally:
        stopping.set()
        for writer in writers:
            writer.join()
    head = webhooks.head()
    wait_for(lambda: followed(webhooks) == head, what="the follower at the head")
    for status in subs:
        sub = status.subscription
        assert queued(webhooks, sub.id) == list(range(sub.start_position + 1, head + 1))


def followed(webhooks: Webhooks) -> int | None:
    with webhooks.db.transaction(commit=False) as tx:
        return tracked_position(tx, DELIVERIES)


def queued(webhooks: Webhooks, subscription_id: UUID) -> list[int]:
    """The positions of a subscription's queued deliveries, in order."""
    rows = webhooks.db.query(
        f"SELECT position FROM {DELIVERIES} WHERE subscription_id = %s "
        "ORDER BY position",
        [subscription_id],
    )
    return [int(row["position"]) for row in rows]
