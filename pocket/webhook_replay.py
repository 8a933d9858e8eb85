"""Replays: an operator asks for a subscription's events from a position of
Pocket's log again (pocket.webhook_store.request_replay), and the active webhook
follower queues them a section at a time, each section in the transaction that
moves the replay's cursor by compare-and-set (so a crash or a second follower
never queues one twice, and a replay resumes where it was)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from uuid import UUID

from pocket.application import Pocket
from pocket.database import Database
from pocket.webhook_queue import queue_replay
from pocket.webhook_store import advance_replay, replays, requeue_alerts, subscription

if TYPE_CHECKING:
    from pocket.system import WebhookFeed


class ReplayMoved(Exception):
    """Another follower moved or replaced the replay meanwhile."""


def replay_step(feed: WebhookFeed) -> int:
    """Queues the next section of each replay under way; returns how many
    sections it queued (0: no replay is under way)."""
    db = Database.of(feed)
    with db.transaction(commit=False) as tx:
        jobs = replays(tx)
    done = 0
    for subscription_id, after, until in jobs:
        try:
            replay_section(feed, db, subscription_id, after, until)
        except ReplayMoved:
            continue
        done += 1
    return done


def replay_section(
    feed: WebhookFeed, db: Database, subscription_id: UUID, after: int, until: int
) -> None:
    """Queues one section of one replay and moves its cursor."""
    reader = feed.readers[Pocket.name]
    notifications = reader.notification_log.select(
        start=after, limit=feed.batch_size, stop=until, inclusive_of_start=False
    )
    to = notifications[-1].id if notifications else until
    if len(notifications) < feed.batch_size:
        to = until  # The rest of the range holds nothing more.
    mapper = feed.mappers[Pocket.name]
    events = [
        (n.id, mapper.to_domain_event(n))
        for n in notifications
        if n.topic in feed.topics
    ]
    with db.transaction() as tx:
        # The write first (see pocket.webhook_admin.Webhooks.replay).
        if not advance_replay(tx, subscription_id, after, to, until):
            raise ReplayMoved
        sub = subscription(tx, subscription_id)
        if sub is None:
            raise ReplayMoved
        now = time.time()
        queue_replay(tx, sub, events, now)
        requeue_alerts(tx, sub.id, after, to, now)
