"""The admin, the webhook follower and a sender at the same moment, on SQLite and
PostgreSQL: a subscription made while events are queued gets every event after
its start position; the admin's changes wait for a follower's transaction a
bounded time; a replay queued while a try is in flight is sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from pocket.bootstrap import bootstrap, open_pocket
from pocket.catalog import tracked_position
from pocket.commands import AddMoney, OpenWallet
from pocket.config import Settings
from pocket.database import Database, Transaction
from pocket.runner import PocketRunner
from pocket.web import create_app
from pocket.webhook_admin import Webhooks
from pocket.webhook_store import (
    DELIVERIES,
    LOCK_TIMEOUT_SECONDS,
    REPLAYS,
    SUBSCRIPTIONS,
    Subscription,
    add_subscription,
    create_tables,
    due_heads,
    enqueue,
    mark_delivered,
    mark_failed,
    requeue,
)
from tests.e2e.processes import wait_for
from tests.receiver import running
from tests.web.test_ledger_api import ADMIN
from tests.web.test_ledger_api import ADMIN_TOKEN as TOKEN

# Nobody listens here: deliveries fail and stay queued, which is all these
# tests look at.
NOWHERE = "http://127.0.0.1:9/"


@pytest.fixture
def runner(sql_settings: Settings) -> Iterator[PocketRunner]:
    with running(sql_settings) as r:
        yield r


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


@pytest.mark.parametrize("came_to", ["delivered", "parked"])
def test_a_replay_asked_for_during_a_try_is_not_undone_by_what_the_try_came_to(
    sql_settings: Settings, came_to: str
) -> None:
    """The follower queues a replay's section while a sender has one of its
    deliveries in flight: the try's outcome, recorded after, is of the
    delivery as it was, and leaves the replay's to be sent (not marked
    delivered, nor parked for a retry period the replay began anew)."""
    pocket = open_pocket(sql_settings)
    db = Database.of(pocket)
    sub = Subscription(uuid4(), NOWHERE, ("*",), None, None, "", "s", 0, time.time())
    row = (sub.id, uuid4(), 1, uuid4(), "money.added", "{}")
    try:
        with db.transaction() as tx:
            create_tables(tx)
            add_subscription(tx, sub)
            enqueue(tx, [row], time.time() - 100)
        with db.transaction(commit=False) as tx:
            (in_flight,) = due_heads(tx, sub.id, time.time(), 10)
        with db.transaction() as tx:
            requeue(tx, [row], time.time())  # The replay, meanwhile.
        with db.transaction() as tx:
            if came_to == "delivered":
                mark_delivered(tx, in_flight, time.time())
            else:  # Its retry period, counted from its first queueing, is over.
                mark_failed(tx, in_flight, "HTTP 500", time.time(), None)
        with db.transaction(commit=False) as tx:
            (replayed,) = due_heads(tx, sub.id, time.time(), 10)
        assert (replayed.status, replayed.attempts) == ("pending", 0)
    finally:
        pocket.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "held"),
    [
        ("post", "/admin/webhooks", {"url": NOWHERE}, SUBSCRIPTIONS),
        ("delete", "/admin/webhooks/{id}", None, SUBSCRIPTIONS),
        ("post", "/admin/webhooks/{id}/replay", {"from_position": 1}, REPLAYS),
    ],
)
def test_a_follower_that_never_ends_its_transaction_makes_a_change_a_503_not_a_hang(
    postgres_url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    held: str,
) -> None:
    """A follower frozen (or cut off) in the middle of queueing a section (or a
    replay's) holds its rows: the admin's change waits LOCK_TIMEOUT_SECONDS at
    most, then is refused as the database being unavailable, and changes
    nothing."""
    service = bootstrap(replace(Settings.from_url(postgres_url), admin_token=TOKEN))
    client = create_app(service).test_client()
    made = client.post("/admin/webhooks", json={"url": NOWHERE}, headers=ADMIN)
    webhook = made.get_json()["webhook"]
    client.post(
        f"/admin/webhooks/{webhook['id']}/replay",
        json={"from_position": 1},
        headers=ADMIN,
    )
    before = client.get("/admin/webhooks", headers=ADMIN).get_json()
    try:
        with psycopg.connect(postgres_url) as frozen:
            frozen.execute(f"SELECT * FROM {held} FOR UPDATE")
            began = time.monotonic()
            answer = client.open(
                path.format(id=webhook["id"]), method=method, json=body, headers=ADMIN
            )
            waited = time.monotonic() - began
        assert answer.status_code == 503
        assert answer.get_json()["error"]["code"] == "service_unavailable"
        assert LOCK_TIMEOUT_SECONDS <= waited < LOCK_TIMEOUT_SECONDS + 2
        assert client.get("/admin/webhooks", headers=ADMIN).get_json() == before
        again = client.open(
            path.format(id=webhook["id"]), method=method, json=body, headers=ADMIN
        )
        assert again.status_code < 300
    finally:
        service.close()
