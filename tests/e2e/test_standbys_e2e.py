"""End to end: standby followers say so, and `pocket status` lists them, with
real `pocket follow` processes on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pocket.bootstrap import open_pocket
from pocket.config import Settings
from tests.e2e.processes import (
    PocketProcess,
    follow,
    leads,
    run_pocket,
    serve,
    wait_for,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    url = request.getfixturevalue(f"{request.param}_url")
    if request.param == "sqlite":
        # pocket follow follows an SQLite file that is there (pocket serve
        # makes it); it makes none.
        open_pocket(Settings.from_url(url)).close()
    return {"POCKET_DATABASE_URL": url}


def says(process: PocketProcess, words: str) -> bool:
    return words in process.output


def follower_info(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """What `pocket status --json` says of the live version's followers."""
    answer = run_pocket(tmp_path, env, "status", "--json")
    assert answer.returncode == 0, answer.stderr
    follower: dict[str, Any] = json.loads(answer.stdout)["projections"][0]["follower"]
    return follower


def standby_pids(tmp_path: Path, env: dict[str, str]) -> list[int]:
    return sorted(s["pid"] for s in follower_info(tmp_path, env)["standbys"])


def test_status_shows_the_active_follower_and_its_standbys_until_each_is_gone(
    tmp_path: Path, env: dict[str, str]
) -> None:
    first = follow(tmp_path, env)
    wait_for(partial(leads, first), what="the first follower to lead")
    others: list[PocketProcess] = []
    try:
        others += [follow(tmp_path, env), follow(tmp_path, env)]
        second, third = others
        for standby in others:
            wait_for(partial(says, standby, "Standing by"), what="standing by")
            assert f"(pid {first.process.pid} on " in standby.output
        pids = sorted(p.process.pid for p in others)
        wait_for(lambda: standby_pids(tmp_path, env) == pids, what="two standbys")
        info = follower_info(tmp_path, env)
        assert (info["running"], info["pid"]) == (True, first.process.pid)
        text = run_pocket(tmp_path, env, "status").stdout
        assert f"follower       running (pid {first.process.pid} on " in text
        for pid in pids:
            assert f"standby        pid {pid} on " in text
        # Said once per follower (the projector's, the hold-expiry one's, the
        # webhook one's), not at every look at the lock.
        assert second.output.count("Standing by") == 3
        assert second.output.count("applies hold_expiry; this one takes over") == 1

        third.kill()  # A standby that dies leaves the list, whatever killed it.
        wait_for(
            lambda: standby_pids(tmp_path, env) == [second.process.pid],
            what="the dead standby to leave the list",
        )
        first.kill()
        wait_for(lambda: "Active" in second.output, timeout=10, what="the takeover")
        info = follower_info(tmp_path, env)
        assert (info["running"], info["pid"], info["standbys"]) == (
            True,
            second.process.pid,
            [],
        )
        assert second.terminate() == 0
    finally:
        first.close()
        for process in others:
            process.close()


def test_a_standby_follower_opens_no_connection_per_write(
    tmp_path: Path, postgres_url: str
) -> None:
    """Every write's NOTIFY wakes every follower; a standby tries for the lock
    on the connection it is seen on, at most every quarter second, instead of
    forking a server process per write (as it once did: about 90 a second at
    500 writes a second)."""
    env = {"POCKET_DATABASE_URL": postgres_url}
    server, api = serve(tmp_path, env, "--no-follower")
    first = follow(tmp_path, env)
    second: PocketProcess | None = None
    try:
        wait_for(partial(leads, first), what="the first follower to lead")
        second = follow(tmp_path, env)
        wait_for(partial(says, second, "Standing by"), what="standing by")
        status, body = api.post("/users", {"name": "Ann"})
        assert status == 201
        user = api.as_user(body["token"])
        path = f"/users/{body['user']['id']}/add_money"
        time.sleep(2)  # The sessions so far counted.
        before = sessions(postgres_url)
        began = time.monotonic()
        for _ in range(200):
            status, _ = user.post(path, {"amount": "1", "source": "x"})
            assert status == 200
        elapsed = time.monotonic() - began
        time.sleep(2)
        opened = sessions(postgres_url) - before
        # This test's own two connections to count, and a few for the API's
        # pool; not one per write or per quarter second of writing.
        assert opened <= 6, (opened, elapsed)
        assert "Active" not in second.output
    finally:
        for process in (server, first, second):
            if process is not None:
                process.close()


def sessions(url: str) -> int:
    """How many sessions the server has opened on the URL's database so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])
