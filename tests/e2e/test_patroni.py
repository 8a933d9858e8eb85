"""Failover under a real HA manager: two `pocket serve --no-follower` and a
`pocket follow` on a Patroni cluster (etcd, two nodes in synchronous mode,
HAProxy routing to the leader: tests.patroni), clients sending keyed add_money
and transfers across the failure.

The failures, and the route each case takes to the database:
- kill -9 of the leader's postmaster, on libpq's multi-host URL: the old
  primary is gone, so the URL alone finds the new one;
- kill -9 of the leader's Patroni, on both routes, for that is where they part:
  the old primary still takes connections and says it is read-write. HAProxy
  stops sending to it as soon as its Patroni stops answering the health check;
  the multi-host URL cannot tell it from the real primary, so the test then
  fences it, as Patroni's watchdog or an operator would;
- the leader cut off from etcd and from its standby while clients still reach
  it, on both routes: directly, and through HAProxy whose health checks still
  reach its Patroni too. Its commits wait for the standby it lost until its
  Patroni, without etcd, demotes it.

After each: every acknowledged request is on the new leader exactly once, and
every one that was refused not at all; balances equal what the acknowledged
requests make them, none below zero; no gap in any wallet's versions; the
follower catches up and `pocket verify` passes; every attempt was answered in
bounded time; the time from the failure to the first acknowledged write is
printed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.processes import Api, wait_for
from tests.e2e.test_failover import (
    Cluster,
    Request,
    Traffic,
    balances_now,
    expected_balances,
    send_until_decided,
    version_gaps,
    wallet_events,
)
from tests.patroni import PatroniCluster, PatroniNode

pytestmark = pytest.mark.e2e

# Pocket's bounds on one request: 3 s to get a connection, 5 s to settle a write
# whose link was lost, and the planned POCKET_COMMIT_TIMEOUT_SECONDS (5 s) on a
# commit's wait for the synchronous standby. A request answered later than this
# (or never) hung on the failure.
ANSWER_SECONDS = 20.0
# How long after the failure, beyond Patroni's ttl, writes must resume: the
# leader key expires after ttl, then Patroni's loop, HAProxy's checks and
# Pocket's gate each take a second or so.
RESUME_MARGIN_SECONDS = 12.0
# How long the API's /health and a read may take to answer meanwhile.
PROBE_SECONDS = 10.0


@dataclass
class Prober:
    """Asks an API process for /health and for a wallet, over and over, and
    keeps the slowest answer of each (None: no answer)."""

    api: Api
    user: int
    slowest: dict[str, float] = field(default_factory=dict)
    failed: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for what, path in (("health", "/health"), ("read", f"/users/{self.user}")):
                started = time.monotonic()
                try:
                    status, _ = self.api.get(path)
                except OSError:
                    status = None
                took = time.monotonic() - started
                self.slowest[what] = max(self.slowest.get(what, 0.0), took)
                if status != 200:
                    self.failed[f"{what} {status}"] += 1
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)


@pytest.fixture
def pocket_on(tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    """Starts Pocket's processes on a URL (two API processes, a follower), users
    signed up and funded; all closed afterwards, whatever happened."""
    made: list[Cluster] = []

    def start(url: str) -> Cluster:
        pocket = Cluster(tmp_path, url)
        made.append(pocket)
        pocket.start()
        pocket.sign_up_and_fund()
        return pocket

    yield start
    for each in made:
        each.close()


def route(patroni: PatroniCluster, topology: str) -> str:
    """Pocket's URL for its database on the cluster: through HAProxy, or
    libpq's multi-host URL naming node1 (the first leader) then node2."""
    (leader, _) = patroni.wait_until_healthy()
    leader.postgres.create_database("pocket")
    if topology == "haproxy":
        return patroni.haproxy.url_for("pocket")
    return patroni.multi_host_url("pocket")


