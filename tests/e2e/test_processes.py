"""End to end: real `pocket serve` and `pocket follow` processes, real HTTP."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, DrawMoney, OpenWallet
from pocket.config import Settings
from tests.e2e.processes import (
    Api,
    PocketProcess,
    follow,
    records,
    replay,
    serve,
    wait_for,
)

pytestmark = pytest.mark.e2e
DRAWER = Path(__file__).with_name("drawer.py")


def seed_session(api: Api) -> int:
    """The seed's curl session; returns the user's id."""
    status, body = api.post("/users", {"name": "Gabriela"})
    assert status == 201, body
    user_id: int = body["user"]["id"]
    api = api.as_user(body["token"])
    assert body["wallet"]["balance"] == "0.00"
    status, body = api.post(
        f"/users/{user_id}/add_money", {"amount": 20, "source": "API"}
    )
    assert (status, body["wallet"]["balance"]) == (200, "20.00")
    status, body = api.post(
        f"/users/{user_id}/draw_money", {"amount": 5, "destination": "API"}
    )
    assert (status, body["wallet"]["balance"]) == (200, "15.00")
    status, body = api.get(f"/users/{user_id}/transactions")
    assert status == 200
    assert body["balance"] == "15.00"
    assert [(t["type"], t["amount"]) for t in body["transactions"]] == [
        ("IN", "20.00"),
        ("OUT", "5.00"),
    ]
    return user_id


def test_the_seed_session_on_the_embedded_default(tmp_path: Path) -> None:
    server, api = serve(tmp_path, {})
    try:
        database = tmp_path / "pocket.db"
        assert f"SQLite database {database}" in server.output
        seed_session(api)
        settings = Settings.from_url(f"sqlite:///{database}")
        wait_for(lambda: records(settings) == replay(settings), what="the projection")
        (record,) = records(settings).values()
        assert record.balance == Decimal("15.00")
        assert server.terminate() == 0
    finally:
        server.close()


def test_the_seed_session_on_postgres_with_a_separate_follower(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    settings = Settings.from_url(postgres_url)
    server, api = serve(tmp_path, env, "--no-follower")
    follower = follow(tmp_path, env)
    try:
        seed_session(api)
        # Woken by NOTIFY: far sooner than the follower's 30-second safety poll.
        wait_for(
            lambda: records(settings) == replay(settings),
            timeout=5,
            what="the follower to apply the session",
        )
        assert follower.terminate() == 0
        assert "Stopped at position 3" in follower.output
        assert server.terminate() == 0
    finally:
        follower.close()
        server.close()


def test_a_follower_of_a_log_with_nothing_applied_says_so_not_none(
    tmp_path: Path,
) -> None:
    server, _ = serve(tmp_path, {}, "--no-follower")  # makes ./pocket.db
    follower = follow(tmp_path, {})
    try:
        assert follower.terminate() == 0
        said = follower.output
        assert "from the start of the log (no event applied yet)" in said
        assert "Stopped at the start of the log (no event applied yet)" in said
        assert "position None" not in said
    finally:
        follower.close()
        server.close()


def test_writes_need_no_follower_and_are_caught_up_later(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    settings = Settings.from_url(postgres_url)
    server, api = serve(tmp_path, env, "--no-follower")
    follower: PocketProcess | None = None
    try:
        for _ in range(3):
            seed_session(api)
        assert records(settings) == {}
        follower = follow(tmp_path, env)
        wait_for(lambda: records(settings) == replay(settings), what="the catch-up")
        assert len(records(settings)) == 3
    finally:
        if follower is not None:
            follower.close()
        server.close()


def test_a_follower_killed_at_any_point_catches_up_exactly(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    settings = Settings.from_url(postgres_url)
    pocket = open_pocket(settings)
    wallets = [pocket.open_wallet(OpenWallet(user_id=str(n))) for n in range(10)]
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            for wallet_id in wallets:
                pocket.add_money(
                    AddMoney(wallet_id=wallet_id, amount=Decimal("1.01"), source="API")
                )
            for wallet_id in wallets[::3]:
                pocket.draw_money(
                    DrawMoney(
                        wallet_id=wallet_id, amount=Decimal("0.50"), destination="ATM"
                    )
                )

    writer = threading.Thread(target=write)
    writer.start()
    rng = random.Random(20261126)
    positions: list[tuple[int, int]] = []
    try:
        for _ in range(8):
            size = rng.choice(["1", "3", "20", "200"])
            follower = follow(tmp_path, env, "--batch-size", size)
            time.sleep(rng.uniform(0.1, 0.6))
            follower.kill()
            follower.close()
            view = records(settings)
            positions.append(
                (
                    sum(r.version for r in view.values()),
                    pocket.recorder.max_notification_id() or 0,
                )
            )
    finally:
        stop.set()
        writer.join()
    # Every kill found the follower mid-stream: it had applied some, not all.
    assert all(0 < applied < head for applied, head in positions), positions
    follower = follow(tmp_path, env)
    try:
        wait_for(
            lambda: records(settings) == replay(settings), what="the final catch-up"
        )
    finally:
        follower.close()
        pocket.close()


def test_concurrent_draws_from_several_processes_never_overdraw(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    first, api = serve(tmp_path, env, "--no-follower")
    second, other_api = serve(tmp_path, env, "--no-follower")
    try:
        status, body = api.post("/users", {"name": "Shared"})
        assert status == 201
        user_id, token = body["user"]["id"], body["token"]
        api.as_user(token).post(
            f"/users/{user_id}/add_money", {"amount": "50.00", "source": "API"}
        )
        urls = f"{api.base_url},{other_api.base_url}"
        clients = [
            subprocess.Popen(
                [sys.executable, str(DRAWER), urls, str(user_id), token, "20", "1.00"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(6)
        ]
        outcomes: Counter[str] = Counter()
        for client in clients:
            out, _ = client.communicate(timeout=120)
            outcomes.update(json.loads(out))
        assert outcomes == {"200": 50, "409 insufficient_funds": 70}
        status, body = other_api.as_user(token).get(
            f"/users/{user_id}/transactions?limit=500"
        )
        assert (status, body["balance"]) == (200, "0.00")
        assert sum(t["type"] == "OUT" for t in body["transactions"]) == 50
    finally:
        first.close()
        second.close()


def test_retried_requests_move_money_once_across_crashes_and_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url}
    doomed, doomed_api = serve(tmp_path, env, "--no-follower")
    survivor, api = serve(tmp_path, env, "--no-follower")
    try:
        status, body = api.post("/users", {"name": "Retrier"})
        assert status == 201
        user_id, token = body["user"]["id"], body["token"]
        user = api.as_user(token)
        user.post(f"/users/{user_id}/add_money", {"amount": "1000", "source": "API"})

        def drawers(urls: str) -> list[subprocess.Popen[str]]:
            return [
                subprocess.Popen(
                    [
                        sys.executable,
                        str(DRAWER),
                        urls,
                        str(user_id),
                        token,
                        "400",
                        "1.00",
                        "key-",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
                for _ in range(2)
            ]

        # First attempts go to a server that is killed mid-stream...
        first = drawers(doomed_api.base_url)
        time.sleep(0.4)
        doomed.kill()
        for client in first:
            client.communicate(timeout=120)
        status, body = user.get(f"/users/{user_id}")
        # The crash came mid-stream: some draws had happened, not all.
        assert Decimal("600.00") < Decimal(body["wallet"]["balance"]) < Decimal("1000")
        # ...then every key is retried, by four clients at once, on the other.
        outcomes: Counter[str] = Counter()
        for client in drawers(api.base_url) + drawers(api.base_url):
            out, _ = client.communicate(timeout=120)
            outcomes.update(json.loads(out))
        assert set(outcomes) <= {"200", "409 idempotency_key_in_flight"}
        status, body = user.get(f"/users/{user_id}/transactions?limit=500")
        assert status == 200
        assert body["balance"] == "600.00"
        assert sum(t["type"] == "OUT" for t in body["transactions"]) == 400
    finally:
        doomed.close()
        survivor.close()
