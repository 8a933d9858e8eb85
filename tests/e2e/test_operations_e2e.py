"""End to end on PostgreSQL: live rebuilds, standby followers, a database restart
(of a throwaway server), status and verify, all with real processes."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from decimal import Decimal
from functools import partial
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from pocket.bootstrap import open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.walletrecords import LATEST_VERSION, table_of
from tests.e2e.processes import (
    Api,
    PocketProcess,
    follow,
    leads,
    records,
    replay,
    run_pocket,
    serve,
    wait_for,
)
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.e2e


class Writer:
    """A careful client: adds 1.00 at a time, each under its own Idempotency-Key,
    retrying a key until it is acknowledged, and remembering every answer."""

    def __init__(self, api: Api, user_id: int) -> None:
        self.api, self.user_id = api, user_id
        self.answers: Counter[str] = Counter()
        self.acknowledged = 0
        self.slowest = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        key = 0
        while not self.stop.is_set():
            key += 1
            while self._send(f"credit-{key}") != "200":
                time.sleep(0.02)  # unknown outcome: the same key again
            self.acknowledged += 1

    def _send(self, key: str) -> str:
        started = time.monotonic()
        try:
            status, body = self.api.post(
                f"/users/{self.user_id}/add_money",
                {"amount": "1.00", "source": "writer"},
                headers={"Idempotency-Key": key},
            )
            answer = (
                str(status) if status == 200 else f"{status} {body['error']['code']}"
            )
        except OSError as error:
            answer = f"no answer: {type(error).__name__}"
        self.slowest = max(self.slowest, time.monotonic() - started)
        self.answers[answer] += 1
        return answer


def signed_up(api: Api) -> tuple[Api, int]:
    status, body = api.post("/users", {"name": "Writer"})
    assert status == 201, body
    return api.as_user(body["token"]), body["user"]["id"]


def credited(api: Api, user_id: int) -> int:
    """How many 1.00 credits the user's history holds."""
    status, body = api.get(f"/users/{user_id}")
    assert status == 200, body
    return int(Decimal(body["wallet"]["balance"]))


@pytest.fixture
def env(postgres_url: str) -> dict[str, str]:
    return {"POCKET_DATABASE_URL": postgres_url}


def test_a_version_bump_is_rebuilt_while_a_client_keeps_writing(
    tmp_path: Path, env: dict[str, str], postgres_url: str
) -> None:
    settings = Settings.from_url(postgres_url)
    server, api = serve(tmp_path, env, "--no-follower")
    follower = follow(tmp_path, env)
    try:
        user, user_id = signed_up(api)
        with Writer(user, user_id) as writer:
            wait_for(lambda: writer.answers["200"] > 20, what="some writes")
            down = run_pocket(tmp_path, env, "migrate", "--version", "1")
            assert down.returncode == 0, down.stderr
            assert f"wallet_records v1 is live (was v{LATEST_VERSION})." in down.stdout
            up = run_pocket(tmp_path, env, "migrate")
            assert up.returncode == 0, up.stderr
            assert f"wallet_records v{LATEST_VERSION} is live (was v1)." in up.stdout
            wait_for(lambda: writer.answers["200"] > 100, what="more writes")
        assert set(writer.answers) == {"200"}
        wait_for(lambda: records(settings) == replay(settings), what="the projection")
        assert credited(user, user_id) == writer.acknowledged
        report = json.loads(run_pocket(tmp_path, env, "status", "--json").stdout)
        (projection,) = report["projections"]
        assert projection["live_version"] == LATEST_VERSION
        assert [v["version"] for v in projection["versions"]] == [LATEST_VERSION]
    finally:
        follower.close()
        server.close()