def acknowledged_at(requests: list[Request]) -> list[float]:
    """When each acknowledged attempt was answered, in order."""
    return sorted(
        attempt.ended
        for request in requests
        for attempt in request.attempts
        if attempt.status in (200, 201)
    )


def resume_after(requests: list[Request], moment: float) -> float | None:
    """When writes were acknowledged again after a moment: the first
    acknowledgement that ends the longest pause in them from then on (with
    clients writing without pause, the pause is the outage)."""
    times = [moment, *(t for t in acknowledged_at(requests) if t > moment)]
    if len(times) == 1:
        return None
    pauses = [(later - earlier, later) for earlier, later in itertools.pairwise(times)]
    return max(pauses)[1]


def report(case: str, requests: list[Request], failed: float, **moments: float) -> None:
    """Prints what the clients saw: answers by status, the slowest attempt, and
    the moments given (seconds after the failure)."""
    attempts = [a for r in requests for a in r.attempts]
    after = Counter((a.status, a.code) for a in attempts if a.ended > failed)
    slowest = max((a.ended - a.started for a in attempts), default=0.0)
    when = ", ".join(f"{name} {at - failed:.2f}s" for name, at in moments.items())
    print(
        f"\n[{case}] after the failure: {when}; answers since: {dict(after)}; "
        f"slowest attempt {slowest:.2f}s; "
        f"{sum(r.outcome == 'acknowledged' for r in requests)} acknowledged"
    )


def decide_the_rest(pocket: Cluster, requests: list[Request]) -> None:
    """Resends, on the recovered cluster, every request whose outcome the
    clients never learnt, until it is decided."""
    rng = random.Random(5)
    for request in requests:
        if request.outcome == "unknown":
            send_until_decided(pocket, rng, request, time.monotonic() + 30)
    undecided = [r for r in requests if r.outcome not in ("acknowledged", "refused")]
    assert not undecided, undecided


