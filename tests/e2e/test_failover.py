"""Failover: API processes and a follower on a multi-host URL while the primary
dies and its standby is promoted.

With a synchronous standby every acknowledged request is there exactly once on
the new primary, money is conserved, the API answers only 503s (or drops the
connection) until it writes again a few seconds later, and the follower catches
up. With an asynchronous one, what the standby had not received when the primary
died is lost, though it was acknowledged: the second test shows exactly what.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.processes import (
    Api,
    PocketProcess,
    follow,
    run_pocket,
    serve,
    wait_for,
)
from tests.pgserver import (
    STANDBY_NAME,
    CrashMode,
    PostgresServer,
    ReplicatedPair,
    failover,
    multi_host_url,
    wait_until_replayed,
)

pytestmark = pytest.mark.e2e
USERS = 4
CLIENTS = 4
FUNDS = Decimal(1000)
# How long a keyed request is resent, at most, before the test gives up on it.
RESEND_SECONDS = 45.0
# Within how long of the promotion the API must write again.
RECOVERY_SECONDS = 10.0


@dataclass
class Attempt:
    """One sending of a request: when, and the answer's status (None: no answer,
    the connection failed or was cut)."""

    started: float
    ended: float
    status: int | None
    code: str | None = None  # the error's code, for a refusal


@dataclass
class Request:
    """One keyed money command, sent until it is decided."""

    user: int
    op: str  # add_money or transfers
    body: dict[str, Any]
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    outcome: str = "unsent"  # acknowledged, refused, unknown
    attempts: list[Attempt] = field(default_factory=list)

    def events(self) -> int:
        """How many wallet events the command records when applied."""
        return 2 if self.op == "transfers" else 1


class Cluster:
    """The API processes and the follower, all on one multi-host URL."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.env = {"POCKET_DATABASE_URL": url}
        self.servers: list[tuple[PocketProcess, Api]] = []
        self.followers: list[PocketProcess] = []
        self.tokens: dict[int, str] = {}
        self.stopping = threading.Event()  # set: the clients stop

    def start(self, servers: int = 2) -> None:
        """The API processes (without followers of their own) and one follower."""
        for _ in range(servers):
            self.servers.append(serve(self.tmp_path, self.env, "--no-follower"))
        self.followers.append(follow(self.tmp_path, self.env))

    def api(self, rng: random.Random, user: int, server: int | None = None) -> Api:
        """One of the API processes (at random, unless told which), as a user."""
        _, api = rng.choice(self.servers) if server is None else self.servers[server]
        return api.as_user(self.tokens[user])

    def sign_up_and_fund(self) -> None:
        """USERS users, each with FUNDS in their wallet."""
        _, api = self.servers[0]
        for n in range(1, USERS + 1):
            status, body = api.post("/users", {"name": f"user {n}"})
            assert (status, body["user"]["id"]) == (201, n)
            self.tokens[n] = body["token"]
            status, _ = api.as_user(body["token"]).post(
                f"/users/{n}/add_money", {"amount": str(FUNDS), "source": "seed"}
            )
            assert status == 200

    def pocket(self, *args: str) -> Any:
        """A `pocket` command on the cluster's URL, to completion."""
        return run_pocket(self.tmp_path, self.env, *args)

    def status(self) -> dict[str, Any]:
        """What `pocket status --json` reports."""
        answer = self.pocket("status", "--json")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        report: dict[str, Any] = json.loads(answer.stdout)
        return report

    def lag_events(self) -> int:
        """The follower's lag as `pocket status --json` reports it."""
        lag: int = self.status()["projections"][0]["lag_events"]
        return lag

    def close(self) -> None:
        self.stopping.set()  # the clients, if a test failed before it stopped them
        for process, _ in self.servers:
            process.close()
        for follower in self.followers:
            follower.close()


def send(api: Api, request: Request) -> Attempt:
    """Sends a request once and records the attempt and its outcome."""
    headers = {"X-Request-Id": request.request_id, "Idempotency-Key": request.key}
    started = time.monotonic()
    try:
        status, body = api.post(
            f"/users/{request.user}/{request.op}", request.body, headers
        )
    except (OSError, ValueError, http.client.HTTPException):
        status, body = None, {}
    attempt = Attempt(started, time.monotonic(), status)
    if status is not None and status >= 400:
        attempt.code = body.get("error", {}).get("code")
    request.attempts.append(attempt)
    if status in (200, 201):
        request.outcome = "acknowledged"
    elif status == 409 and attempt.code == "insufficient_funds":
        request.outcome = "refused"
    else:
        # 503, no answer, or 409 while another attempt runs: resend it.
        request.outcome = "unknown"
    return attempt


