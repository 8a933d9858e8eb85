"""pocket migrate across a failover: a real `pocket migrate` on a multi-host URL
while the primary is killed and its synchronous standby promoted.

It follows the primary: takes its lock again on the new one, goes on from the
rebuilt version's own position there, switches, and exits 0; pocket verify finds
every balance as the events say, each event applied once.
"""

from __future__ import annotations

import re
import time
from decimal import Decimal
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest

from pocket.bootstrap import open_catalog, open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.walletrecords import LATEST_VERSION
from tests.e2e.processes import PocketProcess, run_pocket, wait_for
from tests.e2e.test_failover import crash_and_promote, pocket_database
from tests.pgserver import ReplicatedPair

pytestmark = pytest.mark.e2e
WALLETS, CREDITS = 20, 300  # 6,020 events
# Small batches, each a commit the standby acknowledges: the build lasts seconds.
BATCH_SIZE = "5"


def fill(url: str) -> None:
    """Pocket's tables on the database, and WALLETS wallets of CREDITS credits."""
    pocket = open_pocket(Settings.from_url(url))
    try:
        open_catalog(pocket)
        wallets = [Wallet.open(str(n), uuid4(), Cause()) for n in range(WALLETS)]
        for wallet in wallets:
            for _ in range(CREDITS):
                wallet.add_money(Decimal("0.10"), "API", Cause())
        pocket.save(*wallets)
    finally:
        pocket.close()


def query(url: str, statement: str) -> list[tuple[object, ...]]:
    """The rows of a statement on one server (whether it is the primary or not)."""
    with psycopg.connect(url, target_session_attrs="any", connect_timeout=2) as conn:
        return conn.execute(statement).fetchall()


def v1_position(url: str) -> int:
    """How far the rebuild of v1 has come on a server (-1: cannot tell now)."""
    try:
        rows = query(
            url,
            "SELECT notification_id FROM wallet_records_v1_tracking "
            "WHERE application_name = 'Pocket'",
        )
    except psycopg.Error:
        return -1
    return int(str(rows[0][0])) if rows else 0


@pytest.mark.parametrize(
    "promote_after",
    [
        0.0,
        # Longer than a connection is waited for (3 s): the recorders' own
        # retry cannot hide the outage.
        5.0,
    ],
)
def test_migrate_follows_the_primary_across_a_failover(
    tmp_path: Path, replicated_postgres: ReplicatedPair, promote_after: float
) -> None:
    primary, standby = replicated_postgres
    url, new_primary_url = pocket_database(replicated_postgres)
    fill(url)
    old_primary_url = primary.url_for("pocket")
    env = {"POCKET_DATABASE_URL": url}
    migration = PocketProcess(
        ["migrate", "--version", "1", "--batch-size", BATCH_SIZE],
        tmp_path,
        env,
        "migrate",
    )
    try:
        wait_for(
            lambda: (
                v1_position(old_primary_url) > 500
                or migration.process.poll() is not None
            ),
            timeout=30,
            what="the rebuild to be under way",
        )
        assert migration.process.poll() is None, migration.output
        died, promoted = crash_and_promote(primary, standby, "kill", promote_after)
        kept = v1_position(new_primary_url)
        assert 0 < kept < WALLETS * (CREDITS + 1), kept
        wait_for(
            lambda: (
                v1_position(new_primary_url) > kept
                or migration.process.poll() is not None
            ),
            timeout=60,
            what="the rebuild to go on on the new primary",
        )
        going_on = time.monotonic()
        assert migration.process.wait(90) == 0, migration.output
    finally:
        migration.close()
    output = migration.output
    paused = [float(s) for s in re.findall(r"going on after ([\d.]+)s", output)]
    print(
        f"\n[promoted {promote_after:g}s after the kill] the rebuild went on "
        f"{going_on - died:.2f}s after the primary died, "
        f"{going_on - promoted:.2f}s after the promotion; migrate's own pauses: "
        f"{paused}s"
    )
    assert f"wallet_records v1 is live (was v{LATEST_VERSION})." in output
    assert "Lost the migrate lock" in output, output
    assert "Holding the migrate lock again" in output
    assert "Traceback" not in output
    ((live,),) = query(new_primary_url, "SELECT live_version FROM pocket_projections")
    assert live == 1
    checked = run_pocket(tmp_path, env, "verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"Checked {WALLETS} wallets against wallet_records v1" in checked.stdout
    assert "0 mismatch(es)" in checked.stdout
