"""A command sent once is applied once, however its reply is lost.

A real `pocket serve` talks to PostgreSQL through a proxy that cuts the link right
after forwarding the statement that records a command's events, while another
session may hold the events table's lock (so the cut-off statement is still
waiting, and could commit after Pocket has looked for it). Every request is sent
once: its money moves exactly once, or not at all with a 503 that says so.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import ADMIN_URL, require_postgres
from tests.e2e.processes import Api, PocketProcess, serve, wait_for
from tests.proxy import Proxy, Trap
from tools.scratch import scratch_postgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

LOCK_MODES = [None, "EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"]


@dataclass
class Setup:
    """One server behind a proxy, two funded users, and the real database."""

    url: str
    proxy: Proxy
    server: PocketProcess
    payer: Api
    payer_id: int
    payee: Api
    payee_id: int


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_postgres()
    with scratch_postgres(ADMIN_URL, "pocket_lost") as url:
        dbname = url.rsplit("/", 1)[1]
        proxy = Proxy("127.0.0.1", int(conninfo_to_dict(url).get("port") or 5432))
        env = {"POCKET_DATABASE_URL": proxy.url(dbname)}
        server, api = serve(tmp_path_factory.mktemp("lost"), env, "--no-follower")
        try:
            users = []
            for name in ("Payer", "Payee"):
                status, body = api.post("/users", {"name": name})
                assert status == 201, body
                user, user_id = api.as_user(body["token"]), body["user"]["id"]
                status, _ = user.post(
                    f"/users/{user_id}/add_money", {"amount": "1000", "source": "t"}
                )
                assert status == 200
                users.append((user, user_id))
            (payer, payer_id), (payee, payee_id) = users
            yield Setup(url, proxy, server, payer, payer_id, payee, payee_id)
        finally:
            server.close()
            proxy.close()


class TableLock:
    """Another session holding the events table's lock, as a writer ahead in the
    queue would (EXCLUSIVE), or VACUUM or ANALYZE (SHARE UPDATE EXCLUSIVE)."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def __enter__(self) -> TableLock:
        self.thread.start()
        assert self.held.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(10)

    def _hold(self) -> None:
        with psycopg.connect(self.url) as conn:
            conn.execute(f"LOCK TABLE pocket_events IN {self.mode} MODE")
            self.held.set()
            self.release.wait(30)


def release_after(lock: TableLock | None, seconds: float) -> None:
    """Lets the lock go a moment after the request has been sent."""
    if lock is not None:
        threading.Timer(seconds, lock.release.set).start()


def send(setup: Setup, op: str, marker: str, key: str | None) -> tuple[int, Any]:
    """Sends one command whose events carry marker; returns its answer."""
    headers = {"Idempotency-Key": key} if key else {}
    user, user_id = setup.payer, setup.payer_id
    if op == "add_money":
        body: dict[str, Any] = {"amount": "1.25", "source": marker}
    elif op == "draw_money":
        body = {"amount": "1.25", "destination": marker}
    else:
        body = {"to_user_id": setup.payee_id, "amount": "1.25", "description": marker}
    return user.post(f"/users/{user_id}/{op}", body, headers)


def recorded(setup: Setup, marker: str) -> int:
    """How many wallet events carry marker (a transfer records two)."""
    with psycopg.connect(setup.url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pocket_events WHERE position(%s in state) > 0 "
            "AND topic LIKE %s",
            [marker.encode(), "%:Wallet.%"],
        ).fetchone()
    assert row is not None
    return int(row[0])


def events_per_command(op: str) -> int:
    return 2 if op == "transfers" else 1


