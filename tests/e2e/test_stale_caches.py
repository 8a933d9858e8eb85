"""A wallet decided from a process's cache never pays out money the database
lost: two real `pocket serve` processes on a pair's multi-host URL, a failover
that loses an event one of them has cached, and another process writing a
different event of the same number.

The process with the stale cache then decides a draw on money that is not
there. The insert refuses it (its predecessor is not the event it was decided
on), the wallet is read again as the new primary has it, and the draw is
refused for want of funds: the history never goes below zero, and `pocket
verify` has nothing to catch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.e2e.processes import Api, PocketProcess, serve
from tests.pgserver import (
    PostgresServer,
    ReplicatedPair,
    fail_over_to_a_stopped_standby,
    multi_host_url,
    wait_until_replayed,
)

pytestmark = pytest.mark.e2e
DATABASE = "pocket"
RESEND_SECONDS = 30.0


@dataclass
class Processes:
    """Two API processes, A and B, and Ann's wallet, as each of them sees it."""

    a: Api
    b: Api
    user_id: int
    servers: list[PocketProcess]


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[Any]:
    """Starts A and B on a pair's multi-host URL; Ann with 10.00 (version 2)."""
    started: list[PocketProcess] = []

    def start(pair: ReplicatedPair, **extra: str) -> Processes:
        pair.primary.create_database(DATABASE)
        url = multi_host_url(pair.primary, pair.standby, database=DATABASE)
        env = {"POCKET_DATABASE_URL": url, **extra}
        (a_server, a), (b_server, b) = (
            serve(tmp_path, env, "--no-follower") for _ in range(2)
        )
        started.extend([a_server, b_server])
        status, body = a.post("/users", {"name": "Ann"})
        assert status == 201, body
        user_id, token = body["user"]["id"], body["token"]
        a, b = a.as_user(token), b.as_user(token)
        assert add(a, user_id, "10") == (200, "10.00")
        return Processes(a, b, user_id, started)

    yield start
    for server in started:
        server.close()


def send(
    api: Api, user_id: int, op: str, body: dict[str, Any], key: str | None = None
) -> tuple[int, str]:
    """Sends a keyed command until it is decided (answered other than 503 or
    not at all, as during a failover); its status and the balance it left."""
    key = key or uuid.uuid4().hex
    deadline = time.monotonic() + RESEND_SECONDS
    while True:
        try:
            status, answer, _ = api.exchange(
                "POST", f"/users/{user_id}/{op}", body, {"Idempotency-Key": key}
            )
        except OSError:
            status, answer = 0, {}
        if status not in (0, 503) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    wallet = answer.get("wallet", {})
    return status, wallet.get("balance", answer.get("error", {}).get("code", ""))


def add(api: Api, user_id: int, amount: str) -> tuple[int, str]:
    """A keyed add_money, sent until decided: its status and balance (or code)."""
    return send(api, user_id, "add_money", {"amount": amount, "source": "pay"})


def draw(api: Api, user_id: int, amount: str) -> tuple[int, str]:
    """A keyed draw_money, sent until decided: its status and balance (or code)."""
    return send(api, user_id, "draw_money", {"amount": amount, "destination": "x"})


def movements(server: PostgresServer) -> list[str]:
    """The wallet's money events on a server, in order: +amount or -amount."""
    with psycopg.connect(server.url_for(DATABASE), target_session_attrs="any") as conn:
        rows = conn.execute(
            "SELECT convert_from(state, 'UTF8')::jsonb, topic FROM pocket_events "
            "WHERE topic LIKE '%Wallet.Money%' ORDER BY notification_id"
        ).fetchall()
    return [
        ("+" if topic.endswith("Added") else "-") + state["amount"]["_data_"]
        for state, topic in rows
    ]


def test_an_asynchronous_failover_never_lets_a_stale_cache_pay_out(
    async_replicated_postgres: ReplicatedPair, two_processes: Any
) -> None:
    pair = async_replicated_postgres
    processes = two_processes(pair)
    a, b, ann = processes.a, processes.b, processes.user_id
    wait_until_replayed(pair.primary, pair.standby)
    # A adds 100 (version 3, balance 110, in A's cache); the standby never has it.
    pair.standby.stop()
    assert add(a, ann, "100") == (200, "110.00")
    fail_over_to_a_stopped_standby(*pair)
    # B writes a different version 3 on the new primary.
    assert add(b, ann, "1") == (200, "11.00")
    # A decides a draw of 100 on its cached 110: refused once the database says
    # its version 3 is not the one A holds.
    assert draw(a, ann, "100") == (409, "insufficient_funds")
    assert movements(pair.standby) == ["+10.00", "+1.00"]
    assert draw(a, ann, "11") == (200, "0.00")


def test_a_synchronous_failover_never_lets_a_stale_cache_pay_out(
    replicated_postgres: ReplicatedPair, two_processes: Any
) -> None:
    pair = replicated_postgres
    processes = two_processes(pair, POCKET_COMMIT_TIMEOUT_SECONDS="2")
    a, b, ann = processes.a, processes.b, processes.user_id
    pair.standby.stop()
    # A adds 100: committed on the primary, never confirmed by the standby.
    assert add(a, ann, "100")[0] == 503
    # B reads the wallet for a command it refuses (nothing to commit, so
    # nothing waits for the standby): B caches version 3, balance 110.
    assert draw(b, ann, "500") == (409, "insufficient_funds")
    fail_over_to_a_stopped_standby(*pair)
    # A (whose cache was dropped with the 503) writes a different version 3.
    assert add(a, ann, "1") == (200, "11.00")
    # B decides a draw of 100 on its cached 110: refused.
    assert draw(b, ann, "100") == (409, "insufficient_funds")
    assert movements(pair.standby) == ["+10.00", "+1.00"]
