"""End to end: the broker publisher in real `pocket serve` and `pocket follow`
processes, publishing to a RabbitMQ of the test's own (tests.rabbitserver), while
writes go on. Across a kill -9 of the active publisher (a standby takes over) and
across a restart of the broker, every wallet event arrives at least once, and the
first time each arrives is in its wallet's order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from uuid import UUID

import pytest

from pocket.application import Pocket
from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, DrawMoney, OpenWallet, Transfer
from pocket.config import Settings
from pocket.feed import event_id
from tests.broker import (
    Consumer,
    check_in_order_per_wallet,
    skip_or_fail,
    unique_exchange,
)
from tests.e2e.processes import PocketProcess, follow, serve, wait_for
from tests.rabbitserver import RabbitServer, rabbitmq_problem, throwaway_rabbitmq

pytestmark = pytest.mark.e2e
ACTIVE = "Active: this follower applies broker_publisher"


@pytest.fixture
def rabbitmq() -> Iterator[RabbitServer]:
    """A broker of the test's own (about 4 s to start here), to kill at will."""
    skip_or_fail(rabbitmq_problem())
    with throwaway_rabbitmq() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def pocket(url: str) -> Iterator[Pocket]:
    app = open_pocket(Settings.from_url(url))
    yield app
    app.close()


@pytest.fixture
def consumer(rabbitmq: RabbitServer) -> Iterator[Consumer]:
    consumer = Consumer(rabbitmq.url, unique_exchange())
    yield consumer
    consumer.delete()


class Writes:
    """Money moving among a few wallets in a thread, until stopped."""

    def __init__(self, pocket: Pocket, wallets: int = 6) -> None:
        self.pocket = pocket
        self.wallets = [
            pocket.open_wallet(OpenWallet(user_id=str(n + 1))) for n in range(wallets)
        ]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        pocket, wallets = self.pocket, self.wallets
        while not self.stopping.is_set():
            for n, wallet_id in enumerate(wallets):
                pocket.add_money(
                    AddMoney(wallet_id=wallet_id, amount=Decimal("2.00"), source="x")
                )
                pocket.transfer(
                    Transfer(
                        sender_id=wallet_id,
                        receiver_id=wallets[(n + 1) % len(wallets)],
                        amount=Decimal("0.50"),
                    )
                )
            pocket.draw_money(
                DrawMoney(wallet_id=wallets[0], amount=Decimal("0.25"), destination="y")
            )
            self.stopping.wait(0.02)  # The machine has two cores.

    def __enter__(self) -> Writes:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def event_ids(self) -> set[str]:
        """The feed id of every event of the wallets, as the log has them now."""
        return {
            str(event_id(wallet_id, version))
            for wallet_id in self.wallets
            for version in range(1, self.version(wallet_id) + 1)
        }

    def version(self, wallet_id: UUID) -> int:
        return int(self.pocket.get_wallet(wallet_id).version)


def active(process: PocketProcess) -> bool:
    return ACTIVE in process.output


def check_every_event_arrived_in_order(consumer: Consumer, writes: Writes) -> None:
    expected = writes.event_ids()
    wait_for(
        lambda: {m.message_id for m in consumer.drain()} >= expected,
        timeout=60,
        what=f"all {len(expected)} events at the consumer",
    )
    received = consumer.drain()
    assert {m.message_id for m in received} == expected
    sequences = check_in_order_per_wallet(received)
    assert {UUID(w) for w in sequences} == set(writes.wallets)


def test_every_event_arrives_in_order_across_a_kill_9_of_the_publisher(
    tmp_path: Path, url: str, pocket: Pocket, rabbitmq: RabbitServer, consumer: Consumer
) -> None:
    env = {
        "POCKET_DATABASE_URL": url,
        "POCKET_AMQP_URL": rabbitmq.url,
        "POCKET_AMQP_EXCHANGE": consumer.exchange,
    }
    first, _ = serve(tmp_path, env)
    second: PocketProcess | None = None
    try:
        wait_for(partial(active, first), what="pocket serve's publisher active")
        second = follow(tmp_path, env)
        with Writes(pocket) as writes:
            wait_for(lambda: len(consumer.drain()) > 50, what="some events out")
            first.kill()  # kill -9, mid-stream: the standby takes over.
            wait_for(partial(active, second), what="the standby publishing")
            time.sleep(1.0)  # Writes go on under the new publisher.
        check_every_event_arrived_in_order(consumer, writes)
        assert "Standing by" in second.output
    finally:
        first.close()
        if second is not None:
            second.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_every_event_arrives_in_order_across_a_restart_of_the_broker(
    tmp_path: Path,
    url: str,
    pocket: Pocket,
    rabbitmq: RabbitServer,
    consumer: Consumer,
    how: str,
) -> None:
    """The broker stopped as its service would, or killed with -9: what it
    confirmed was on its disk (persistent messages in a durable queue)."""
    env = {
        "POCKET_DATABASE_URL": url,
        "POCKET_AMQP_URL": rabbitmq.url,
        "POCKET_AMQP_EXCHANGE": consumer.exchange,
    }
    follower = follow(tmp_path, env)
    try:
        wait_for(partial(active, follower), what="the publisher active")
        with Writes(pocket) as writes:
            wait_for(lambda: len(consumer.drain()) > 50, what="some events out")
            # Writes go on while the broker is down...
            if how == "stop":
                rabbitmq.stop()
            else:
                rabbitmq.kill()
            time.sleep(2.0)
            assert "Publishing to the broker failed" in follower.output
            rabbitmq.start()  # ...and the publisher resumes where it was.
            time.sleep(1.0)
        check_every_event_arrived_in_order(consumer, writes)
        assert follower.process.poll() is None  # The broker stopped nothing else.
    finally:
        follower.close()