def test_a_rebuild_killed_midway_runs_again_to_the_end(
    tmp_path: Path, env: dict[str, str], postgres_url: str
) -> None:
    settings = Settings.from_url(postgres_url)
    pocket = open_pocket(settings)
    wallets = [Wallet.open(str(n), uuid4(), Cause()) for n in range(20)]
    for wallet in wallets:
        for _ in range(300):
            wallet.add_money(Decimal("0.10"), "API", Cause())
    pocket.save(*wallets)  # 6,020 events in one go
    pocket.close()
    slow = PocketProcess(
        ["migrate", "--version", "1", "--batch-size", "2"], tmp_path, env, "migrate"
    )
    try:
        wait_for(
            lambda: "Building wallet_records v1" in slow.output, what="the rebuild"
        )
        time.sleep(0.3)
        refused = run_pocket(tmp_path, env, "migrate", "--version", "1")
        assert refused.returncode == 2
        assert "Another pocket migrate is running" in refused.stderr
        slow.kill()
    finally:
        slow.close()
    report = json.loads(run_pocket(tmp_path, env, "status", "--json").stdout)
    (projection,) = report["projections"]
    partial = {v["version"]: v["position"] for v in projection["versions"]}
    assert projection["live_version"] == LATEST_VERSION
    assert 0 < partial[1] < projection["head"], partial
    again = run_pocket(tmp_path, env, "migrate", "--version", "1")
    assert again.returncode == 0, again.stderr
    assert "Resuming wallet_records v1 from position" in again.stdout
    assert records(settings) == replay(settings, version=1)


def test_a_standby_follower_takes_over_when_the_active_one_is_killed(
    tmp_path: Path, env: dict[str, str], postgres_url: str
) -> None:
    settings = Settings.from_url(postgres_url)
    server, api = serve(tmp_path, env, "--no-follower")
    first = follow(tmp_path, env)
    wait_for(partial(leads, first), what="the first follower to lead")
    second = follow(tmp_path, env)
    try:
        user, user_id = signed_up(api)
        for _ in range(5):
            user.post(f"/users/{user_id}/add_money", {"amount": "1", "source": "x"})
        wait_for(lambda: records(settings) == replay(settings), what="the projection")
        assert "Active" not in second.output  # never both at once
        first.kill()
        killed_at = time.monotonic()
        wait_for(lambda: "Active" in second.output, timeout=10, what="the takeover")
        assert time.monotonic() - killed_at < 5
        for _ in range(5):
            user.post(f"/users/{user_id}/add_money", {"amount": "1", "source": "y"})
        wait_for(lambda: records(settings) == replay(settings), what="the standby")
        assert second.terminate() == 0
    finally:
        first.close()
        second.close()
        server.close()


def test_the_service_and_the_follower_ride_out_a_postgres_restart(
    tmp_path: Path, throwaway_postgres: PostgresServer
) -> None:
    # A server of the test's own: the shared one is never stopped.
    url = throwaway_postgres.create_database("pocket_restart")
    env = {"POCKET_DATABASE_URL": url}
    settings = Settings.from_url(url)
    server, api = serve(tmp_path, env, "--no-follower")
    follower = follow(tmp_path, env)
    try:
        user, user_id = signed_up(api)
        with Writer(user, user_id) as writer:
            wait_for(lambda: writer.answers["200"] > 20, what="writes before")
            throwaway_postgres.stop(mode="fast")
            wait_for(
                lambda: writer.answers["503 service_unavailable"] > 5,
                what="503s while the database is down",
            )
            time.sleep(2)
            throwaway_postgres.start()
            before = writer.answers["200"]
            wait_for(
                lambda: writer.answers["200"] > before + 20,
                timeout=60,
                what="writes after the restart",
            )
        assert set(writer.answers) <= {"200", "503 service_unavailable"}
        assert writer.slowest < 10, writer.slowest
        # Every acknowledged write is there, once; the follower caught up by itself.
        assert credited(user, user_id) == writer.acknowledged
        wait_for(lambda: records(settings) == replay(settings), what="the follower")
        assert follower.process.poll() is None
        assert server.process.poll() is None
    finally:
        follower.close()
        server.close()


def test_verify_catches_a_row_tampered_with_by_hand(
    tmp_path: Path, env: dict[str, str], postgres_url: str
) -> None:
    server, api = serve(tmp_path, env)
    try:
        user, user_id = signed_up(api)
        user.post(f"/users/{user_id}/add_money", {"amount": "7.00", "source": "x"})
        settings = Settings.from_url(postgres_url)
        wait_for(lambda: records(settings) == replay(settings), what="the projection")
    finally:
        server.close()
    clean = run_pocket(tmp_path, env, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {table_of(LATEST_VERSION)} SET balance = 700.00")
    tampered = run_pocket(tmp_path, env, "verify")
    assert tampered.returncode == 1
    assert "wallet_records has balance 700.00, the events say 7.00" in tampered.stdout
