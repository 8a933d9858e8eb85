"""How fast each broker on this machine takes Pocket's events with the broker's
acknowledgement that it has them: RabbitMQ (pika, publisher confirms, persistent
messages into a durable queue) beside NATS JetStream (nats-py, publish with ack,
a file-stored stream), with the same feed documents, printed side by side.

Two ways each: a section at a time (every message of a section sent, then every
acknowledgement waited for: what the broker publisher does, pocket.amqp), and one
at a time (each message waited for before the next).

    .venv/bin/python -m tools.broker_rate [--events 5000] [--section 1000]
        [--amqp-url amqp://guest:guest@127.0.0.1:5672/%2F]
        [--nats-url nats://127.0.0.1:4222]

Each run makes an exchange, a queue and a stream of its own and deletes them
afterwards. Light on purpose: the machine has two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import nats
import pika
from nats.js.api import StorageType, StreamConfig

from pocket.amqp import ConfirmedPublisher, Message
from pocket.broker import message_of
from pocket.domainmodel import Cause, Wallet
from pocket.feed import feed_event


def documents(count: int) -> list[Message]:
    """count wallet events as the publisher sends them: money added to and drawn
    from a few wallets, each its feed document."""
    wallets = [Wallet.open(str(n), uuid.uuid4(), Cause()) for n in range(10)]
    messages: list[Message] = []
    position = 0
    while len(messages) < count:
        for wallet in wallets:
            wallet.add_money(Decimal("10.00"), "card", Cause(actor="user:1"))
            wallet.draw_money(Decimal("2.50"), "shop", Cause(actor="user:1"))
            for event in wallet.collect_events():
                position += 1
                stamp = int(event.timestamp.timestamp())
                messages.append(message_of(feed_event(position, event, 1), stamp))
    return messages[:count]


def rate(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def rabbitmq(url: str, messages: list[Message], section: int) -> tuple[float, float]:
    """Messages a second into RabbitMQ: by sections, then one at a time."""
    exchange = f"pocket.rate.{uuid.uuid4().hex[:8]}"
    admin = pika.BlockingConnection(pika.URLParameters(url))
    channel = admin.channel()
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    channel.queue_declare(exchange, durable=True)
    channel.queue_bind(exchange, exchange, "#")
    publisher = ConfirmedPublisher(url, exchange)

    def by_sections() -> None:
        for start in range(0, len(messages), section):
            publisher.publish(messages[start : start + section])

    def one_at_a_time() -> None:
        for message in messages:
            publisher.publish([message])

    try:
        by_section = rate(len(messages), by_sections)
        one_by_one = rate(len(messages), one_at_a_time)
    finally:
        publisher.close()
        channel.queue_delete(exchange)
        channel.exchange_delete(exchange)
        admin.close()
    return by_section, one_by_one


async def jetstream(
    url: str, messages: list[Message], section: int
) -> tuple[float, float]:
    """Messages a second into NATS JetStream: by sections, then one at a time
    (Nats-Msg-Id for JetStream's own deduplication, as message_id is RabbitMQ's)."""
    client = await nats.connect(url, connect_timeout=5)
    js = client.jetstream(publish_async_max_pending=section)
    name = f"POCKET_RATE_{uuid.uuid4().hex[:8]}"
    subject = name.lower()
    await js.add_stream(
        StreamConfig(name=name, subjects=[f"{subject}.>"], storage=StorageType.FILE)
    )

    def headers(message: Message) -> dict[str, Any]:
        return {"Nats-Msg-Id": message.message_id}

    try:
        started = time.perf_counter()
        for i in range(0, len(messages), section):
            acks = [
                await js.publish_async(
                    f"{subject}.{m.routing_key}", m.body, headers=headers(m)
                )
                for m in messages[i : i + section]
            ]
            await asyncio.gather(*acks)
        by_section = len(messages) / (time.perf_counter() - started)
        started = time.perf_counter()
        for m in messages:
            # Ids seen before are dropped by JetStream: make these new ones.
            await js.publish(
                f"{subject}.{m.routing_key}",
                m.body,
                headers={"Nats-Msg-Id": m.message_id + ".1"},
            )
        one_by_one = len(messages) / (time.perf_counter() - started)
    finally:
        await js.delete_stream(name)
        await client.close()
    return by_section, one_by_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--section", type=int, default=1000)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    messages = documents(args.events)
    size = sum(len(m.body) for m in messages) / len(messages)
    print(f"{len(messages):,} feed documents, {size:.0f} bytes each on average")
    rabbit = rabbitmq(args.amqp_url, messages, args.section)
    jet = asyncio.run(jetstream(args.nats_url, messages, args.section))
    print(f"{'messages/s, acknowledged':<34}{'RabbitMQ':>12}{'JetStream':>12}")
    print(f"{f'sections of {args.section}':<34}{rabbit[0]:>12,.0f}{jet[0]:>12,.0f}")
    print(f"{'one at a time':<34}{rabbit[1]:>12,.0f}{jet[1]:>12,.0f}")


if __name__ == "__main__":
    main()
