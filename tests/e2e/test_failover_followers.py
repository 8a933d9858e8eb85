"""Failover, as the followers see it: two `pocket follow` processes (one active,
one standing by) and an API process on a multi-host URL while the primary dies
and its synchronous standby is promoted.

A follower becomes active on the new primary (exactly one), the projection
catches up, `pocket verify` passes and every acknowledged request is there
exactly once; then the active follower is killed too, and the other takes over.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import PocketProcess, follow, wait_for
from tests.e2e.test_failover import (
    USERS,
    Cluster,
    Request,
    Traffic,
    balances_now,
    expected_balances,
    pocket_database,
    send_until_decided,
    version_gaps,
    wallet_events,
)
from tests.pgserver import ReplicatedPair, failover

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(
    tmp_path: Path, replicated_postgres: ReplicatedPair
) -> Iterator[tuple[Cluster, str]]:
    """One API process and two followers on the pair's multi-host URL, users
    signed up and funded; and the URL of the database on the standby alone."""
    url, new_primary_url = pocket_database(replicated_postgres)
    pocket = Cluster(tmp_path, url)
    try:
        pocket.start(servers=1)
        pocket.followers.append(follow(tmp_path, pocket.env))
        pocket.sign_up_and_fund()
        yield pocket, new_primary_url
    finally:
        pocket.close()


def follower_status(cluster: Cluster) -> dict[str, Any] | None:
    """The live version's follower as `pocket status --json` reports it, or None
    while there is no primary to ask."""
    answer = cluster.pocket("status", "--json")
    if answer.returncode != 0:
        return None
    follower: dict[str, Any] = json.loads(answer.stdout)["projections"][0]["follower"]
    return follower


def active_and_standbys(cluster: Cluster) -> tuple[int | None, list[int]]:
    """The pid of the active follower (None: none), and the standbys' pids."""
    follower = follower_status(cluster)
    if follower is None or not follower["running"]:
        return None, []
    return follower["pid"], sorted(s["pid"] for s in follower["standbys"])


def one_active(cluster: Cluster, among: list[PocketProcess]) -> int | None:
    """The active follower's pid once exactly one of these is active and the
    others stand by (where `pocket status` sees them), else None."""
    pids = sorted(f.process.pid for f in among)
    active, standbys = active_and_standbys(cluster)
    if active is None or sorted([active, *standbys]) != pids:
        return None
    return active


def wait_for_one_active(
    cluster: Cluster, among: list[PocketProcess], timeout: float, what: str
) -> tuple[int, float]:
    """Waits until one of the followers is active and the others stand by;
    returns the active one's pid and when (monotonic) that was first seen."""
    found: list[int] = []

    def check() -> bool:
        active = one_active(cluster, among)
        if active is not None:
            found.append(active)
        return bool(found)

    wait_for(check, timeout=timeout, what=what)
    return found[0], time.monotonic()


def active_after(followers: list[PocketProcess], moment: float) -> float:
    """How long after a moment (time.time()) a follower first logged that it
    became active: from the logs, for `pocket status` takes a second or two."""
    stamps = [
        # Local time, as the log's asctime writes it.
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for follower in followers
        for line in follower.output.splitlines()
        if "Active: this follower applies wallet_records_v" in line
    ]
    return min(stamp for stamp in stamps if stamp > moment) - moment


def wait_for_no_lag(cluster: Cluster, timeout: float = 30) -> float:
    """Waits until the projection has applied the whole log; returns when."""
    wait_for(lambda: cluster.lag_events() == 0, timeout=timeout, what="no lag")
    return time.monotonic()


def assert_exactly_once(cluster: Cluster, url: str, requests: list[Request]) -> None:
    """Every acknowledged request's events once, every refused one's not at all;
    balances as the acknowledged requests make them; no version gap."""
    applied = wallet_events(url)
    for request in requests:
        times = applied[request.request_id] / request.events()
        assert times == (request.outcome == "acknowledged"), request
    assert balances_now(cluster) == expected_balances(requests)
    assert version_gaps(url) == {}


def test_a_follower_takes_over_on_the_new_primary_and_then_from_a_killed_one(
    replicated_postgres: ReplicatedPair, cluster: tuple[Cluster, str]
) -> None:
    primary, standby = replicated_postgres
    pocket, new_primary_url = cluster
    followers = pocket.followers
    first, _ = wait_for_one_active(
        pocket, followers, timeout=20, what="one active follower, one standby"
    )

    traffic = Traffic(pocket)
    traffic.start()
    traffic.wait_for_acknowledged(30)
    killed, killed_at = time.monotonic(), time.time()
    failover(primary, standby, "kill")
    promoted = time.monotonic()
    active, seen = wait_for_one_active(
        pocket, followers, timeout=30, what="one active follower on the new primary"
    )
    traffic.wait_for_acknowledged(traffic.acknowledged() + 20)
    requests = traffic.finish()
    no_lag = wait_for_no_lag(pocket)
    assert one_active(pocket, followers) == active
    print(
        f"\n[failover] promoted {promoted - killed:.2f}s after the kill began; "
        f"{'the same' if active == first else 'the standby'} follower active on "
        f"the new primary {active_after(followers, killed_at):.2f}s after the kill "
        f"(seen by pocket status after {seen - killed:.2f}s), lag 0 after "
        f"{no_lag - killed:.2f}s; {traffic.acknowledged()} requests acknowledged"
    )
    assert all(r.outcome in ("acknowledged", "refused") for r in requests)
    assert_exactly_once(pocket, new_primary_url, requests)
    checked = pocket.pocket("verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 mismatch(es)" in checked.stdout
    for follower in followers:
        assert "Traceback" not in follower.output, follower.output

    # The active follower dies: the other takes over, and applies what follows.
    (dead,) = [f for f in followers if f.process.pid == active]
    (alive,) = [f for f in followers if f is not dead]
    # Timed from just before the kill: the other follower, waiting for the lock,
    # may take it the moment the process is gone, before kill() returns.
    died, died_at = time.monotonic(), time.time()
    dead.kill()
    rng = random.Random(99)
    more = [
        Request(user, "add_money", {"amount": "2.00", "source": "after"})
        for user in range(1, USERS + 1)
    ]
    for request in more:
        send_until_decided(pocket, rng, request, time.monotonic() + 20)
        assert request.outcome == "acknowledged", request
    took_over, seen = wait_for_one_active(
        pocket, [alive], timeout=20, what="the other follower to take over"
    )
    assert took_over == alive.process.pid
    no_lag = wait_for_no_lag(pocket)
    print(
        f"[follower killed] the other active {active_after([alive], died_at):.2f}s "
        f"after (seen by pocket status after {seen - died:.2f}s), lag 0 after "
        f"{no_lag - died:.2f}s"
    )
    assert_exactly_once(pocket, new_primary_url, [*requests, *more])
    checked = pocket.pocket("verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
