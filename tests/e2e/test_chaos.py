"""Chaos: several API processes and followers under money traffic, while servers
and followers are killed, links to the database are cut and the database goes
down: a throwaway server restarts, or a Patroni cluster fails over.

Every acknowledged request is applied exactly once, every refused one not at all,
a request sent once without a key at most once; money is conserved, no balance is
negative, and `pocket verify` agrees with the projection afterwards.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pocket.config import Settings
from tests.e2e.processes import (
    Api,
    PocketProcess,
    follow,
    records,
    replay,
    run_pocket,
    serve,
    wait_for,
)
from tests.patroni import PatroniCluster
from tests.pgserver import PostgresServer
from tests.proxy import Proxy

pytestmark = pytest.mark.e2e
USERS = 6
CLIENTS = 6
CHAOS_SECONDS = 30


@dataclass
class Request:
    """One money command, as a client sent it (perhaps several times)."""

    user: int
    op: str
    body: dict[str, Any]
    key: str | None  # None: sent once, without an Idempotency-Key
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str = "unsent"  # acknowledged, refused, unknown

    def events(self) -> int:
        """How many wallet events the command records when applied."""
        return 2 if self.op == "transfers" else 1


class Cluster:
    """The API processes (their addresses change as they are killed and
    restarted), the followers, and the tokens of the users."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.lock = threading.Lock()
        self.servers: list[tuple[PocketProcess, Api]] = []
        self.followers: list[PocketProcess] = []
        self.tokens: dict[int, str] = {}

    def start_server(self) -> None:
        started = serve(self.tmp_path, self.env, "--no-follower")
        with self.lock:
            self.servers.append(started)

    def kill_server(self, rng: random.Random) -> None:
        with self.lock:
            victim = self.servers.pop(rng.randrange(len(self.servers)))
        victim[0].kill()
        victim[0].close()

    def api(self, rng: random.Random, user: int) -> Api:
        with self.lock:
            _, api = rng.choice(self.servers)
        return api.as_user(self.tokens[user])

    def close(self) -> None:
        for process, _ in self.servers:
            process.close()
        for follower in self.followers:
            follower.close()


def send(cluster: Cluster, rng: random.Random, request: Request) -> str:
    """Sends a request once; returns acknowledged, refused, or unknown."""
    headers = {"X-Request-Id": request.request_id}
    if request.key is not None:
        headers["Idempotency-Key"] = request.key
    try:
        api = cluster.api(rng, request.user)
        status, body = api.post(
            f"/users/{request.user}/{request.op}", request.body, headers
        )
    except (OSError, ValueError, http.client.HTTPException):
        # A killed server, a cut-off answer: whether it was done is not known.
        return "unknown"
    if status in (200, 201):
        return "acknowledged"
    if status == 409 and body["error"]["code"] == "insufficient_funds":
        return "refused"
    assert status in (409, 503), (status, body)  # in flight elsewhere, or down
    return "unknown"


def new_request(rng: random.Random) -> Request:
    user = rng.randint(1, USERS)
    amount = f"{rng.randint(1, 3000) / 100:.2f}"
    op = rng.choice(["add_money", "draw_money", "draw_money", "transfers"])
    body: dict[str, Any]
    if op == "add_money":
        body = {"amount": amount, "source": "chaos"}
    elif op == "draw_money":
        body = {"amount": amount, "destination": "chaos"}
    else:
        others = [u for u in range(1, USERS + 1) if u != user]
        body = {"to_user_id": rng.choice(others), "amount": amount}
    keyed = rng.random() < 0.8
    return Request(user, op, body, uuid.uuid4().hex if keyed else None)


def client(
    cluster: Cluster, seed: int, stop: threading.Event, sent: list[Request]
) -> None:
    """Sends commands until stopped; a keyed one is resent until it is decided."""
    rng = random.Random(seed)
    while not stop.is_set():
        request = new_request(rng)
        sent.append(request)
        request.outcome = send(cluster, rng, request)
        while request.key and request.outcome == "unknown" and not stop.is_set():
            time.sleep(0.2)
            request.outcome = send(cluster, rng, request)


