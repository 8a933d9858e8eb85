"""The webhooks' tables: the admin's subscriptions, the queue of deliveries the
webhook follower fills from Pocket's log, and the figures it keeps of each wallet
to tell when its available amount crosses below a threshold.

Written in PostgreSQL's placeholder style for either database (pocket.database).
Moments are Unix seconds (double precision), which sort and compare the same on
both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from pocket.database import Dialect, Row, Transaction, as_decimal, as_uuid

SUBSCRIPTIONS = "webhook_subscriptions"
# The queue: the webhook follower's rows table (its tracking table, as the
# library names it, is webhook_deliveries_tracking).
DELIVERIES = "webhook_deliveries"
WALLETS = "webhook_wallets"
REPLAYS = "webhook_replays"
PENDING, DELIVERED, PARKED = "pending", "delivered", "parked"
# How long the admin's changes wait for a lock the webhook follower holds (a
# section being queued holds the subscriptions, a replay's section its row, for
# milliseconds): then refused, a 503, not a request hung behind a follower
# frozen or cut off in the middle of one. As long as a request waits for a
# pooled connection.
LOCK_TIMEOUT_SECONDS = 3
STATUSES = (PENDING, DELIVERED, PARKED)


def webhook_ddl(dialect: Dialect) -> list[str]:
    """The statements that make the webhooks' tables (each IF NOT EXISTS)."""
    pg = dialect == "postgres"
    uuid = "uuid" if pg else "TEXT"
    money = "numeric" if pg else "TEXT"
    serial = "bigserial PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    moment = "double precision"
    return [
        f"CREATE TABLE IF NOT EXISTS {SUBSCRIPTIONS} (id {uuid} PRIMARY KEY, "
        "url text NOT NULL, events text NOT NULL, user_id bigint, "
        f"alert_below {money}, description text NOT NULL, secret text NOT NULL, "
        f"start_position bigint NOT NULL, created_at {moment} NOT NULL, "
        f"last_delivered_at {moment}, last_error text, last_error_at {moment})",
        f"CREATE TABLE IF NOT EXISTS {DELIVERIES} (id {serial}, "
        f"subscription_id {uuid} NOT NULL, event_id {uuid} NOT NULL, "
        f"position bigint NOT NULL, wallet_id {uuid} NOT NULL, "
        "event_type text NOT NULL, body text NOT NULL, "
        "status text NOT NULL, attempts integer NOT NULL, "
        f"created_at {moment} NOT NULL, next_attempt_at {moment} NOT NULL, "
        f"last_attempt_at {moment}, last_error text, delivered_at {moment}, "
        "UNIQUE (subscription_id, event_id))",
        # A wallet's next delivery is its earliest pending one.
        f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_pending ON {DELIVERIES} "
        "(subscription_id, wallet_id, position, id) WHERE status = 'pending'",
        f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_parked ON {DELIVERIES} "
        "(subscription_id, position) WHERE status = 'parked'",
        f"CREATE INDEX IF NOT EXISTS {DELIVERIES}_done ON {DELIVERIES} "
        "(delivered_at) WHERE status = 'delivered'",
        f"CREATE TABLE IF NOT EXISTS {WALLETS} (wallet_id {uuid} PRIMARY KEY, "
        f"user_id text, balance {money} NOT NULL, held {money} NOT NULL, "
        f"credit_limit {money} NOT NULL, alert_below {money})",
        f"CREATE TABLE IF NOT EXISTS {REPLAYS} (subscription_id {uuid} PRIMARY KEY, "
        "after_position bigint NOT NULL, until_position bigint NOT NULL, "
        f"requested_at {moment} NOT NULL)",
    ]


def create_tables(tx: Transaction) -> None:
    """Makes the webhooks' tables if they are not there yet."""
    tx.lock_schema()
    for statement in webhook_ddl(tx.dialect):
        tx.execute(statement)