def send_until_decided(
    cluster: Cluster,
    rng: random.Random,
    request: Request,
    deadline: float,
    server: int | None = None,
) -> None:
    """Sends a request, and again with the same key while its outcome is not
    known, until it is decided or the deadline passes; to any of the API
    processes, or to the one told."""
    send(cluster.api(rng, request.user, server), request)
    while request.outcome == "unknown" and time.monotonic() < deadline:
        time.sleep(0.1)
        send(cluster.api(rng, request.user, server), request)


def add_to_each_user(
    cluster: Cluster, rng: random.Random, amount: str, source: str, within: float
) -> list[Request]:
    """One keyed add_money for each user, on the first API process, each sent
    until acknowledged (within seconds at most)."""
    requests = [
        Request(user, "add_money", {"amount": amount, "source": source})
        for user in range(1, USERS + 1)
    ]
    for request in requests:
        deadline = time.monotonic() + within
        send_until_decided(cluster, rng, request, deadline, server=0)
        assert request.outcome == "acknowledged", request
    return requests


def new_request(rng: random.Random) -> Request:
    """An add_money or a transfer of a few units between two of the users."""
    user = rng.randint(1, USERS)
    amount = f"{rng.randint(1, 500) / 100:.2f}"
    if rng.random() < 0.5:
        return Request(user, "add_money", {"amount": amount, "source": "failover"})
    other = rng.choice([u for u in range(1, USERS + 1) if u != user])
    return Request(user, "transfers", {"to_user_id": other, "amount": amount})


def client(
    cluster: Cluster, seed: int, stop: threading.Event, sent: list[Request]
) -> None:
    """Sends requests one after another until stopped, each until decided."""
    rng = random.Random(seed)
    while not stop.is_set():
        request = new_request(rng)
        sent.append(request)
        send_until_decided(cluster, rng, request, time.monotonic() + RESEND_SECONDS)


@dataclass
class Traffic:
    """Client threads sending keyed money commands to the cluster."""

    cluster: Cluster
    sent: list[list[Request]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int = CLIENTS) -> None:
        for seed in range(clients):
            batch: list[Request] = []
            self.sent.append(batch)
            # Daemons, so that a failed test cannot leave pytest waiting.
            thread = threading.Thread(
                target=client,
                args=(self.cluster, seed, self.cluster.stopping, batch),
                daemon=True,
            )
            self.threads.append(thread)
            thread.start()

    def finish(self) -> list[Request]:
        """Stops the clients (each after deciding its request in hand)."""
        self.cluster.stopping.set()
        for thread in self.threads:
            thread.join(RESEND_SECONDS + 30)
            assert not thread.is_alive(), "a client did not finish"
        return self.requests

    @property
    def requests(self) -> list[Request]:
        return [request for batch in self.sent for request in list(batch)]

    def acknowledged(self) -> int:
        return sum(r.outcome == "acknowledged" for r in self.requests)

    def wait_for_acknowledged(self, count: int, timeout: float = 30) -> None:
        wait_for(
            lambda: self.acknowledged() >= count,
            timeout=timeout,
            what=f"{count} acknowledged requests",
        )


def wallet_events(url: str) -> Counter[str]:
    """How many wallet events each request id (the events' correlation id) caused."""
    with psycopg.connect(url, target_session_attrs="any") as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb ->> 'correlation_id', count(*)"
            " FROM pocket_events WHERE topic LIKE %s GROUP BY 1",
            ["%:Wallet.%"],
        ).fetchall()
    return Counter({row[0]: int(row[1]) for row in rows})


def version_gaps(url: str) -> dict[str, list[int]]:
    """The aggregates whose versions are not 1, 2, 3...: each one's versions."""
    with psycopg.connect(url, target_session_attrs="any") as conn:
        rows = conn.execute(
            "SELECT originator_id::text, array_agg(originator_version "
            "ORDER BY originator_version) FROM pocket_events GROUP BY 1"
        ).fetchall()
    return {
        aggregate: versions
        for aggregate, versions in rows
        if versions != list(range(1, len(versions) + 1))
    }


def expected_balances(requests: list[Request]) -> dict[int, Decimal]:
    """Each user's balance if exactly the acknowledged requests were applied."""
    balances = dict.fromkeys(range(1, USERS + 1), FUNDS)
    for request in requests:
        if request.outcome != "acknowledged":
            continue
        amount = Decimal(request.body["amount"])
        balances[request.user] += amount if request.op == "add_money" else -amount
        if request.op == "transfers":
            balances[request.body["to_user_id"]] += amount
    return balances


