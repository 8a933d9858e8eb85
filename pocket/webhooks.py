"""Sending the webhooks' queue: a thread per subscription, in the process whose
webhook follower is active, posts each wallet's deliveries in log order, signed,
and retries a failure with back-off until the retry period ends, then parks it.

A subscription's thread waits only on its own receiver: a slow or dead one holds
up its own deliveries, never another subscription's, the API, or the follower that
fills the queue. Delivery is at least once (a reply lost after the receiver took
an event means it is sent again): receivers deduplicate by the event's id.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import random
import socket
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit
from uuid import UUID

from pocket.database import Database
from pocket.feed import backoff, sign
from pocket.webhook_store import (
    Delivery,
    Subscription,
    due_heads,
    forget_delivered,
    mark_delivered,
    mark_failed,
    next_attempt,
    subscription,
    subscriptions,
)

log = logging.getLogger(__name__)
# A receiver's answer is read up to this much, then the connection is closed.
MAX_RESPONSE_BYTES = 64 * 1024
# What the log keeps of a failure's answer.
ERROR_TEXT = 200
# The first retry comes after about this long, each next after twice as long,
# up to the cap.
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 900.0
USER_AGENT = "Pocket-Webhooks/1"


@dataclass(frozen=True)
class WebhookSettings:
    """How deliveries are sent (POCKET_WEBHOOK_* variables; docs/webhooks.md)."""

    # Connecting, sending and reading the answer, in all, at most.
    timeout: float = 10.0
    # A delivery is retried for this long after it was queued, then parked.
    retry_for: float = 86400.0
    # Deliveries in flight at once for one subscription (distinct wallets).
    concurrency: int = 4
    # Delivered rows are kept this long (for the console), then deleted.
    keep_for: float = 7 * 86400.0
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_cap: float = BACKOFF_CAP_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        """The settings from the library's environment (pocket.config copies
        them there from POCKET_WEBHOOK_*)."""

        def number(key: str, default: float) -> float:
            value = env.get(key, "")
            return float(value) if value else default

        return cls(
            timeout=number("POCKET_WEBHOOK_TIMEOUT_SECONDS", cls.timeout),
            retry_for=number("POCKET_WEBHOOK_RETRY_SECONDS", cls.retry_for),
            concurrency=int(number("POCKET_WEBHOOK_CONCURRENCY", cls.concurrency)),
            keep_for=number("POCKET_WEBHOOK_KEEP_SECONDS", cls.keep_for),
            backoff_cap=number("POCKET_WEBHOOK_BACKOFF_CAP_SECONDS", cls.backoff_cap),
        )


@dataclass(frozen=True)
class Outcome:
    """What one try of a delivery came to."""

    ok: bool
    error: str | None = None


def post(
    url: str, body: bytes, headers: Mapping[str, str], settings: WebhookSettings
) -> Outcome:
    """POSTs body to url; a 2xx answer is success, anything else (another
    status, no answer within the timeout, a refused connection) is a failure
    described in a line. At most MAX_RESPONSE_BYTES of the answer are read."""
    parts = urlsplit(url)
    deadline = time.monotonic() + settings.timeout
    connection_class = (
        http.client.HTTPSConnection
        if parts.scheme == "https"
        else http.client.HTTPConnection
    )
    conn = connection_class(parts.hostname or "", parts.port, timeout=settings.timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    timed_out = f"no answer within {settings.timeout:g}s"
    # The socket's timeout bounds each read, not the try: a receiver can answer
    # a byte at a time, or with "100 Continue" after "100 Continue", each well
    # within it. At the deadline the watchdog shuts the socket, which ends the
    # read or write in hand.
    cut = threading.Event()
    watchdog = threading.Timer(settings.timeout, cut_off, (conn, cut))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        if cut.is_set():  # Cut while connecting, before there was a socket.
            raise TimeoutError
        conn.request("POST", path, body, dict(headers))
        response = conn.getresponse()
        answer = read_bounded(conn, response, deadline)
    except TimeoutError:
        return Outcome(False, timed_out)
    except (OSError, http.client.HTTPException) as error:
        if cut.is_set():
            return Outcome(False, timed_out)
        return Outcome(False, error_line(f"{type(error).__name__}: {error}"))
    finally:
        watchdog.cancel()
        conn.close()
    if cut.is_set():
        return Outcome(False, timed_out)
    if 200 <= response.status < 300:
        return Outcome(True)
    text = answer.decode(errors="replace").strip()
    return Outcome(False, error_line(f"HTTP {response.status}: {text}"))


def cut_off(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """Ends a try at its deadline: shuts its socket (the plain socket's own
    shutdown, under TLS too, so that no TLS state changes under the thread
    reading it)."""
    cut.set()
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def error_line(text: str) -> str:
    """A failure as recorded: the start of it, and no NUL (which PostgreSQL's
    text cannot hold: the outcome would not be recorded, and the delivery
    would be sent again as if never tried)."""
    return text[:ERROR_TEXT].replace("\x00", "\ufffd")


def read_bounded(
    conn: http.client.HTTPConnection,
    response: http.client.HTTPResponse,
    deadline: float,
) -> bytes:
    """Reads the answer up to MAX_RESPONSE_BYTES, by the deadline (a receiver
    that trickles its answer is cut off like one that never answers)."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if conn.sock is not None:
            conn.sock.settimeout(left)
        chunk = response.read1(min(16384, MAX_RESPONSE_BYTES - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def headers_for(sub: Subscription, delivery: Delivery, now: float) -> dict[str, str]:
    """A delivery's headers: its id and type, the try, and the signature."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Pocket-Event-Id": str(delivery.event_id),
        "Pocket-Event-Type": delivery.event_type,
        "Pocket-Delivery-Attempt": str(delivery.attempts + 1),
        "Pocket-Signature": sign(sub.secret, int(now), delivery.body),
    }


class SubscriptionSender(threading.Thread):
    """Sends one subscription's due deliveries, several wallets at once."""

    def __init__(
        self,
        db: Database,
        subscription_id: UUID,
        settings: WebhookSettings,
        counts: dict[str, int],
    ) -> None:
        super().__init__(name=f"pocket-webhook-{subscription_id}", daemon=True)
        self.db = db
        self.subscription_id = subscription_id
        self.settings = settings
        self.counts = counts
        self.stopping = threading.Event()
        self.woken = threading.Event()
        self.rng = random.Random()
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, settings.concurrency),
            thread_name_prefix=f"pocket-webhook-{str(subscription_id)[:8]}",
        )

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            self.woken.clear()
            try:
                wait = self.round()
                failures = 0
            except Exception as error:  # The database: try again shortly.
                failures += 1
                wait = min(10.0, 0.2 * 2**failures)
                log.warning("Webhook sender failed (%s); again in %.1fs", error, wait)
            if wait > 0:
                self.woken.wait(wait)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def round(self) -> float:
        """Sends what is due now; returns how long to wait before the next."""
        with self.db.transaction(commit=False) as tx:
            sub = subscription(tx, self.subscription_id)
            if sub is None:  # Deleted.
                self.stopping.set()
                return 0.0
            heads = due_heads(
                tx, sub.id, time.time(), max(1, self.settings.concurrency) * 4
            )
        if heads:
            self.send(sub, heads)
            return 0.0
        with self.db.transaction(commit=False) as tx:
            soonest = next_attempt(tx, sub.id)
        if soonest is None:
            return 1.0
        return min(1.0, max(0.0, soonest - time.time()))

    def send(self, sub: Subscription, heads: list[Delivery]) -> None:
        """Sends each delivery (at once, up to the concurrency), then records
        each outcome."""
        # Stopping, the tries made are recorded all the same (the follower
        # waits for this before the standby may take over, and the runner
        # before it closes the pools): not recorded, they would be sent again
        # as first tries.
        outcomes = list(self.pool.map(lambda d: self.try_one(sub, d), heads))
        now = time.time()
        with self.db.transaction() as tx:
            for delivery, outcome in zip(heads, outcomes, strict=True):
                if outcome is None:
                    continue  # Not tried (stopping): still due, as it was.
                if outcome.ok:
                    mark_delivered(tx, delivery, now)
                    self.counts["delivered"] += 1
                    continue
                retry_at = self.retry_at(delivery, now)
                mark_failed(tx, delivery, outcome.error or "failed", now, retry_at)
                self.counts["failed" if retry_at is not None else "parked"] += 1

    def try_one(self, sub: Subscription, delivery: Delivery) -> Outcome | None:
        """One try of one delivery (None: not tried, the sender stopping)."""
        if self.stopping.is_set():
            return None
        headers = headers_for(sub, delivery, time.time())
        return post(sub.url, delivery.body, headers, self.settings)

    def retry_at(self, delivery: Delivery, now: float) -> float | None:
        """When to try a failed delivery again (None: its retry period is over:
        park it)."""
        attempts = delivery.attempts + 1
        s = self.settings
        at = now + backoff(attempts, s.backoff_base, s.backoff_cap, self.rng)
        return at if at <= delivery.created_at + s.retry_for else None

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()


