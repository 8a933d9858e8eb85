"""The broker publisher on SQLite and PostgreSQL, against the machine's RabbitMQ
(an exchange and a queue of each test's own, deleted afterwards): every wallet
event published as its feed document, confirmed before the position moves."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from decimal import Decimal
from uuid import UUID

import pytest
from eventsourcing.persistence import IntegrityError

from pocket.amqp import BrokerUnavailable
from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.broker import PUBLISHER, EventPublisher, system_for
from pocket.commands import AddMoney, DrawMoney, OpenWallet, PlaceHold, Transfer
from pocket.config import Settings
from pocket.feed import event_id
from pocket.metrics import registry_for
from pocket.operations import format_status, status
from pocket.runner import PocketRunner, PublisherThread
from tests.broker import (
    MACHINE_AMQP_URL,
    Consumer,
    check_in_order_per_wallet,
    require_broker,
    unique_exchange,
)
from tests.proxy import Proxy
from tools.scratch import free_port


@pytest.fixture
def exchange() -> str:
    require_broker()
    return unique_exchange()


@pytest.fixture
def settings(sql_settings: Settings, exchange: str) -> Settings:
    env = {
        **sql_settings.env,
        "POCKET_AMQP_URL": MACHINE_AMQP_URL,
        "POCKET_AMQP_EXCHANGE": exchange,
    }
    return replace(sql_settings, env=env)


@pytest.fixture
def consumer(exchange: str) -> Iterator[Consumer]:
    consumer = Consumer(MACHINE_AMQP_URL, exchange)
    yield consumer
    consumer.delete()


@pytest.fixture
def pocket(settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(settings)
    yield app
    app.close()


def publisher_of(pocket: Pocket, **env: str) -> EventPublisher:
    publisher = EventPublisher(env={**dict(pocket.env), "CREATE_TABLE": "yes", **env})
    publisher.follow(pocket.name, pocket.notification_log)
    return publisher


@pytest.fixture
def publisher(pocket: Pocket) -> Iterator[EventPublisher]:
    with closing(publisher_of(pocket)) as publisher:
        yield publisher


def some_events(pocket: Pocket, user_id: str = "7") -> tuple[UUID, UUID]:
    """Two wallets, money in and out, a transfer and a hold: 7 events."""
    first = pocket.open_wallet(OpenWallet(user_id=user_id))
    second = pocket.open_wallet(OpenWallet(user_id="8"))
    pocket.add_money(AddMoney(wallet_id=first, amount=Decimal("50.00"), source="x"))
    pocket.draw_money(
        DrawMoney(wallet_id=first, amount=Decimal("0.10"), destination="y")
    )
    pocket.transfer(
        Transfer(sender_id=first, receiver_id=second, amount=Decimal("5.05"))
    )
    pocket.place_hold(
        PlaceHold(
            wallet_id=first,
            amount=Decimal("1.00"),
            destination="shop",
            expires_in=600,
        )
    )
    return first, second


def test_every_wallet_event_is_published_as_its_feed_document(
    pocket: Pocket, publisher: EventPublisher, consumer: Consumer
) -> None:
    first, second = some_events(pocket)
    assert publisher.catch_up(pocket.name) > 0
    received = consumer.wait_for(7)
    assert len(received) == 7  # Once each: nothing failed.
    assert [m.routing_key for m in received] == [
        "wallet.opened",
        "wallet.opened",
        "money.added",
        "money.drawn",
        "transfer.sent",
        "transfer.received",
        "hold.placed",
    ]
    for message in received:
        body = message.body
        assert message.routing_key == body["type"]
        assert (message.delivery_mode, message.content_type) == (
            2,
            "application/json",
        )
        wallet = UUID(body["wallet_id"])
        assert message.message_id == str(event_id(wallet, body["sequence"]))
        assert body["user_id"] == (7 if wallet == first else 8)
    added = received[2].body
    assert (added["amount"], added["balance_after"]) == ("50.00", "50.00")
    positions = [m.body["position"] for m in received]
    assert positions == sorted(positions)
    assert publisher.position == pocket.recorder.max_notification_id()
    assert publisher.published == 7
    assert check_in_order_per_wallet(received) == {
        str(first): [1, 2, 3, 4, 5],
        str(second): [1, 2],
    }


def test_a_broker_that_cannot_be_reached_leaves_the_position_where_it_was(
    pocket: Pocket, consumer: Consumer
) -> None:
    some_events(pocket)
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    with closing(publisher_of(pocket, POCKET_AMQP_URL=nowhere)) as down:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            down.catch_up(pocket.name)
        assert time.monotonic() - started < 10  # Bounded: it fails, it waits not.
        assert down.position is None
        assert down.published == 0
    with closing(publisher_of(pocket)) as up:  # The broker back: from the start.
        up.catch_up(pocket.name)
        assert len(consumer.wait_for(7)) == 7
        assert up.position == pocket.recorder.max_notification_id()


def test_an_owner_is_read_from_the_wallets_first_event_after_a_restart(
    pocket: Pocket, consumer: Consumer
) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="42"))
    with closing(publisher_of(pocket)) as before:
        before.catch_up(pocket.name)
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal("1.00"), source="x"))
    with closing(publisher_of(pocket)) as after:  # Remembers no owner.
        after.catch_up(pocket.name)
    opened, added = consumer.wait_for(2)
    assert (opened.body["user_id"], added.body["user_id"]) == (42, 42)
    assert added.body["sequence"] == 2


def test_a_running_system_publishes_and_reports_its_publisher(
    settings: Settings, consumer: Consumer
) -> None:
    runner = PocketRunner(system_for(settings.env), dict(settings.env))
    runner.start()
    try:
        pocket = runner.pocket
        some_events(pocket)
        assert len(consumer.wait_for(7)) == 7
        (thread,) = [
            t for t in runner.threads.values() if isinstance(t, PublisherThread)
        ]
        deadline = time.monotonic() + 10
        while thread.projector.position != pocket.recorder.max_notification_id():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        registry = registry_for(runner, open_catalog(pocket))
        value = registry.get_sample_value
        assert value("pocket_broker_published_total") == 7
        assert value("pocket_broker_publisher_role", {"role": "active"}) == 1
        report = {f["name"]: f for f in status(pocket)["followers"]}[PUBLISHER]
        assert report["lag_events"] == 0
        assert report["follower"]["running"]
        assert report["exchange"] == consumer.exchange
        assert f"exchange       {consumer.exchange}" in format_status(status(pocket))
    finally:
        runner.stop()


def test_without_a_broker_url_the_system_has_no_publisher(
    sql_settings: Settings,
) -> None:
    assert PUBLISHER not in system_for(sql_settings.env).followers
    with closing(open_pocket(sql_settings)) as pocket:
        open_catalog(pocket)
        names = [f["name"] for f in status(pocket)["followers"]]
    assert PUBLISHER not in names


def test_a_position_another_publisher_moved_is_refused(
    pocket: Pocket, consumer: Consumer
) -> None:
    some_events(pocket)
    with (
        closing(publisher_of(pocket)) as first,
        closing(publisher_of(pocket)) as second,
    ):
        second.known_position = 0  # As if it had read the position before...
        first.catch_up(pocket.name)  # ...the first published and recorded.
        with pytest.raises(IntegrityError):
            second.catch_up(pocket.name)
        assert second.published == 0  # Sent, but not counted: not recorded.
        assert first.position == pocket.recorder.max_notification_id()
    received = consumer.wait_for(7)
    assert len(received) == 14  # Every event twice, each with its one id.
    assert len({m.message_id for m in received}) == 7
    check_in_order_per_wallet(received)


def test_a_broker_that_falls_silent_fails_the_section_within_its_timeout(
    pocket: Pocket, consumer: Consumer
) -> None:
    proxy = Proxy("127.0.0.1", 5672)
    through = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
    try:
        with closing(publisher_of(pocket, POCKET_AMQP_URL=through)) as publisher:
            publisher.broker.confirm_timeout = 1.0
            pocket.open_wallet(OpenWallet(user_id="1"))
            publisher.catch_up(pocket.name)
            published = publisher.position
            proxy.partition()  # Nothing crosses, nobody is told.
            some_events(pocket)
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="confirmed none"):
                publisher.catch_up(pocket.name)
            assert time.monotonic() - started < 5
            assert publisher.position == published
    finally:
        proxy.close()
    assert len(consumer.wait_for(1)) >= 1


def test_a_broker_that_is_down_stops_nothing_but_the_publisher(
    settings: Settings,
) -> None:
    nowhere = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    env = {**settings.env, "POCKET_AMQP_URL": nowhere}
    runner = PocketRunner(system_for(env), env)
    runner.start()
    try:
        pocket = runner.pocket
        some_events(pocket)
        head = pocket.recorder.max_notification_id()
        (thread,) = [
            t for t in runner.threads.values() if isinstance(t, PublisherThread)
        ]
        (expiry,) = [f for f in runner.followers if f.name == "hold_expiry"]
        deadline = time.monotonic() + 10
        # The hold-expiry follower gathers for a second between two rounds.
        while (
            runner.live_position() != head
            or expiry.position != head
            or thread.failed_rounds < 2
        ):
            assert time.monotonic() < deadline, (runner.live_position(), head)
            time.sleep(0.05)
        assert thread.projector.position is None
        assert thread.is_alive()
        registry = registry_for(runner, open_catalog(pocket))
        failures = registry.get_sample_value("pocket_broker_failures_total")
        assert failures is not None
        assert failures >= 2
    finally:
        runner.stop()


def test_a_publisher_stopping_leaves_a_wait_for_confirms_at_once(
    pocket: Pocket, consumer: Consumer
) -> None:
    """Stopping does not wait out a silent broker's confirm timeout: the
    section stays unrecorded, for whoever publishes next."""
    proxy = Proxy("127.0.0.1", 5672)
    through = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
    try:
        with closing(publisher_of(pocket, POCKET_AMQP_URL=through)) as publisher:
            pocket.open_wallet(OpenWallet(user_id="1"))
            publisher.catch_up(pocket.name)
            proxy.partition()
            some_events(pocket)
            threading.Timer(0.3, publisher.stopping.set).start()
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="stopped"):
                publisher.process_section(pocket.name)
            assert time.monotonic() - started < 3  # Not the 10 s timeout.
            assert publisher.position == 1
    finally:
        proxy.close()