@dataclass(frozen=True)
class Subscription:
    """A receiver of the change feed: where, what, and the key its deliveries
    are signed with."""

    id: UUID
    url: str
    events: tuple[str, ...]
    user_id: int | None
    alert_below: Decimal | None
    description: str
    secret: str
    # Events after this position of Pocket's log are delivered to it (the
    # head of the log when it was made).
    start_position: int
    created_at: float
    last_delivered_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def wants(self, event_type: str) -> bool:
        """Whether it asked for events of this type."""
        return "*" in self.events or event_type in self.events

    @classmethod
    def from_row(cls, row: Row) -> Subscription:
        below = row["alert_below"]
        return cls(
            id=as_uuid(row["id"]),
            url=row["url"],
            events=tuple(json.loads(row["events"])),
            user_id=None if row["user_id"] is None else int(row["user_id"]),
            alert_below=None if below is None else as_decimal(below),
            description=row["description"],
            secret=row["secret"],
            start_position=int(row["start_position"]),
            created_at=float(row["created_at"]),
            last_delivered_at=row["last_delivered_at"],
            last_error=row["last_error"],
            last_error_at=row["last_error_at"],
        )


def subscriptions(tx: Transaction) -> list[Subscription]:
    """Every subscription, oldest first."""
    rows = tx.execute(f"SELECT * FROM {SUBSCRIPTIONS} ORDER BY created_at, id")
    return [Subscription.from_row(row) for row in rows]


def subscription(tx: Transaction, subscription_id: UUID) -> Subscription | None:
    """One subscription, or None."""
    rows = tx.execute(f"SELECT * FROM {SUBSCRIPTIONS} WHERE id = %s", [subscription_id])
    return Subscription.from_row(rows[0]) if rows else None


def add_subscription(tx: Transaction, sub: Subscription) -> None:
    """Records a new subscription."""
    tx.execute(
        f"INSERT INTO {SUBSCRIPTIONS} (id, url, events, user_id, alert_below, "
        "description, secret, start_position, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            sub.id,
            sub.url,
            json.dumps(list(sub.events)),
            sub.user_id,
            sub.alert_below,
            sub.description,
            sub.secret,
            sub.start_position,
            sub.created_at,
        ],
    )


def remove_subscription(tx: Transaction, subscription_id: UUID) -> bool:
    """Deletes a subscription and its queue; False if there was none.

    The subscription's row goes first: on PostgreSQL a section being queued
    holds it (FOR SHARE) until it commits, so its deliveries are deleted too."""
    wait_briefly(tx)
    tx.execute(f"DELETE FROM {SUBSCRIPTIONS} WHERE id = %s", [subscription_id])
    if not tx.rowcount:
        return False
    for table in (DELIVERIES, REPLAYS):
        tx.execute(f"DELETE FROM {table} WHERE subscription_id = %s", [subscription_id])
    return True


def wait_briefly(tx: Transaction) -> None:
    """Bounds this transaction's waits for locks to LOCK_TIMEOUT_SECONDS (on
    PostgreSQL; SQLite's own wait is bounded)."""
    if tx.dialect == "postgres":
        tx.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'")


def lock_subscriptions(tx: Transaction) -> None:
    """Waits for the section being queued (which holds the subscriptions, see
    queue_subscriptions) to commit, and holds the next back until this
    transaction ends; on SQLite a write's lock does both. A section that never
    ends (its follower frozen, or cut off) refuses it (wait_briefly)."""
    if tx.dialect == "postgres":
        wait_briefly(tx)
        tx.execute(f"LOCK TABLE {SUBSCRIPTIONS} IN EXCLUSIVE MODE")
    else:
        tx.execute(f"DELETE FROM {SUBSCRIPTIONS} WHERE 0 = 1")


def queue_subscriptions(tx: Transaction) -> list[Subscription]:
    """The subscriptions, held (on PostgreSQL) until the section that queues
    their deliveries commits, so that one being deleted takes them all."""
    lock = " FOR SHARE" if tx.dialect == "postgres" else ""
    rows = tx.execute(f"SELECT * FROM {SUBSCRIPTIONS} ORDER BY id{lock}")
    return [Subscription.from_row(row) for row in rows]