def balances_now(cluster: Cluster) -> dict[int, Decimal]:
    """Each user's balance as the API answers it."""
    rng = random.Random(0)
    balances = {}
    for user in range(1, USERS + 1):
        status, body = cluster.api(rng, user).get(f"/users/{user}")
        assert status == 200, body
        balances[user] = Decimal(body["wallet"]["balance"])
    return balances


def first_write_after(requests: list[Request], moment: float) -> float | None:
    """When the first attempt answered 2xx after a moment (monotonic), if any."""
    ends = [
        attempt.ended
        for request in requests
        for attempt in request.attempts
        if attempt.status in (200, 201) and attempt.ended > moment
    ]
    return min(ends, default=None)


@pytest.fixture
def started_cluster(
    tmp_path: Path,
) -> Iterator[Callable[[ReplicatedPair], tuple[Cluster, str]]]:
    """Starts Pocket's processes on a pair (its database made by pocket_database),
    users signed up and funded; closed afterwards whatever happened. The
    callable returns the cluster and the URL of the database on the standby."""
    made: list[Cluster] = []

    def start(pair: ReplicatedPair) -> tuple[Cluster, str]:
        url, new_primary_url = pocket_database(pair)
        pocket = Cluster(tmp_path, url)
        # The reads that may lag: on the standby, or whichever server is left.
        pocket.env["POCKET_READ_URL"] = multi_host_url(
            pair.standby, pair.primary, database="pocket", attrs="prefer-standby"
        )
        made.append(pocket)
        pocket.start()
        pocket.sign_up_and_fund()
        return pocket, new_primary_url

    yield start
    for each in made:
        each.close()


def crash_and_promote(
    primary: PostgresServer, standby: PostgresServer, how: CrashMode, after: float
) -> tuple[float, float]:
    """tests.pgserver.failover, the standby promoted `after` seconds after the
    primary died (a failover manager's time to notice and decide); returns when
    (monotonic) the primary was dead, and when the standby was promoted."""
    if how == "kill":
        primary.kill()
    else:
        primary.stop("immediate")
    died = time.monotonic()
    primary.fenced = f"it was failed over to the server on port {standby.port}"
    time.sleep(after)
    standby.promote()
    return died, time.monotonic()


def pocket_database(pair: ReplicatedPair) -> tuple[str, str]:
    """A database for Pocket on the pair: the multi-host URL, the standby named
    first (so that finding the primary is the URL's doing, not the order), and
    the URL of the database on the standby alone (the primary after failover)."""
    primary, standby = pair
    primary.create_database("pocket")
    url = multi_host_url(standby, primary, database="pocket")
    return url, standby.url_for("pocket")