class Dispatcher(threading.Thread):
    """Keeps a sender running for each subscription (in the process whose
    webhook follower is active), and deletes delivered rows past keeping."""

    def __init__(
        self, db: Database, settings: WebhookSettings, counts: dict[str, int]
    ) -> None:
        super().__init__(name="pocket-webhooks", daemon=True)
        self.db = db
        self.settings = settings
        self.senders: dict[UUID, SubscriptionSender] = {}
        self.stopping = threading.Event()
        self.woken = threading.Event()
        # Tries by outcome (delivered, failed, parked), for metrics.
        self.counts = counts
        self.cleaned_at = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.woken.clear()
            try:
                self.reconcile()
                self.clean()
            except Exception as error:
                log.warning("Webhook dispatcher failed (%s); again soon", error)
            self.woken.wait(1.0)
        for sender in self.senders.values():
            sender.stop()
        for sender in self.senders.values():
            sender.join(self.settings.timeout + 1)

    def reconcile(self) -> None:
        """A sender for each subscription; none for a deleted one."""
        with self.db.transaction(commit=False) as tx:
            wanted = {sub.id for sub in subscriptions(tx)}
        for sub_id in list(self.senders):
            if sub_id not in wanted or not self.senders[sub_id].is_alive():
                self.senders.pop(sub_id).stop()
        for sub_id in wanted - self.senders.keys():
            sender = SubscriptionSender(self.db, sub_id, self.settings, self.counts)
            self.senders[sub_id] = sender
            sender.start()

    def clean(self) -> None:
        """Deletes delivered rows older than keep_for, a minute apart."""
        now = time.time()
        if now - self.cleaned_at < 60:
            return
        self.cleaned_at = now
        with self.db.transaction() as tx:
            forget_delivered(tx, now - self.settings.keep_for)

    def wake(self) -> None:
        """New deliveries were queued: every sender looks now."""
        self.woken.set()
        for sender in list(self.senders.values()):
            sender.woken.set()

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()
