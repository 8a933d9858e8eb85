"""Helpers for the broker tests: a consumer of the publisher's exchange on a real
RabbitMQ (a queue of the test's own, bound to every routing key), and the checks
that every event arrived at least once and, per wallet, in order."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

# The machine's broker: tests create and delete their own exchanges and queues on
# it, never stop or restart it (the e2e tests start a throwaway one for that).
MACHINE_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
# CI starts the machine's broker: there, its absence fails the broker tests.
REQUIRE_RABBITMQ = os.environ.get("POCKET_REQUIRE_RABBITMQ") == "1"


def broker_problem(url: str = MACHINE_AMQP_URL) -> str | None:
    """Why the broker cannot be used for tests, or None when it can."""
    try:
        BlockingConnection(pika.URLParameters(url)).close()
    except (pika.exceptions.AMQPError, OSError) as error:
        return f"no RabbitMQ at {url}: {error!r}"
    return None


def require_broker(url: str = MACHINE_AMQP_URL) -> None:
    """Skips (or, with POCKET_REQUIRE_RABBITMQ=1, fails) when the machine's
    broker is not there."""
    skip_or_fail(broker_problem(url))


def skip_or_fail(problem: str | None) -> None:
    """Nothing without a problem; else a skip, or with POCKET_REQUIRE_RABBITMQ=1
    a failure."""
    if problem is None:
        return
    if REQUIRE_RABBITMQ:
        pytest.fail(f"POCKET_REQUIRE_RABBITMQ=1 but {problem}")
    pytest.skip(problem)


def unique_exchange() -> str:
    """An exchange name no other test uses."""
    return f"pocket.test.{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Received:
    """One message as the consumer got it."""

    routing_key: str
    message_id: str
    delivery_mode: int
    content_type: str
    body: dict[str, Any]


class Consumer:
    """A durable queue of the test's own, bound to every routing key of an
    exchange (declared here as the publisher declares it); deleted by delete()."""

    def __init__(self, url: str, exchange: str, binding: str = "#") -> None:
        self.url = url
        self.exchange = exchange
        self.queue = f"{exchange}.all"
        self.binding = binding
        self.received: list[Received] = []
        self.connection: BlockingConnection | None = None
        self._channel()  # Bound before anything is published.

    def _channel(self) -> BlockingChannel:
        if self.connection is None or self.connection.is_closed:
            self.connection = BlockingConnection(pika.URLParameters(self.url))
            channel = self.connection.channel()
            channel.exchange_declare(self.exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.queue, durable=True)
            channel.queue_bind(self.queue, self.exchange, self.binding)
            self.channel = channel
        return self.channel

    def drain(self) -> list[Received]:
        """Takes every message waiting in the queue (acknowledged), adds them to
        received, and returns received; a lost connection is opened again."""
        try:
            channel = self._channel()
            while True:
                method, properties, body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    break
                self.received.append(
                    Received(
                        method.routing_key,
                        properties.message_id,
                        properties.delivery_mode,
                        properties.content_type,
                        json.loads(body),
                    )
                )
        except (pika.exceptions.AMQPError, OSError):
            self.connection = None  # The broker restarting: again next time.
        return self.received

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Drains until at least count distinct events arrived (or times out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len({m.message_id for m in self.drain()}) >= count:
                return self.received
            time.sleep(0.1)
        distinct = len({m.message_id for m in self.received})
        msg = f"{distinct} of {count} events arrived in {timeout}s"
        raise AssertionError(msg)

    def delete(self) -> None:
        """Deletes the queue and the exchange, and closes the connection."""
        try:
            channel = self._channel()
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
            if self.connection is not None:
                self.connection.close()
        except (pika.exceptions.AMQPError, OSError):
            pass


def check_in_order_per_wallet(received: list[Received]) -> dict[str, list[int]]:
    """Each wallet's events arrived in order: the first time each arrives its
    sequence is the one after the last new one, and a repeat is an event seen
    before, the same document (at least once, deduplicated by message id).
    Returns each wallet's sequences, deduplicated."""
    seen: dict[str, dict[str, Any]] = {}
    sequences: dict[str, list[int]] = {}
    for message in received:
        body = message.body
        assert message.message_id == body["id"]
        if message.message_id in seen:
            assert seen[message.message_id] == body, "a repeat is the same document"
            continue
        seen[message.message_id] = body
        wallet = sequences.setdefault(body["wallet_id"], [])
        assert body["sequence"] == len(wallet) + 1, (body, wallet[-3:])
        wallet.append(body["sequence"])
    return sequences
