"""The broker publisher's pure parts: its settings, its messages, its connection
parameters and its count of confirms (no broker, no database)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pika
import pytest
from pika.frame import Method

from pocket.amqp import (
    CONFIRM_TIMEOUT_SECONDS,
    CONNECT_TIMEOUT_SECONDS,
    ConfirmedPublisher,
)
from pocket.broker import PUBLISHER, message_of, publishes, system_for
from pocket.config import ConfigurationError, Settings
from pocket.domainmodel import Cause, Wallet
from pocket.feed import event_id, feed_event, user_number
from pocket.system import system


def added() -> Any:
    """A wallet's third event: 12.50 added to its 7.50."""
    wallet = Wallet.open("7", uuid4(), Cause(actor="user:7", correlation_id="r1"))
    wallet.add_money(Decimal("7.50"), "card", Cause())
    wallet.add_money(Decimal("12.50"), "card", Cause(correlation_id="r2"))
    return wallet.collect_events()[-1]


def test_a_message_is_the_feed_document_routed_by_its_type_named_by_its_id() -> None:
    event = added()
    assert isinstance(event, Wallet.MoneyAdded)
    message = message_of(feed_event(41, event, 7), 1764590400)
    assert message.routing_key == "money.added"
    assert message.message_id == str(event_id(event.originator_id, 3))
    body = json.loads(message.body)
    assert body["id"] == message.message_id
    assert (body["position"], body["sequence"], body["user_id"]) == (41, 3, 7)
    assert (body["amount"], body["balance_after"]) == ("12.50", "20.00")
    assert message.timestamp == 1764590400


@pytest.mark.parametrize(
    ("user_id", "number"), [("7", 7), ("0012", 12), ("ann", None), ("\uff17", None)]
)
def test_an_owner_is_the_users_number_or_none(user_id: str, number: int | None) -> None:
    assert user_number(user_id) == number


def test_the_broker_settings_reach_the_librarys_environment() -> None:
    url = "amqp://u:p@broker:5672/%2F"
    settings = Settings.from_environ({"POCKET_AMQP_URL": url})
    assert settings.env["POCKET_AMQP_URL"] == url
    assert settings.env["POCKET_AMQP_EXCHANGE"] == "pocket.events"
    assert publishes(settings.env)
    named = Settings.from_environ(
        {"POCKET_AMQP_URL": url, "POCKET_AMQP_EXCHANGE": "wallets.v1"}
    )
    assert named.env["POCKET_AMQP_EXCHANGE"] == "wallets.v1"


def test_without_a_broker_url_nothing_publishes() -> None:
    settings = Settings.from_environ({"POCKET_AMQP_EXCHANGE": "ignored"})
    assert "POCKET_AMQP_URL" not in settings.env
    assert not publishes(settings.env)
    assert system_for(settings.env) is system


def test_with_a_broker_url_the_system_has_the_publisher_beside_the_others() -> None:
    with_broker = system_for({"POCKET_AMQP_URL": "amqp://broker/"})
    assert set(with_broker.followers) == {*system.followers, PUBLISHER}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"POCKET_AMQP_URL": "http://broker/"}, "must start with amqp:// or amqps://"),
        ({"POCKET_AMQP_URL": "broker:5672"}, "is not a URL"),
        (
            {"POCKET_AMQP_URL": "amqp://b/", "POCKET_AMQP_EXCHANGE": "amq.topic"},
            "POCKET_AMQP_EXCHANGE must be",
        ),
        (
            {"POCKET_AMQP_URL": "amqp://b/", "POCKET_AMQP_EXCHANGE": "a b"},
            "POCKET_AMQP_EXCHANGE must be",
        ),
    ],
)
def test_a_broker_setting_pocket_cannot_use_is_refused_in_one_line(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_environ(environ)


def test_a_url_that_may_hold_a_password_is_not_repeated_when_refused() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_environ({"POCKET_AMQP_URL": "guest:secret@broker"})
    assert "secret" not in str(refused.value)


def test_connections_have_bounded_times_unless_the_url_names_its_own() -> None:
    publisher = ConfirmedPublisher("amqp://u:p@broker:5673/v", "x")
    parameters = publisher.parameters()
    assert (parameters.host, parameters.port, parameters.virtual_host) == (
        "broker",
        5673,
        "v",
    )
    assert parameters.socket_timeout == CONNECT_TIMEOUT_SECONDS
    assert parameters.stack_timeout == CONNECT_TIMEOUT_SECONDS
    assert parameters.connection_attempts == 1
    assert publisher.confirm_timeout == CONFIRM_TIMEOUT_SECONDS
    own = ConfirmedPublisher("amqp://broker/?socket_timeout=1&heartbeat=5", "x")
    assert (own.parameters().socket_timeout, own.parameters().heartbeat) == (1, 5)


def confirm(tag: int, *, multiple: bool = False, nack: bool = False) -> Method:
    kind = pika.spec.Basic.Nack if nack else pika.spec.Basic.Ack
    return Method(1, kind(delivery_tag=tag, multiple=multiple))


def test_confirms_are_counted_one_by_one_and_several_at_once() -> None:
    publisher = ConfirmedPublisher("amqp://broker/", "x")
    publisher.pending = {1, 2, 3, 4, 5}
    publisher._on_confirm(confirm(2))
    assert publisher.pending == {1, 3, 4, 5}
    publisher._on_confirm(confirm(4, multiple=True))
    assert publisher.pending == {5}
    assert not publisher.refused
    publisher._on_confirm(confirm(5, nack=True))
    assert publisher.pending == set()
    assert publisher.refused  # A refused message fails its batch.
