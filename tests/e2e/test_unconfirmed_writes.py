"""A write is acknowledged only once the database confirms it, and no wait on
the request path is unbounded: a real `pocket serve` on a primary with a
synchronous standby (each test's own pair), the standby stopped or killed.

- A lost reply settled while the standby is away is answered 503, not 200: its
  events are on the primary alone. After a failover to the standby they are
  gone, and the resend with the same key makes the change, once; if the standby
  comes back instead, the resend is answered from the record, once.
- With the synchronous standby dead, keyed writes are answered 503 within the
  commit timeout; reads, health, readiness (which says why) and metrics keep
  answering within a second; once the standby is back, each resent key moves
  money exactly once.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.processes import Api, PocketProcess, run_pocket, serve
from tests.pgserver import (
    STANDBY_NAME,
    PostgresServer,
    ReplicatedPair,
    fail_over_to_a_stopped_standby,
)
from tests.proxy import Proxy

pytestmark = pytest.mark.e2e
DATABASE = "pocket"
# Short, for the tests' sake: POCKET_COMMIT_TIMEOUT_SECONDS (5 by default).
COMMIT_TIMEOUT = 2.0
# How long a test resends a key before it gives up on it.
RESEND_SECONDS = 30.0


@dataclass
class Wallets:
    """A server and its users, each with a token and 100.00 in their wallet."""

    server: PocketProcess
    api: Api
    users: dict[int, Api] = field(default_factory=dict)

    def sign_up(self, count: int) -> None:
        for n in range(count):
            status, body = self.api.post("/users", {"name": f"user {n}"})
            assert status == 201, body
            user_id = body["user"]["id"]
            self.users[user_id] = self.api.as_user(body["token"])
            status, body = self.users[user_id].post(
                f"/users/{user_id}/add_money", {"amount": "100", "source": "seed"}
            )
            assert status == 200, body

    def balance(self, user_id: int) -> Decimal:
        status, body = self.users[user_id].get(f"/users/{user_id}")
        assert status == 200, body
        return Decimal(body["wallet"]["balance"])


def marked(server: PostgresServer, marker: str) -> int:
    """How many wallet events on this server carry marker."""
    with psycopg.connect(server.url_for(DATABASE), target_session_attrs="any") as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pocket_events "
            "WHERE convert_from(state, 'UTF8') LIKE %s",
            [f"%{marker}%"],
        ).fetchall()
    return int(rows[0][0])


def resend(
    user: Api, path: str, body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Sends a keyed request until it is answered other than 503 (or time is up)."""
    deadline = time.monotonic() + RESEND_SECONDS
    while True:
        try:
            status, answer, headers = user.exchange(
                "POST", path, body, {"Idempotency-Key": key}
            )
        except OSError:
            status, answer, headers = 0, {}, {}
        if status not in (0, 503) or time.monotonic() > deadline:
            return status, answer, dict(headers)
        time.sleep(0.2)


@pytest.fixture
def pair_with_proxy(
    replicated_postgres: ReplicatedPair, tmp_path: Path
) -> Iterator[tuple[ReplicatedPair, Wallets, Proxy]]:
    """`pocket serve` on the pair's multi-host URL, its link to the primary
    through a proxy that can lose a reply; one user, 100.00 in their wallet."""
    primary, standby = replicated_postgres
    primary.create_database(DATABASE)
    proxy = Proxy("127.0.0.1", primary.port)
    url = (
        f"postgresql://postgres@127.0.0.1:{proxy.port},"
        f"127.0.0.1:{standby.port}/{DATABASE}"
    )
    env = {
        "POCKET_DATABASE_URL": url,
        "POCKET_COMMIT_TIMEOUT_SECONDS": str(COMMIT_TIMEOUT),
    }
    server, api = serve(tmp_path, env, "--no-follower")
    try:
        wallets = Wallets(server, api)
        wallets.sign_up(1)
        yield replicated_postgres, wallets, proxy
    finally:
        server.close()
        proxy.close()