@dataclass
class Database:
    """The database under chaos: how it goes down (and comes back), and the URL
    of Pocket's database on its primary, for the checks afterwards."""

    go_down: Callable[[random.Random], None]
    primary_url: Callable[[], str]


def restarted(server: PostgresServer, url: str) -> Database:
    """A single server that stops and starts again."""

    def go_down(rng: random.Random) -> None:
        server.stop(mode=rng.choice(["fast", "immediate"]))
        time.sleep(rng.uniform(0.5, 2.0))
        server.start()

    return Database(go_down, lambda: url)


def failed_over(patroni: PatroniCluster, database: str) -> Database:
    """A Patroni cluster whose leader's postmaster is killed: Patroni promotes
    the synchronous standby, and the old leader rejoins as its standby."""

    def go_down(rng: random.Random) -> None:
        # A synchronous standby to fail over to (the last failover's old leader,
        # once it has rejoined).
        leader, _ = patroni.wait_until_healthy(60)
        leader.kill_postmaster()

    def primary_url() -> str:
        leader = patroni.leader()
        assert leader is not None, patroni.logs()
        return leader.postgres.url_for(database)

    return Database(go_down, primary_url)


def chaos(
    cluster: Cluster, database: Database, proxy: Proxy, stop: threading.Event
) -> Counter[str]:
    """Kills, cuts and restarts things until stopped; counts what it did."""
    rng = random.Random(20261127)
    done: Counter[str] = Counter()
    deadline = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.5, 3.0))
        act = rng.choice(["server", "server", "follower", "cut", "cut", "database"])
        if act == "database" and done["database"] >= 2:
            act = "cut"
        if act == "server":
            cluster.kill_server(rng)
            cluster.start_server()
        elif act == "follower":
            victim = cluster.followers.pop(rng.randrange(len(cluster.followers)))
            victim.kill()
            victim.close()
            cluster.followers.append(follow(cluster.tmp_path, cluster.env))
        elif act == "cut":
            proxy.cut_all()
        else:
            database.go_down(rng)
        done[act] += 1
    stop.set()
    return done