@dataclass(frozen=True)
class Delivery:
    """One event to send to one subscription (a row of the queue)."""

    id: int
    subscription_id: UUID
    event_id: UUID
    position: int
    wallet_id: UUID
    event_type: str
    body: bytes
    status: str
    attempts: int
    created_at: float
    next_attempt_at: float
    last_attempt_at: float | None
    last_error: str | None
    delivered_at: float | None

    @classmethod
    def from_row(cls, row: Row) -> Delivery:
        body = row["body"]
        return cls(
            id=int(row["id"]),
            subscription_id=as_uuid(row["subscription_id"]),
            event_id=as_uuid(row["event_id"]),
            position=int(row["position"]),
            wallet_id=as_uuid(row["wallet_id"]),
            event_type=row["event_type"],
            body=body.encode() if isinstance(body, str) else bytes(body),
            status=row["status"],
            attempts=int(row["attempts"]),
            created_at=float(row["created_at"]),
            next_attempt_at=float(row["next_attempt_at"]),
            last_attempt_at=row["last_attempt_at"],
            last_error=row["last_error"],
            delivered_at=row["delivered_at"],
        )

    def as_json(self) -> dict[str, Any]:
        """The delivery as the admin API shows it."""
        return {
            "id": self.id,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "position": self.position,
            "wallet_id": str(self.wallet_id),
            "status": self.status,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "next_attempt_at": self.next_attempt_at if self.status == PENDING else None,
            "last_attempt_at": self.last_attempt_at,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "event": json.loads(self.body),
        }


# (subscription id, event id, position, wallet id, type, body)
QueuedRow = tuple[UUID, UUID, int, UUID, str, str]


def enqueue(tx: Transaction, rows: Iterable[QueuedRow], now: float) -> None:
    """Adds deliveries to the queue (one already there is left as it is)."""
    tx.executemany(
        f"INSERT INTO {DELIVERIES} (subscription_id, event_id, position, wallet_id, "
        "event_type, body, status, attempts, created_at, next_attempt_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s) "
        "ON CONFLICT (subscription_id, event_id) DO NOTHING",
        [(*row, now, now) for row in rows],
    )


def requeue(tx: Transaction, rows: Iterable[QueuedRow], now: float) -> None:
    """Queues deliveries again for a replay: one already there (delivered,
    parked or pending) is sent again, from its first attempt."""
    tx.executemany(
        f"INSERT INTO {DELIVERIES} (subscription_id, event_id, position, wallet_id, "
        "event_type, body, status, attempts, created_at, next_attempt_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s) "
        "ON CONFLICT (subscription_id, event_id) DO UPDATE SET status = 'pending', "
        "attempts = 0, created_at = excluded.created_at, "
        "next_attempt_at = excluded.next_attempt_at, last_error = NULL, "
        "delivered_at = NULL",
        [(*row, now, now) for row in rows],
    )


def requeue_alerts(
    tx: Transaction, subscription_id: UUID, after: int, until: int, now: float
) -> None:
    """Sends a subscription's balance alerts between two positions again (they
    are not events of the log: a replay finds them in the queue)."""
    tx.execute(
        f"UPDATE {DELIVERIES} SET status = 'pending', attempts = 0, created_at = %s, "
        "next_attempt_at = %s, last_error = NULL, delivered_at = NULL "
        "WHERE subscription_id = %s AND event_type = 'balance.low' "
        "AND position > %s AND position <= %s",
        [now, now, subscription_id, after, until],
    )


# Each wallet's earliest pending delivery of a subscription: the only one of the
# wallet's that may be sent (in order per wallet). Found wallet by wallet through
# the pending index, a probe or two for each wallet with deliveries waiting
# however deep its backlog (a skip scan: SQLite and PostgreSQL lack one of their
# own). A NOT EXISTS per pending row instead was quadratic in a wallet's
# backlog: 14 s a round for 100,000 deliveries over 10 wallets on PostgreSQL.
HEADS = (
    "WITH RECURSIVE waiting(wallet_id) AS ("
    f"SELECT (SELECT wallet_id FROM {DELIVERIES} WHERE subscription_id = %s "
    "AND status = 'pending' ORDER BY wallet_id LIMIT 1) "
    "UNION ALL "
    f"SELECT (SELECT e.wallet_id FROM {DELIVERIES} e WHERE e.subscription_id = %s "
    "AND e.status = 'pending' AND e.wallet_id > waiting.wallet_id "
    "ORDER BY e.wallet_id LIMIT 1) "
    "FROM waiting WHERE waiting.wallet_id IS NOT NULL"
    "), heads AS ("
    f"SELECT d.* FROM waiting JOIN {DELIVERIES} d ON d.id = ("
    f"SELECT h.id FROM {DELIVERIES} h WHERE h.subscription_id = %s "
    "AND h.status = 'pending' AND h.wallet_id = waiting.wallet_id "
    "ORDER BY h.position, h.id LIMIT 1)) "
)


