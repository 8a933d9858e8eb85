"""End to end: the hold-expiry follower in real `pocket follow` processes, killed
with -9 while another stands by, and across a database restart. Every hold
expires once, within the documented bound of its expiry (or of the database's
return, for a hold that expired while it was down)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from uuid import UUID

import pytest

from pocket.application import Pocket
from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, OpenWallet, PlaceHold
from pocket.config import Settings
from pocket.domainmodel import Wallet, utcnow
from pocket.expiry import EXPIRY_BOUND_SECONDS
from tests.e2e.processes import follow, leads, wait_for
from tests.pgserver import PostgresServer

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def pocket(url: str) -> Iterator[Pocket]:
    app = open_pocket(Settings.from_url(url))
    yield app
    app.close()


def place_holds(pocket: Pocket, seconds: list[float]) -> tuple[UUID, list[UUID]]:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="1"))
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(1000), source="x"))
    now = utcnow()
    holds = [
        pocket.place_hold(
            PlaceHold(
                wallet_id=wallet_id,
                amount=Decimal("1.00"),
                destination="shop",
                expires_at=now + timedelta(seconds=s),
            )
        ).id
        for s in seconds
    ]
    return wallet_id, holds


def expiries(pocket: Pocket, wallet_id: UUID) -> dict[UUID, list[Wallet.HoldExpired]]:
    found: dict[UUID, list[Wallet.HoldExpired]] = {}
    for event in pocket.events.get(wallet_id):
        if isinstance(event, Wallet.HoldExpired):
            found.setdefault(event.hold_id, []).append(event)
    return found


def check_expired_once_within_bound(
    pocket: Pocket, wallet_id: UUID, holds: list[UUID], since: datetime | None = None
) -> None:
    found = expiries(pocket, wallet_id)
    assert set(found) == set(holds)
    for hold_id in holds:
        (event,) = found[hold_id]  # Once.
        due = pocket.hold(wallet_id, hold_id).expires_at
        if since is not None:
            due = max(due, since)
        late = (event.timestamp - due).total_seconds()
        assert 0 <= late <= EXPIRY_BOUND_SECONDS, (hold_id, late)
    wallet = pocket.get_wallet(wallet_id)
    assert (wallet.held, wallet.available) == (Decimal(0), Decimal(1000))


def test_holds_expire_within_the_bound_across_a_kill_9_of_the_follower(
    tmp_path: Path, url: str, pocket: Pocket
) -> None:
    env = {"POCKET_DATABASE_URL": url}
    first = follow(tmp_path, env)
    wait_for(partial(leads, first), what="the first follower active")
    second = follow(tmp_path, env)
    try:
        wallet_id, holds = place_holds(pocket, [1.5, 2, 3, 4, 5, 6, 8])
        time.sleep(2.5)  # Some expired by the first follower...
        first.kill()  # ...then kill -9: the standby takes over the rest.
        wait_for(
            lambda: len(expiries(pocket, wallet_id)) == len(holds),
            timeout=8 + EXPIRY_BOUND_SECONDS,
            what="every hold expired",
        )
        check_expired_once_within_bound(pocket, wallet_id, holds)
        assert "Active: this follower applies hold_expiry" in second.output
    finally:
        first.close()
        second.close()


def test_holds_expire_within_the_bound_across_a_database_restart(
    tmp_path: Path, throwaway_postgres: PostgresServer
) -> None:
    url = throwaway_postgres.create_database("pocket_expiry")
    settings = Settings.from_url(url)
    pocket = open_pocket(settings)
    follower = follow(tmp_path, {"POCKET_DATABASE_URL": url})
    try:
        wait_for(partial(leads, follower), what="the follower active")
        wallet_id, holds = place_holds(pocket, [1.5, 2, 3, 4, 6, 9])
        time.sleep(1.5)
        throwaway_postgres.stop(mode="immediate")  # Holds expire while it is down.
        time.sleep(3)
        throwaway_postgres.start()
        back = utcnow()
        wait_for(
            lambda: _count(pocket, wallet_id) == len(holds),
            timeout=10 + EXPIRY_BOUND_SECONDS,
            what="every hold expired",
        )
        check_expired_once_within_bound(pocket, wallet_id, holds, since=None)
        for hold_id, (event,) in expiries(pocket, wallet_id).items():
            due = pocket.hold(wallet_id, hold_id).expires_at
            if due < back:  # Due while the database was down: soon after.
                assert (event.timestamp - back).total_seconds() <= EXPIRY_BOUND_SECONDS
    finally:
        follower.close()
        pocket.close()


def _count(pocket: Pocket, wallet_id: UUID) -> int:
    try:
        return len(expiries(pocket, wallet_id))
    except Exception:  # The test's own reads while the database comes back.
        return -1