def wallet_events(url: str) -> Counter[str]:
    """How many wallet events each correlation id caused."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'correlation_id', count(*)"
            " FROM pocket_events WHERE topic LIKE %s GROUP BY 1",
            ["%:Wallet.%"],
        ).fetchall()
    return Counter({row[0]: int(row[1]) for row in rows})


def sign_up_and_fund(cluster: Cluster) -> Decimal:
    """Signs the users up on the first server and gives each 200; returns the sum."""
    rng = random.Random(1)
    _, api = cluster.servers[0]
    for n in range(1, USERS + 1):
        status, body = api.post("/users", {"name": f"user {n}"})
        assert (status, body["user"]["id"]) == (201, n)
        cluster.tokens[n] = body["token"]
        status, _ = cluster.api(rng, n).post(
            f"/users/{n}/add_money", {"amount": "200", "source": "seed"}
        )
        assert status == 200
    return Decimal(200 * USERS)


def check_each_applied_once(requests: list[Request], applied: Counter[str]) -> Decimal:
    """Each request applied at most once, and exactly as often as its answer
    says; returns the money the applied ones moved in and out."""
    moved = Decimal(0)
    for request in requests:
        times = applied[request.request_id] / request.events()
        assert times in (0, 1), request  # never twice, whatever happened
        if request.outcome == "acknowledged":
            assert times == 1, request
        elif request.outcome == "refused":
            assert times == 0, request
        if times and request.op != "transfers":
            sign = 1 if request.op == "add_money" else -1
            moved += sign * Decimal(request.body["amount"])
    return moved


def test_every_acknowledged_request_is_applied_once_through_chaos(
    tmp_path: Path, throwaway_postgres: PostgresServer
) -> None:
    direct = throwaway_postgres.create_database("pocket_chaos")
    proxy = Proxy("127.0.0.1", throwaway_postgres.port)
    database = restarted(throwaway_postgres, direct)
    run_chaos(tmp_path, proxy, proxy.url("pocket_chaos"), database)


def test_every_acknowledged_request_is_applied_once_through_patroni_failovers(
    tmp_path: Path, patroni: PatroniCluster
) -> None:
    first, _ = patroni.wait_until_healthy()
    first.postgres.create_database("pocket_chaos")
    proxy = Proxy("127.0.0.1", patroni.haproxy.port)
    done = run_chaos(
        tmp_path, proxy, proxy.url("pocket_chaos"), failed_over(patroni, "pocket_chaos")
    )
    # It did fail over, as often as the database went down: each promotion
    # starts a new timeline.
    leader = patroni.leader()
    assert leader is not None
    status = leader.status() or {}
    assert status.get("timeline") == 1 + done["database"], (done, status)


def run_chaos(
    tmp_path: Path, proxy: Proxy, url: str, database: Database
) -> Counter[str]:
    """Pocket's processes on a URL through the proxy, clients under chaos, and the
    checks afterwards on the database's primary; returns what chaos did."""
    # Pocket's processes reach the database through the proxy, whose links are
    # cut now and then; the test's own checks go direct.
    cluster = Cluster(tmp_path, {"POCKET_DATABASE_URL": url})
    try:
        for _ in range(3):
            cluster.start_server()
        for _ in range(2):
            cluster.followers.append(follow(tmp_path, cluster.env))
        funded = sign_up_and_fund(cluster)

        stop = threading.Event()
        sent: list[list[Request]] = [[] for _ in range(CLIENTS)]
        clients = [
            threading.Thread(target=client, args=(cluster, seed, stop, sent[seed]))
            for seed in range(CLIENTS)
        ]
        for thread in clients:
            thread.start()
        done = chaos(cluster, database, proxy, stop)
        for thread in clients:
            thread.join(60)
        requests = [request for batch in sent for request in batch]

        # Keyed requests still undecided are resent now, on a calm cluster.
        calm = random.Random(2)
        deadline = time.monotonic() + 60
        for request in requests:
            while request.key and request.outcome == "unknown":
                assert time.monotonic() < deadline, "the cluster did not calm down"
                request.outcome = send(cluster, calm, request)
                time.sleep(0 if request.outcome != "unknown" else 0.2)

        direct = database.primary_url()
        settings = Settings.from_url(direct)
        outcomes = Counter(
            (r.key is not None, r.outcome) for r in requests if r.outcome != "unsent"
        )
        moved = check_each_applied_once(requests, wallet_events(direct))
        balances = {}
        for user in range(1, USERS + 1):
            status, body = cluster.api(calm, user).get(f"/users/{user}")
            assert status == 200
            balances[user] = Decimal(body["wallet"]["balance"])
        assert all(balance >= 0 for balance in balances.values()), balances
        assert sum(balances.values()) == funded + moved

        try:
            wait_for(
                lambda: records(settings) == replay(settings),
                timeout=60,
                what="the followers to catch up",
            )
        except AssertionError:
            for follower in cluster.followers:  # what they were doing, for the log
                print(follower.output[-3000:])
            raise
        checked = run_pocket(tmp_path, {"POCKET_DATABASE_URL": direct}, "verify")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # The run did what it says: chaos of every kind, under real traffic.
        assert {"server", "cut", "database"} <= set(done), done
        assert outcomes[(True, "acknowledged")] > 100, outcomes
        assert outcomes[(False, "acknowledged")] > 20, outcomes
        print(f"\n[chaos] {dict(done)}; outcomes (keyed, outcome): {dict(outcomes)}")
        return done
    finally:
        cluster.close()
        proxy.close()