def due_heads(
    tx: Transaction, subscription_id: UUID, now: float, limit: int
) -> list[Delivery]:
    """The deliveries to send now: each wallet's earliest pending one, if its
    time has come (a later one waits for it: in order per wallet), earliest in
    the log first."""
    rows = tx.execute(
        HEADS + "SELECT * FROM heads WHERE next_attempt_at <= %s "
        "ORDER BY position, id LIMIT %s",
        [subscription_id] * 3 + [now, limit],
    )
    return [Delivery.from_row(row) for row in rows]


def next_attempt(tx: Transaction, subscription_id: UUID) -> float | None:
    """When the subscription's soonest sendable delivery may be tried: that of
    a wallet's earliest pending one (a later one, though queued due, waits for
    it; counting those, a sender whose receiver fails would look again at once,
    and again, for as long as the backlog lasts)."""
    rows = tx.execute(
        HEADS + "SELECT min(next_attempt_at) AS soonest FROM heads",
        [subscription_id] * 3,
    )
    soonest = rows[0]["soonest"] if rows else None
    return None if soonest is None else float(soonest)


# A try's outcome is recorded on its delivery as it was when the try began: a
# replay queued meanwhile (requeue: queued anew, created_at now) is left to be
# sent, not marked delivered or parked by a try of before it.
AS_TRIED = "id = %s AND status = 'pending' AND created_at = %s"


def mark_delivered(tx: Transaction, delivery: Delivery, now: float) -> None:
    """Records a delivery the receiver took (2xx)."""
    tx.execute(
        f"UPDATE {DELIVERIES} SET status = 'delivered', attempts = attempts + 1, "
        "last_attempt_at = %s, delivered_at = %s, last_error = NULL "
        f"WHERE {AS_TRIED}",
        [now, now, delivery.id, delivery.created_at],
    )
    tx.execute(
        f"UPDATE {SUBSCRIPTIONS} SET last_delivered_at = %s WHERE id = %s",
        [now, delivery.subscription_id],
    )


def mark_failed(
    tx: Transaction,
    delivery: Delivery,
    error: str,
    now: float,
    retry_at: float | None,
) -> None:
    """Records a failed try: tried again at retry_at, or parked (None)."""
    status = PENDING if retry_at is not None else PARKED
    tx.execute(
        f"UPDATE {DELIVERIES} SET status = %s, attempts = attempts + 1, "
        "last_attempt_at = %s, last_error = %s, next_attempt_at = %s "
        f"WHERE {AS_TRIED}",
        [
            status,
            now,
            error,
            now if retry_at is None else retry_at,
            delivery.id,
            delivery.created_at,
        ],
    )
    tx.execute(
        f"UPDATE {SUBSCRIPTIONS} SET last_error = %s, last_error_at = %s WHERE id = %s",
        [error, now, delivery.subscription_id],
    )


def deliveries(
    tx: Transaction,
    subscription_id: UUID,
    status: str | None,
    limit: int,
    before: int | None = None,
) -> list[Delivery]:
    """A subscription's deliveries, newest first (before: ids below it)."""
    sql = f"SELECT * FROM {DELIVERIES} WHERE subscription_id = %s"
    params: list[Any] = [subscription_id]
    if status is not None:
        sql += " AND status = %s"
        params.append(status)
    if before is not None:
        sql += " AND id < %s"
        params.append(before)
    rows = tx.execute(f"{sql} ORDER BY id DESC LIMIT %s", [*params, limit])
    return [Delivery.from_row(row) for row in rows]


@dataclass(frozen=True)
class QueueFigures:
    """Where a subscription's deliveries stand."""

    pending: int
    parked: int
    # The earliest position still pending (None: nothing pending).
    first_pending: int | None
    replay: tuple[int, int] | None


def queue_figures(tx: Transaction, subscription_id: UUID) -> QueueFigures:
    """Counts of a subscription's pending and parked deliveries, where the
    earliest pending one is, and the replay under way (its cursor and end)."""
    rows = tx.execute(
        "SELECT sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, "
        "sum(CASE WHEN status = 'parked' THEN 1 ELSE 0 END) AS parked, "
        "min(CASE WHEN status = 'pending' THEN position END) AS first_pending "
        f"FROM {DELIVERIES} WHERE subscription_id = %s AND status <> 'delivered'",
        [subscription_id],
    )
    replays = tx.execute(
        f"SELECT after_position, until_position FROM {REPLAYS} "
        "WHERE subscription_id = %s",
        [subscription_id],
    )
    row = rows[0] if rows else {}
    first = row.get("first_pending")
    return QueueFigures(
        pending=int(row.get("pending") or 0),
        parked=int(row.get("parked") or 0),
        first_pending=None if first is None else int(first),
        replay=(
            (int(replays[0]["after_position"]), int(replays[0]["until_position"]))
            if replays
            else None
        ),
    )