def assert_money_safe(
    pocket: Cluster, leader: PatroniNode, requests: list[Request]
) -> None:
    """Every acknowledged request on the leader exactly once, every refused one
    not at all; balances as the acknowledged requests make them, none below
    zero; no version gap; the follower caught up and `pocket verify` passes."""
    url = leader.postgres.url_for("pocket")
    applied = wallet_events(url)
    for request in requests:
        times = applied[request.request_id] / request.events()
        assert times == (request.outcome == "acknowledged"), request
    balances = balances_now(pocket)
    assert balances == expected_balances(requests)
    assert min(balances.values()) >= Decimal(0), balances
    assert version_gaps(url) == {}
    wait_for(lambda: pocket.lag_events() == 0, timeout=60, what="the follower")
    checked = pocket.pocket("verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 mismatch(es)" in checked.stdout


def assert_answered_in_time(requests: list[Request]) -> None:
    """No attempt waited longer than Pocket's bounds allow."""
    slow = [
        (round(a.ended - a.started, 1), a.status, a.code, r.op)
        for r in requests
        for a in r.attempts
        if a.ended - a.started > ANSWER_SECONDS
    ]
    assert not slow, (
        f"{len(slow)} attempts answered after {ANSWER_SECONDS}s: {slow[:10]}"
    )


@dataclass
class Run:
    """Pocket under traffic on a Patroni cluster, through one failure."""

    patroni: PatroniCluster
    pocket: Cluster
    traffic: Traffic
    prober: Prober
    leader: PatroniNode

    @classmethod
    def start(cls, patroni: PatroniCluster, pocket: Cluster) -> Run:
        leader, _ = patroni.wait_until_healthy()
        _, api = pocket.servers[1]
        prober = Prober(api.as_user(pocket.tokens[1]), 1)
        traffic = Traffic(pocket)
        traffic.start()
        prober.start()
        traffic.wait_for_acknowledged(40)
        return cls(patroni, pocket, traffic, prober, leader)

    def wait_for_writes_after(self, moment: float, timeout: float, what: str) -> float:
        """Waits for an acknowledged write answered after a moment; returns when."""
        wait_for(
            lambda: any(t > moment for t in acknowledged_at(self.traffic.requests)),
            timeout=timeout,
            what=f"{what}\n{self.patroni.logs()}",
        )
        return min(t for t in acknowledged_at(self.traffic.requests) if t > moment)

    def finish(self) -> list[Request]:
        """Traffic on for two seconds more, then stopped; what it sent."""
        time.sleep(2)
        requests = self.traffic.finish()
        self.prober.finish()
        return requests

    def check(self, requests: list[Request]) -> None:
        """The money checks on the leader there is now, and bounded answers."""
        leader = self.patroni.leader()
        assert leader is not None, self.patroni.logs()
        slowest, failed = self.prober.slowest, dict(self.prober.failed)
        print(f"[probes] slowest: {slowest}; not 200: {failed}")
        decide_the_rest(self.pocket, requests)
        assert_money_safe(self.pocket, leader, requests)
        assert_answered_in_time(requests)
        assert max(self.prober.slowest.values()) <= PROBE_SECONDS, self.prober.slowest


def through_failure(
    run: Run, case: str, fail: Callable[[], None], *, fence: bool = False
) -> None:
    """Fails the leader under traffic, waits for the new leader and for writes
    after it (with fence, first kills the old primary's postmaster, long after
    the promotion), prints the times, and checks the outcome."""
    failed = time.monotonic()
    fail()
    new = run.patroni.wait_for_new_leader(run.leader)
    moments = {"promotion_seen": time.monotonic()}
    bound = run.patroni.timing.ttl + RESUME_MARGIN_SECONDS
    if fence:
        time.sleep(ANSWER_SECONDS + 5)
        moments["fenced"] = time.monotonic()
        run.leader.kill_postmaster()
        run.wait_for_writes_after(
            moments["fenced"], RESUME_MARGIN_SECONDS, "a write once fenced"
        )
    else:
        run.wait_for_writes_after(
            moments["promotion_seen"], bound, "a write on the new leader"
        )
    requests = run.finish()
    resumed = resume_after(requests, failed)
    assert resumed is not None
    report(case, requests, failed, **moments, first_acknowledged_write=resumed)
    assert new is not run.leader
    if not fence:
        assert resumed - failed <= bound
    run.check(requests)


def test_a_killed_postmaster_fails_over_to_the_synchronous_standby(
    patroni: PatroniCluster, pocket_on: Callable[[str], Cluster]
) -> None:
    run = Run.start(patroni, pocket_on(route(patroni, "multi-host")))
    through_failure(run, "kill -9 postmaster, multi-host", run.leader.kill_postmaster)


@pytest.mark.parametrize("topology", ["haproxy", "multi-host"])
def test_a_killed_patroni_fails_over_and_its_primary_acknowledges_nothing_more(
    patroni: PatroniCluster, pocket_on: Callable[[str], Cluster], topology: str
) -> None:
    run = Run.start(patroni, pocket_on(route(patroni, topology)))
    # The old primary lives on, read-write, with no Patroni to demote it: its
    # commits wait for a synchronous standby that is promoted in its place.
    # HAProxy's check fails at once. The multi-host URL still finds it: no write
    # may be acknowledged there (the checks find any that was) and every attempt
    # must still be answered; then it is fenced, as Patroni's watchdog or an
    # operator would, and the URL finds the new primary.
    through_failure(
        run,
        f"kill -9 Patroni, {topology}",
        run.leader.kill_patroni,
        fence=topology == "multi-host",
    )


@pytest.mark.parametrize("topology", ["haproxy", "multi-host"])
def test_a_leader_cut_off_from_etcd_and_its_standby_steps_down(
    patroni: PatroniCluster, pocket_on: Callable[[str], Cluster], topology: str
) -> None:
    run = Run.start(patroni, pocket_on(route(patroni, topology)))
    through_failure(run, f"leader cut off, {topology}", run.leader.cut_off)