@dataclass
class LostReply:
    """A keyed add_money of 100.00 whose reply was lost, and how to resend it."""

    user_id: int
    user: Api
    marker: str
    key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def path(self) -> str:
        return f"/users/{self.user_id}/add_money"

    @property
    def body(self) -> dict[str, Any]:
        return {"amount": "100", "source": self.marker}

    def send(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Sends it once more, with its key."""
        status, answer, headers = self.user.exchange(
            "POST", self.path, self.body, {"Idempotency-Key": self.key}
        )
        return status, answer, dict(headers)

    def resend(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Sends it again until it is answered other than 503."""
        return resend(self.user, self.path, self.body, self.key)


def lose_a_reply_while_the_standby_is_away(
    pair: ReplicatedPair, wallets: Wallets, proxy: Proxy
) -> tuple[LostReply, int, dict[str, Any]]:
    """Stops the standby (commits wait for it), then sends a keyed add_money of
    100.00 whose reply the proxy loses once its statement is forwarded; the
    request, and the answer its sender got."""
    pair.standby.stop()
    ((user_id, user),) = wallets.users.items()
    lost = LostReply(user_id, user, f"lost-{uuid.uuid4().hex}")
    trap = proxy.arm(lost.marker)
    status, body, _ = lost.send()
    assert trap.sprung.is_set(), "the proxy never saw the statement"
    return lost, status, body


def test_a_write_settled_on_the_primary_alone_is_not_acknowledged_and_fails_over_once(
    pair_with_proxy: tuple[ReplicatedPair, Wallets, Proxy],
) -> None:
    pair, wallets, proxy = pair_with_proxy
    primary, standby = pair
    lost, status, body = lose_a_reply_while_the_standby_is_away(pair, wallets, proxy)
    # Committed on the primary (its backend was ended while it waited for the
    # standby), but the standby never had it: not acknowledged.
    assert status == 503, body
    assert "not known" in body["error"]["message"]
    assert marked(primary, lost.marker) == 1
    # The primary dies; the standby, which never had the write, takes over.
    fail_over_to_a_stopped_standby(primary, standby)
    status, body, headers = lost.resend()
    assert status == 200, body
    assert headers.get("Idempotency-Replayed") != "true"  # made now, for the first time
    assert body["wallet"]["balance"] == "200.00"
    assert marked(standby, lost.marker) == 1


def test_a_write_settled_on_the_primary_alone_counts_once_its_standby_is_back(
    pair_with_proxy: tuple[ReplicatedPair, Wallets, Proxy],
) -> None:
    pair, wallets, proxy = pair_with_proxy
    primary, standby = pair
    lost, status, body = lose_a_reply_while_the_standby_is_away(pair, wallets, proxy)
    assert status == 503, body
    # Until the standby has it, a resend is not answered from the record either.
    status, body, _ = lost.send()
    assert status == 503, body
    standby.start()
    primary.wait_for_replica(STANDBY_NAME, "sync")
    status, body, headers = lost.resend()
    assert status == 200, body
    assert headers.get("Idempotency-Replayed") == "true"
    assert body["wallet"]["balance"] == "200.00"
    assert marked(primary, lost.marker) == 1
    assert wallets.balance(lost.user_id) == Decimal("200.00")


@dataclass
class Probe:
    """One read-side request sent while writes waited: its answer and time."""

    path: str
    status: int | None
    seconds: float
    message: str = ""


def probe_reads(wallets: Wallets, stop: threading.Event, probes: list[Probe]) -> None:
    """Sends the reads a person and a monitor make, one after another, until
    stopped: health, readiness, metrics and a wallet."""
    user_id, user = next(iter(wallets.users.items()))
    asks = [
        (wallets.api, "/health"),
        (wallets.api, "/health/ready"),
        (user, f"/users/{user_id}"),
    ]
    while not stop.is_set():
        for api, path in asks:
            started = time.monotonic()
            try:
                status, body, _ = api.exchange("GET", path, timeout=10)
                message = body.get("error", {}).get("message", "")
            except OSError as error:
                status, message = None, str(error)
            probes.append(Probe(path, status, time.monotonic() - started, message))
        started = time.monotonic()
        metrics = wallets.api.base_url + "/metrics"
        try:
            with urllib.request.urlopen(metrics, timeout=10) as answer:  # noqa: S310
                metrics_status: int | None = answer.status
        except OSError:
            metrics_status = None
        probes.append(Probe("/metrics", metrics_status, time.monotonic() - started))
        time.sleep(0.05)


def metric_values(api: Api) -> dict[str, float]:
    """The unlabelled samples of a server's /metrics."""
    url = api.base_url + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
        text = answer.read().decode()
    samples = (line.split(" ") for line in text.splitlines() if line[:1] != "#")
    return {sample[0]: float(sample[1]) for sample in samples if len(sample) == 2}


@dataclass
class Write:
    """One keyed add_money: its user, amount, key, and first answer."""

    user_id: int
    amount: Decimal
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: int | None = None
    seconds: float = 0.0
    message: str = ""


def send_once(wallets: Wallets, write: Write) -> None:
    path = f"/users/{write.user_id}/add_money"
    body = {"amount": str(write.amount), "source": "while-the-standby-is-dead"}
    started = time.monotonic()
    try:
        write.status, answer, _ = wallets.users[write.user_id].exchange(
            "POST", path, body, {"Idempotency-Key": write.key}, timeout=20
        )
        write.message = answer.get("error", {}).get("message", "")
    except OSError as error:
        write.status, write.message = None, str(error)
    write.seconds = time.monotonic() - started


@pytest.fixture
def serving_on_a_pair(
    replicated_postgres: ReplicatedPair, tmp_path: Path
) -> Iterator[tuple[ReplicatedPair, Wallets, dict[str, str]]]:
    """`pocket serve` as `make run` starts it (its follower in process) on the
    pair's primary; four users, 100.00 each."""
    primary, _ = replicated_postgres
    env = {
        "POCKET_DATABASE_URL": primary.create_database(DATABASE),
        "POCKET_COMMIT_TIMEOUT_SECONDS": str(COMMIT_TIMEOUT),
    }
    server, api = serve(tmp_path, env)
    try:
        wallets = Wallets(server, api)
        wallets.sign_up(4)
        yield replicated_postgres, wallets, env
    finally:
        server.close()


def test_a_dead_synchronous_standby_never_freezes_the_api(
    serving_on_a_pair: tuple[ReplicatedPair, Wallets, dict[str, str]], tmp_path: Path
) -> None:
    (primary, standby), wallets, env = serving_on_a_pair
    standby.kill()
    ids = sorted(wallets.users)
    writes = [Write(ids[n % len(ids)], Decimal(n + 1)) for n in range(24)]
    probes: list[Probe] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_reads, args=(wallets, stop, probes))
    senders = [threading.Thread(target=send_once, args=(wallets, w)) for w in writes]
    for sender in senders:
        sender.start()
    prober.start()
    for sender in senders:
        sender.join(30)
    status = run_pocket(tmp_path, env, "status")
    stop.set()
    prober.join(15)

    # Every write answered, 503 and not known to have happened, within the
    # commit timeout (and a little more: the watchdog's cancel, a slow machine).
    assert all(w.status == 503 for w in writes), [(w.status, w.message) for w in writes]
    assert max(w.seconds for w in writes) < COMMIT_TIMEOUT + 2.5, writes
    assert all("Idempotency-Key" in w.message for w in writes), writes
    # Reads, health and metrics kept answering, each within a second.
    assert probes, "nothing was probed"
    slow = [p for p in probes if p.seconds >= 1.0 or p.status is None]
    assert not slow, slow
    assert {p.status for p in probes if p.path in ("/health", "/metrics")} == {200}
    assert {p.status for p in probes if p.path.startswith("/users/")} == {200}
    # Readiness said why writes were stuck.
    unready = [p for p in probes if p.path == "/health/ready" and p.status == 503]
    assert unready, probes
    assert "synchronous standby" in unready[-1].message
    # So did pocket status, and the metrics.
    assert status.returncode == 0, status.stderr
    assert "Writes: stuck, waiting for the synchronous standby" in status.stdout
    metrics = metric_values(wallets.api)
    assert metrics["pocket_group_commit_unconfirmed_total"] >= 1
    assert metrics["pocket_writes_stuck_seconds"] > 0

    # The standby comes back: each resent key moves its money exactly once.
    standby.start()
    primary.wait_for_replica(STANDBY_NAME, "sync")
    for write in writes:
        path = f"/users/{write.user_id}/add_money"
        body = {"amount": str(write.amount), "source": "while-the-standby-is-dead"}
        answer, _, _ = resend(wallets.users[write.user_id], path, body, write.key)
        assert answer == 200, write
    for user_id in ids:
        added = sum(w.amount for w in writes if w.user_id == user_id)
        assert wallets.balance(user_id) == Decimal(100) + added
    assert wallets.api.get("/health/ready")[0] == 200
