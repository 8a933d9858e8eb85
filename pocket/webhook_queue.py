"""What a section of Pocket's log adds to the webhooks' queue: a delivery of each
event to each subscription that wants it, and a balance alert where an event takes
a wallet's available amount from at or above a subscription's threshold to below
it (once per crossing: the next event below it is no crossing).

Runs inside the webhook follower's transaction, which also moves its tracking
position: a section is queued exactly once, whatever crashes or retries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from pocket.database import Transaction
from pocket.domainmodel import Wallet
from pocket.feed import (
    BALANCE_LOW,
    FeedChanges,
    FeedEvent,
    WalletFigures,
    alert_event,
    feed_event,
    user_number,
)
from pocket.webhook_store import (
    QueuedRow,
    Subscription,
    WalletRow,
    enqueue,
    queue_subscriptions,
    requeue,
    save_wallet_figures,
    wallet_figures,
)


def queue_section(
    tx: Transaction, changes: FeedChanges, now: float, subscribed: bool = True
) -> bool:
    """Queues a section's deliveries and moves the wallets' figures past it;
    returns whether any subscription exists (subscribed, what was last known,
    for a section without wallet events)."""
    if not changes.events:
        return subscribed
    subs = queue_subscriptions(tx)
    figures = load_figures(tx, {event.originator_id for _, event in changes.events})
    rows: list[QueuedRow] = []
    for position, event in changes.events:
        wallet = figures.setdefault(event.originator_id, WalletFigures(None))
        if isinstance(event, Wallet.Created):
            wallet.user_id = user_number(event.user_id)
        before = wallet.available
        wallet.fold(event)
        if subs:
            fed = feed_event(position, event, wallet.user_id)
            rows += matches(subs, fed, wallet, before)
    save_wallet_figures(tx, ((w, as_row(f)) for w, f in figures.items()))
    enqueue(tx, rows, now)
    return bool(subs)


def matches(
    subs: Iterable[Subscription],
    fed: FeedEvent,
    wallet: WalletFigures,
    before: Any,
) -> list[QueuedRow]:
    """The deliveries of one event: to each subscription that wants it (made
    before it, and for its user if it names one), and its alerts."""
    rows: list[QueuedRow] = []
    after = wallet.available
    for sub in subs:
        if fed.position <= sub.start_position:
            continue
        if sub.user_id is not None and sub.user_id != wallet.user_id:
            continue
        if sub.wants(fed.type):
            rows.append(queued(sub.id, fed))
        # The subscription's threshold, else the wallet's own.
        below = sub.alert_below if sub.alert_below is not None else wallet.alert_below
        if below is not None and sub.wants(BALANCE_LOW) and before >= below > after:
            rows.append(queued(sub.id, alert_event(fed, sub.id, below, after, before)))
    return rows


def queued(subscription_id: UUID, fed: FeedEvent) -> QueuedRow:
    """A queue row: the delivery of one feed event to one subscription."""
    return (
        subscription_id,
        fed.id,
        fed.position,
        fed.wallet_id,
        fed.type,
        fed.encoded().decode(),
    )


def as_row(figures: WalletFigures) -> WalletRow:
    """A wallet's figures as the table keeps them."""
    user = None if figures.user_id is None else str(figures.user_id)
    return (
        user,
        figures.balance,
        figures.held,
        figures.credit_limit,
        figures.alert_below,
    )


def load_figures(tx: Transaction, wallet_ids: set[UUID]) -> dict[UUID, WalletFigures]:
    """The figures kept of these wallets (a wallet not seen yet has none)."""
    rows = wallet_figures(tx, sorted(wallet_ids))
    return {
        wallet_id: WalletFigures(
            None if user is None else user_number(user), balance, held, credit, alert
        )
        for wallet_id, (user, balance, held, credit, alert) in rows.items()
    }


def queue_replay(
    tx: Transaction,
    sub: Subscription,
    events: list[tuple[int, Any]],
    now: float,
) -> int:
    """Queues a subscription's events of a section again (a replay): what it
    wants of them, sent again even if delivered before; returns how many."""
    users = wallet_figures(tx, sorted({event.originator_id for _, event in events}))
    rows: list[QueuedRow] = []
    for position, event in events:
        known = users.get(event.originator_id)
        user_id = None if known is None or known[0] is None else user_number(known[0])
        if sub.user_id is not None and sub.user_id != user_id:
            continue
        fed = feed_event(position, event, user_id)
        if sub.wants(fed.type):
            rows.append(queued(sub.id, fed))
    requeue(tx, rows, now)
    return len(rows)