def balance(setup: Setup) -> Decimal:
    status, body = setup.payer.get(f"/users/{setup.payer_id}")
    assert status == 200, body
    return Decimal(body["wallet"]["balance"])


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "keyed"])
@pytest.mark.parametrize("lock_mode", LOCK_MODES, ids=["no lock", "EX", "SUE"])
@pytest.mark.parametrize("op", ["add_money", "draw_money", "transfers"])
def test_a_command_whose_reply_is_lost_is_applied_exactly_once(
    setup: Setup, op: str, lock_mode: str | None, keyed: bool
) -> None:
    marker = f"cut-{uuid.uuid4().hex}"
    before = balance(setup)
    lock = TableLock(setup.url, lock_mode) if lock_mode else None
    if lock is not None:
        lock.__enter__()
    try:
        trap = setup.proxy.arm(marker)
        release_after(lock, 0.5)
        status, body = send(setup, op, marker, uuid.uuid4().hex if keyed else None)
    finally:
        if lock is not None:
            lock.__exit__()
    assert trap.sprung.is_set(), "the link was never cut"
    assert status in (200, 201), body
    assert recorded(setup, marker) == events_per_command(op)
    moved = Decimal("1.25") if op == "add_money" else Decimal("-1.25")
    assert balance(setup) == before + moved


def orphan_pids(url: str) -> list[int]:
    """Backends still waiting to insert events (statements nobody hears from)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() AND query LIKE %s",
            ["%pocket_events_insert%"],
        ).fetchall()
    return [int(row[0]) for row in rows]


def activity(setup: Setup) -> str:
    """What the test's database is doing, and what the server said: for a failure."""
    with psycopg.connect(setup.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, state, wait_event_type, wait_event, left(query, 80) "
            "FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
    return "\n".join(map(str, rows)) + "\n" + setup.server.output[-3000:]


@pytest.fixture(autouse=True)
def reachable_after(setup: Setup) -> Iterator[None]:
    """Whatever a test did to the proxy, the next one finds the database there."""
    yield
    setup.proxy.refuse(False)


def cut_off(setup: Setup, marker: str, key: str | None) -> tuple[Trap, int, Any]:
    """Sends a draw whose link is cut while a lock holds its insert back, with
    the database unreachable from then on; returns Pocket's answer."""
    trap = setup.proxy.arm(marker, isolate=True)
    status, body = send(setup, "draw_money", marker, key)
    return trap, status, body


def reachable_again(setup: Setup) -> None:
    setup.proxy.refuse(False)
    wait_for(
        lambda: setup.payer.get(f"/users/{setup.payer_id}")[0] == 200,
        timeout=30,
        what="the API to serve again",
    )


@pytest.mark.parametrize("keyed", [False, True], ids=["no key", "keyed"])
@pytest.mark.parametrize("orphan", ["never commits", "commits later"])
def test_an_outcome_that_cannot_be_known_is_a_503_never_a_second_payment(
    setup: Setup, orphan: str, keyed: bool
) -> None:
    marker = f"cut-{uuid.uuid4().hex}"
    key = uuid.uuid4().hex if keyed else None
    before = balance(setup)
    with TableLock(setup.url, "EXCLUSIVE") as lock:
        trap, status, body = cut_off(setup, marker, key)
        assert trap.sprung.is_set()
        assert status == 503, body
        assert "not known" in body["error"]["message"]
        assert "same Idempotency-Key" in body["error"]["message"]
        pids = orphan_pids(setup.url)  # the cut-off statement, still waiting
        assert len(pids) == 1, activity(setup)
        (pid,) = pids
        if orphan == "never commits":
            with psycopg.connect(setup.url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        lock.release.set()
    wait_for(lambda: not orphan_pids(setup.url), what="the orphan to end")
    applied = 0 if orphan == "never commits" else 1
    assert recorded(setup, marker) == applied
    reachable_again(setup)
    assert balance(setup) == before - applied * Decimal("1.25")
    if keyed:
        # Sent again with the same key, as the 503 says: made exactly once.
        status, body = send(setup, "draw_money", marker, key)
        assert status == 200, body
        assert recorded(setup, marker) == 1
        assert balance(setup) == before - Decimal("1.25")


def test_a_lost_link_that_sent_nothing_is_simply_retried(setup: Setup) -> None:
    # Every pooled connection is cut while idle: the next command meets a dead
    # link before its statement is sent, and goes through on a new one.
    before = balance(setup)
    setup.proxy.cut_all()
    status, body = setup.payer.post(
        f"/users/{setup.payer_id}/add_money", {"amount": "2", "source": "after cut"}
    )
    assert status == 200, body
    assert balance(setup) == before + 2
