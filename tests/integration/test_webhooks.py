"""The webhook follower, on SQLite and PostgreSQL, with a receiver of the test's
own: every event delivered at least once and in order per wallet, signed;
failures retried and parked; balance alerts once per crossing; replays."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from pocket.commands import AddMoney, DrawMoney, OpenWallet, SetAlertThreshold
from pocket.config import Settings
from pocket.database import Database
from pocket.feed import verify
from pocket.runner import (
    GATHER_SECONDS,
    LONG_GATHER_SECONDS,
    PocketRunner,
    WebhookThread,
)
from pocket.system import WebhookFeed
from pocket.webhook_admin import Webhooks
from pocket.webhook_store import DELIVERIES, due_heads
from tests.receiver import Receiver, receiver, running
from tools.scratch import free_port


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def runner(sql_settings: Settings) -> Iterator[PocketRunner]:
    with running(
        sql_settings,
        POCKET_WEBHOOK_TIMEOUT_SECONDS="1",
        POCKET_WEBHOOK_BACKOFF_CAP_SECONDS="0.5",
    ) as r:
        yield r


def opened(runner: PocketRunner, user: str = "1") -> UUID:
    return runner.pocket.open_wallet(OpenWallet(user_id=user))


def add(runner: PocketRunner, wallet_id: UUID, amount: str) -> None:
    runner.pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal(amount), source="bank")
    )


def test_a_subscription_receives_each_event_signed_in_order(
    runner: PocketRunner, hook: Receiver
) -> None:
    webhooks = Webhooks.of(runner.pocket)
    sub = webhooks.subscribe(hook.url).subscription
    wallet_id = opened(runner)
    for amount in ("1.00", "2.00", "3.00"):
        add(runner, wallet_id, amount)
    events = hook.wait_for(4)
    assert [e["type"] for e in events] == ["wallet.opened", *["money.added"] * 3]
    assert [e["sequence"] for e in events] == [1, 2, 3, 4]
    assert [e["balance_after"] for e in events[1:]] == ["1.00", "3.00", "6.00"]
    assert all(e["user_id"] == 1 and e["wallet_id"] == str(wallet_id) for e in events)
    for request in hook.delivered():
        header = request.headers["Pocket-Signature"]
        assert verify(sub.secret, header, request.body, time.time())
        assert not verify(sub.secret, header, request.body + b" ", time.time())
        assert request.headers["Pocket-Event-Id"] == request.event["id"]


def test_a_receiver_that_fails_or_hangs_for_a_while_gets_every_event_in_order(
    runner: PocketRunner, hook: Receiver
) -> None:
    webhooks = Webhooks.of(runner.pocket)
    webhooks.subscribe(hook.url, ["money.added"])
    wallets = [opened(runner, str(n)) for n in (1, 2)]
    hook.fail_until = time.time() + 1.5
    for n in range(5):
        for wallet_id in wallets:
            add(runner, wallet_id, f"{n + 1}.00")
    hook.wait_for(10, timeout=30)
    hook.hang_until = time.time() + 2
    hook.hang_seconds = 1.5  # Past the 1 s timeout: the sender gives up, retries.
    for wallet_id in wallets:
        add(runner, wallet_id, "9.00")
    events = hook.wait_for(12, timeout=30)
    assert any(r.status == 500 for r in hook.requests)
    # A delivery the receiver took while the sender had stopped waiting (its
    # reply lost) is still pending: it is sent again.
    deadline = time.monotonic() + 20
    while webhooks.all()[0].queue.pending:
        assert time.monotonic() < deadline, "deliveries still pending"
        time.sleep(0.1)
    events = hook.events()
    for wallet_id in wallets:
        mine = [e for e in events if e["wallet_id"] == str(wallet_id)]
        first_seen = list(dict.fromkeys(e["sequence"] for e in mine))
        assert first_seen == sorted(first_seen) == list(range(2, 8))
    (status,) = webhooks.all()
    assert (status.queue.pending, status.queue.parked) == (0, 0)
    assert status.subscription.last_error is not None


def test_a_delivery_past_its_retry_period_is_parked_and_the_next_goes_on(
    sql_settings: Settings, hook: Receiver
) -> None:
    with running(
        sql_settings,
        POCKET_WEBHOOK_RETRY_SECONDS="1",
        POCKET_WEBHOOK_BACKOFF_CAP_SECONDS="0.2",
    ) as runner:
        webhooks = Webhooks.of(runner.pocket)
        sub = webhooks.subscribe(hook.url, ["money.added"]).subscription
        wallet_id = opened(runner)
        hook.fail_until = time.time() + 3
        add(runner, wallet_id, "1.00")
        deadline = time.monotonic() + 20
        while webhooks.status(sub.id).queue.parked < 1:
            assert time.monotonic() < deadline, "never parked"
            time.sleep(0.1)
        (parked,) = webhooks.deliveries_of(sub.id, "parked")
        assert parked.attempts >= 2
        assert "HTTP 500" in (parked.last_error or "")
        time.sleep(max(0.0, hook.fail_until - time.time()))
        add(runner, wallet_id, "2.00")
        (event,) = hook.wait_for(1)
        assert event["amount"] == "2.00"
        after, until = webhooks.replay(sub.id, parked.position)
        assert after == parked.position - 1
        assert until >= parked.position
        events = hook.wait_for(3, distinct=False)
        # From the parked one's position on, in the wallet's order.
        assert [e["amount"] for e in events] == ["2.00", "1.00", "2.00"]
        assert webhooks.status(sub.id).queue.parked == 0


def test_a_balance_alert_fires_once_per_crossing(
    runner: PocketRunner, hook: Receiver
) -> None:
    webhooks = Webhooks.of(runner.pocket)
    webhooks.subscribe(hook.url, ["balance.low"], alert_below=Decimal("10.00"))
    wallet_id = opened(runner)
    add(runner, wallet_id, "50.00")

    def draw(amount: str) -> None:
        runner.pocket.draw_money(
            DrawMoney(wallet_id=wallet_id, amount=Decimal(amount), destination="x")
        )

    draw("45.00")  # 5.00: crosses below.
    draw("1.00")  # 4.00: still below, no alert.
    add(runner, wallet_id, "20.00")  # 24.00: back above.
    draw("20.00")  # 4.00: crosses again.
    alerts = hook.wait_for(2)
    time.sleep(1.0)  # Nothing more comes.
    alerts = hook.events()
    assert [a["type"] for a in alerts] == ["balance.low", "balance.low"]
    assert [a["data"]["available_after"] for a in alerts] == ["5.00", "4.00"]
    assert [a["data"]["available_before"] for a in alerts] == ["50.00", "24.00"]
    assert all(a["data"]["threshold"] == "10.00" for a in alerts)


def test_a_subscription_gets_only_its_types_and_user_from_its_creation_on(
    runner: PocketRunner, hook: Receiver
) -> None:
    before = opened(runner, "1")
    add(runner, before, "1.00")
    webhooks = Webhooks.of(runner.pocket)
    webhooks.subscribe(hook.url, ["money.added", "wallet.closed"], user_id=2)
    other = opened(runner, "2")
    add(runner, before, "2.00")
    add(runner, other, "3.00")
    (event,) = hook.wait_for(1)
    time.sleep(0.5)
    assert [e["amount"] for e in hook.events()] == ["3.00"]
    assert event["user_id"] == 2


def test_a_replay_from_a_position_sends_the_log_again_even_before_the_subscription(
    runner: PocketRunner, hook: Receiver
) -> None:
    wallet_id = opened(runner)
    add(runner, wallet_id, "1.00")
    webhooks = Webhooks.of(runner.pocket)
    sub = webhooks.subscribe(hook.url, ["money.added"]).subscription
    add(runner, wallet_id, "2.00")
    hook.wait_for(1)
    webhooks.replay(sub.id, 1)
    events = hook.wait_for(3, distinct=False)
    assert [e["amount"] for e in events] == ["2.00", "1.00", "2.00"]
    assert events[0]["id"] == events[2]["id"]  # The same event, the same id.


def test_deleting_a_subscription_stops_its_deliveries(
    runner: PocketRunner, hook: Receiver
) -> None:
    webhooks = Webhooks.of(runner.pocket)
    sub = webhooks.subscribe(hook.url).subscription
    webhooks.unsubscribe(sub.id)
    opened(runner)
    time.sleep(1.0)
    assert hook.requests == []
    assert webhooks.all() == []


def test_a_wallets_own_threshold_alerts_a_subscription_that_has_none(
    runner: PocketRunner, hook: Receiver
) -> None:
    webhooks = Webhooks.of(runner.pocket)
    webhooks.subscribe(hook.url, ["balance.low"])
    own = webhooks.subscribe(hook.url, ["balance.low"], alert_below=Decimal("2.00"))
    wallet_id = opened(runner)
    runner.pocket.set_alert_threshold(
        SetAlertThreshold(wallet_id=wallet_id, alert_below=Decimal("8.00"))
    )
    assert runner.pocket.get_wallet(wallet_id).alert_below == Decimal("8.00")
    add(runner, wallet_id, "10.00")
    runner.pocket.draw_money(
        DrawMoney(wallet_id=wallet_id, amount=Decimal("5.00"), destination="x")
    )  # 5.00: below the wallet's 8.00, not below the subscription's 2.00.
    (alert,) = hook.wait_for(1)
    time.sleep(1.0)
    assert len(hook.events()) == 1
    assert alert["data"]["threshold"] == "8.00"
    assert webhooks.status(own.subscription.id).queue.pending == 0


def test_with_no_subscription_the_follower_gathers_longer_and_misses_nothing(
    runner: PocketRunner, hook: Receiver
) -> None:
    (thread,) = [t for t in runner.threads.values() if isinstance(t, WebhookThread)]
    feed = runner.get(WebhookFeed)
    wallet_id = opened(runner)
    add(runner, wallet_id, "5.00")
    head = runner.pocket.recorder.max_notification_id()
    feed.recorder.wait(runner.pocket.name, head, timeout=10)
    assert not feed.subscribed
    assert thread.gathering() == LONG_GATHER_SECONDS
    webhooks = Webhooks.of(runner.pocket)
    webhooks.subscribe(hook.url)
    for amount in ("1.00", "2.00"):  # Into a long gathering: queued after it.
        add(runner, wallet_id, amount)
    events = hook.wait_for(2)
    assert [e["balance_after"] for e in events] == ["6.00", "8.00"]
    assert feed.subscribed
    assert thread.gathering() == GATHER_SECONDS


def test_many_subscriptions_failing_at_once_leave_the_follower_its_connections(
    postgres_settings: Settings, hook: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A hundred subscriptions whose receiver refuses every connection, each
    retried every 50 ms, and one whose receiver answers. The senders share the
    follower's small pool (1 + 2 overflow) but hold a connection only for a
    query, never across a try: the answering subscription gets every event in
    order, and neither the follower nor a sender ever waits out the pool's
    timeout (which it would log)."""
    caplog.set_level(logging.WARNING)
    with running(
        postgres_settings,
        POCKET_WEBHOOK_TIMEOUT_SECONDS="1",
        POCKET_WEBHOOK_BACKOFF_CAP_SECONDS="0.05",
    ) as runner:
        webhooks = Webhooks.of(runner.pocket)
        dead = f"http://127.0.0.1:{free_port()}/"
        for _ in range(100):
            webhooks.subscribe(dead, events=["money.added"])
        webhooks.subscribe(hook.url, events=["money.added"])
        wallets = [opened(runner, str(n)) for n in range(4)]
        for _ in range(10):
            for wallet_id in wallets:
                add(runner, wallet_id, "1.00")
        events = hook.wait_for(40)
        assert len({e["id"] for e in events}) == 40
        for wallet_id in wallets:
            mine = [
                e["balance_after"] for e in events if e["wallet_id"] == str(wallet_id)
            ]
            assert mine == [f"{n}.00" for n in range(1, 11)]
        feed = runner.get(WebhookFeed)
        head = runner.pocket.recorder.max_notification_id()
        feed.recorder.wait(runner.pocket.name, head, timeout=10)
        time.sleep(2)  # The dead subscriptions' retries go on meanwhile.
        with Database.of(feed).transaction(commit=False) as tx:
            tried = tx.execute(
                f"SELECT count(*) AS n FROM {DELIVERIES} WHERE attempts > 2"
            )
        # Each wallet's first delivery to each dead receiver, tried again and
        # again (the ones after it wait their turn: in order per wallet).
        assert tried[0]["n"] == 100 * len(wallets)
    complaints = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
    assert complaints == []


def test_a_sender_whose_receiver_fails_waits_for_the_retry_behind_a_backlog(
    sql_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wallet's first delivery fails and waits for its retry; the ones queued
    behind it are due by their own time but wait their turn. The sender sleeps
    until the retry, where it looked again at once, tens of thousands of times
    a second (counted here through the query each round starts with)."""
    rounds = 0
    real = due_heads

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal rounds
        rounds += 1
        return real(*args, **kwargs)

    monkeypatch.setattr("pocket.webhooks.due_heads", counted)
    with running(sql_settings, POCKET_WEBHOOK_BACKOFF_CAP_SECONDS="5") as runner:
        Webhooks.of(runner.pocket).subscribe(f"http://127.0.0.1:{free_port()}/")
        wallet_id = opened(runner)
        for amount in ("1.00", "2.00", "3.00"):
            add(runner, wallet_id, amount)
        time.sleep(1.5)  # The first try failed; the rest are queued behind it.
        before = rounds
        time.sleep(3)
        during = rounds - before
    # About one round a second (a retry, the sender's own 1 s look).
    assert 0 < during < 30