@pytest.mark.parametrize(
    ("how", "promote_after"),
    [
        ("kill", 0.0),
        ("immediate", 0.0),
        # Longer than a request waits for a connection (POSTGRES_CONNECT_TIMEOUT,
        # 3 s): requests in flight answer 503, and the gate answers the rest at
        # once until the new primary takes writes.
        ("kill", 5.0),
    ],
)
def test_a_synchronous_failover_keeps_every_acknowledged_request(
    replicated_postgres: ReplicatedPair,
    started_cluster: Callable[[ReplicatedPair], tuple[Cluster, str]],
    how: CrashMode,
    promote_after: float,
) -> None:
    primary, standby = replicated_postgres
    pocket, new_primary_url = started_cluster(replicated_postgres)
    # Which server is the primary, and its standby with its lag.
    servers = pocket.status()["servers"]
    assert servers["primary"]["port"] == primary.port
    ((name, state, sync, lag),) = [
        (s["name"], s["state"], s["sync_state"], s["lag_bytes"])
        for s in servers["standbys"]
    ]
    assert (name, state, sync) == (STANDBY_NAME, "streaming", "sync")
    assert isinstance(lag, int)
    reads = pocket.status()["reads"]
    assert (reads["served_by"], reads["standby"]) == ("read server", True), reads
    assert reads["server"] == f"127.0.0.1:{standby.port}"

    traffic = Traffic(pocket)
    traffic.start()
    traffic.wait_for_acknowledged(40)
    killed = time.monotonic()
    died, promoted = crash_and_promote(primary, standby, how, promote_after)
    wait_for(
        lambda: first_write_after(traffic.requests, promoted) is not None,
        timeout=RECOVERY_SECONDS,
        what="a write on the new primary",
    )
    time.sleep(2)  # traffic on the new primary for a while
    requests = traffic.finish()

    recovered = first_write_after(requests, promoted)
    assert recovered is not None
    print(
        f"\n[{how}, promoted {promote_after:g}s after] the primary was dead "
        f"{died - killed:.2f}s after the kill began; first acknowledged write "
        f"{recovered - died:.2f}s after its death, {recovered - promoted:.2f}s "
        "after the promotion"
    )
    # No error but 503s or dropped connections while there was no primary, and
    # never a 500 at any time; nothing sent after the primary died acknowledged
    # before the promotion.
    attempts = [a for r in requests for a in r.attempts]
    statuses = Counter(a.status for a in attempts)
    between = Counter(
        (a.status, a.code) for a in attempts if killed < a.ended < recovered
    )
    assert not [
        a
        for a in attempts
        if a.status in (200, 201) and died < a.started and a.ended < promoted
    ]
    spanning = [a for a in attempts if a.started < killed < a.ended]
    resent = sum(len(r.attempts) > 1 for r in requests)
    print(
        f"[{how}] answers: {dict(statuses)}; between: {dict(between)}; "
        f"{len(spanning)} in flight at the kill, the longest answered after "
        f"{max((a.ended - a.started for a in spanning), default=0):.2f}s; "
        f"{resent} requests resent"
    )
    assert set(statuses) <= {200, 201, 409, 503, None}, statuses
    assert {status for status, _ in between} <= {200, 201, 503, None}, between
    if promote_after:
        assert between[503, "service_unavailable"] > 0, between
    assert all(r.outcome in ("acknowledged", "refused") for r in requests), Counter(
        r.outcome for r in requests
    )

    # Every acknowledged request exactly once, every refused one not at all.
    applied = wallet_events(new_primary_url)
    for request in requests:
        times = applied[request.request_id] / request.events()
        assert times == (request.outcome == "acknowledged"), request
    assert balances_now(pocket) == expected_balances(requests)
    assert version_gaps(new_primary_url) == {}

    wait_for(lambda: pocket.lag_events() == 0, timeout=30, what="the follower")
    servers = pocket.status()["servers"]
    assert (servers["primary"]["port"], servers["standbys"]) == (standby.port, [])
    checked = pocket.pocket("verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The read URL's standby is the primary now: the reads follow it there.
    assert f"on the read server at 127.0.0.1:{standby.port}: 0 mismatch(es)" in (
        checked.stdout
    )
    assert traffic.acknowledged() > 60


def test_an_asynchronous_failover_loses_what_the_standby_had_not_received(
    tmp_path: Path,
    async_replicated_postgres: ReplicatedPair,
    started_cluster: Callable[[ReplicatedPair], tuple[Cluster, str]],
) -> None:
    primary, standby = async_replicated_postgres
    pocket, new_primary_url = started_cluster(async_replicated_postgres)
    traffic = Traffic(pocket)
    traffic.start()
    traffic.wait_for_acknowledged(30)
    kept = traffic.finish()
    wait_until_replayed(primary, standby)
    wait_for(lambda: pocket.lag_events() == 0, timeout=30, what="the follower")

    # The standby falls behind (stopped here, to make it certain): the primary
    # acknowledges writes it never receives.
    standby.stop()
    rng = random.Random(7)
    lost = add_to_each_user(pocket, rng, "1.00", "lost", within=10)
    primary.kill()
    standby.start()
    failover(primary, standby)

    # Lost: exactly the requests acknowledged after the standby fell behind.
    applied = wallet_events(new_primary_url)
    for request in kept:
        times = applied[request.request_id] / request.events()
        assert times == (request.outcome == "acknowledged"), request
    assert [applied[request.request_id] for request in lost] == [0] * USERS
    assert version_gaps(new_primary_url) == {}  # a clean loss, so far

    # The API process that wrote them still holds each wallet in its cache, at
    # the lost version. Its next write on each would go on top of that version;
    # the insert refuses a version that does not follow a stored one, so the
    # batch is decided again from the wallet as stored: no gap.
    afters = add_to_each_user(pocket, rng, "5.00", "after", within=20)
    gaps = version_gaps(new_primary_url)
    assert gaps == {}
    applied = wallet_events(new_primary_url)
    assert [applied[request.request_id] for request in afters] == [1] * USERS
    # The balances recorded add up: pocket verify passes on the new primary...
    wait_for(lambda: pocket.lag_events() == 0, timeout=30, what="the follower")
    checked = pocket.pocket("verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # ...and a new API process loads every wallet, the lost money not in it.
    pocket.servers.append(serve(tmp_path, pocket.env, "--no-follower"))
    _, fresh = pocket.servers[-1]
    _, cached = pocket.servers[0]
    for user in range(1, USERS + 1):
        status, body = fresh.as_user(pocket.tokens[user]).get(f"/users/{user}")
        assert status == 200, body
        _, before = cached.as_user(pocket.tokens[user]).get(f"/users/{user}")
        assert body["wallet"] == before["wallet"]
    print(
        f"\n[async] acknowledged and lost: {len(lost)} of "
        f"{len(lost) + traffic.acknowledged()} requests; no version gap after"
    )