def forget_delivered(tx: Transaction, older_than: float, limit: int = 1000) -> int:
    """Deletes delivered rows older than a moment (a replay reads the log, not
    these); returns how many."""
    tx.execute(
        f"DELETE FROM {DELIVERIES} WHERE id IN (SELECT id FROM {DELIVERIES} "
        "WHERE status = 'delivered' AND delivered_at < %s LIMIT %s)",
        [older_than, limit],
    )
    return tx.rowcount


def request_replay(
    tx: Transaction, subscription_id: UUID, after: int, until: int, now: float
) -> None:
    """Asks the webhook follower to queue a subscription's events again, from
    after a position up to until (a replay asked for again replaces it).

    One upsert, not a delete and an insert: two asked for at once on
    PostgreSQL would each delete nothing, and the second insert fail on the
    first's row."""
    wait_briefly(tx)
    tx.execute(
        f"INSERT INTO {REPLAYS} (subscription_id, after_position, until_position, "
        "requested_at) VALUES (%s, %s, %s, %s) ON CONFLICT (subscription_id) "
        "DO UPDATE SET after_position = excluded.after_position, "
        "until_position = excluded.until_position, "
        "requested_at = excluded.requested_at",
        [subscription_id, after, until, now],
    )


def replays(tx: Transaction) -> list[tuple[UUID, int, int]]:
    """The replays under way: subscription, cursor (after) and end (until)."""
    rows = tx.execute(
        f"SELECT subscription_id, after_position, until_position FROM {REPLAYS}"
    )
    return [
        (
            as_uuid(row["subscription_id"]),
            int(row["after_position"]),
            int(row["until_position"]),
        )
        for row in rows
    ]


def advance_replay(
    tx: Transaction, subscription_id: UUID, after: int, to: int, until: int
) -> bool:
    """Moves a replay's cursor from after to to (compare-and-set; done at until:
    the replay ends); False if another moved or replaced it meanwhile."""
    if to >= until:
        tx.execute(
            f"DELETE FROM {REPLAYS} WHERE subscription_id = %s "
            "AND after_position = %s AND until_position = %s",
            [subscription_id, after, until],
        )
    else:
        tx.execute(
            f"UPDATE {REPLAYS} SET after_position = %s WHERE subscription_id = %s "
            "AND after_position = %s AND until_position = %s",
            [to, subscription_id, after, until],
        )
    return tx.rowcount == 1


WalletRow = tuple[str | None, Decimal, Decimal, Decimal, Decimal | None]


def wallet_figures(tx: Transaction, wallet_ids: list[UUID]) -> dict[UUID, WalletRow]:
    """The figures kept of some wallets: user, balance, held, credit limit."""
    found: dict[UUID, WalletRow] = {}
    for start in range(0, len(wallet_ids), 500):  # SQLite's parameter limit.
        chunk = wallet_ids[start : start + 500]
        marks = ", ".join(["%s"] * len(chunk))
        rows = tx.execute(
            f"SELECT * FROM {WALLETS} WHERE wallet_id IN ({marks})", chunk
        )
        for row in rows:
            found[as_uuid(row["wallet_id"])] = (
                row["user_id"],
                as_decimal(row["balance"]),
                as_decimal(row["held"]),
                as_decimal(row["credit_limit"]),
                None if row["alert_below"] is None else as_decimal(row["alert_below"]),
            )
    return found


def save_wallet_figures(
    tx: Transaction, figures: Iterable[tuple[UUID, WalletRow]]
) -> None:
    """Records the figures of wallets a section moved."""
    tx.executemany(
        f"INSERT INTO {WALLETS} (wallet_id, user_id, balance, held, credit_limit, "
        "alert_below) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (wallet_id) DO "
        "UPDATE SET user_id = excluded.user_id, balance = excluded.balance, "
        "held = excluded.held, credit_limit = excluded.credit_limit, "
        "alert_below = excluded.alert_below",
        [(wallet_id, *row) for wallet_id, row in figures],
    )
