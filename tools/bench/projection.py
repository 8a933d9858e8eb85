"""The benchmark's projection figures: catch-up into a spare version, batched
(its rate and CPU per event) and one transaction per event, and `pocket
migrate` rebuilding one in a process of its own (its rate and peak memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from decimal import Decimal

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.migration import open_builder
from pocket.system import HoldExpiry, WebhookFeed
from tools.bench.figures import Results, Sizes, rate


def write_events(pocket: Pocket, count: int, wallets: int = 1000) -> None:
    """Writes about count money events across many wallets, a thousand a save."""
    opened = [Wallet.open(f"bulk-{n}", uuid.uuid4(), Cause()) for n in range(wallets)]
    pocket.save(*opened)
    written = 0
    while written < count:
        chunk = opened[: min(wallets, count - written)]
        for wallet in chunk:
            wallet.add_money(Decimal("1.25"), "bench", Cause())
        pocket.save(*chunk)
        written += len(chunk)


def projection(pocket: Pocket, sizes: Sizes, results: Results) -> None:
    """Catch-up rate, batched and one transaction per event, into a spare
    version; and the batched catch-up's CPU per event."""
    catalog = open_catalog(pocket)
    spare = 1 if catalog.live_version() != 1 else 2
    catalog.drop(spare)
    catalog.create_rows(spare)
    with closing(open_builder(pocket, spare, batch_size=1)) as single:
        started = time.perf_counter()
        for _ in range(sizes.per_event_events):
            single.process_section(pocket.name)
        results.add("catchup_per_event", rate(single.position or 0, started))
    catalog.drop(spare)
    catalog.create_rows(spare)
    with closing(open_builder(pocket, spare, batch_size=2000)) as batched:
        started, cpu = time.perf_counter(), time.process_time()
        batched.pull_and_process(pocket.name)
        used = time.process_time() - cpu
        results.add("catchup", rate(batched.position or 0, started))
        # This process's CPU (its other threads idle meanwhile), as the live
        # follower's is its process's: the database's own is in neither.
        applied = max(batched.notifications_applied, 1)
        results.add("catchup_cpu_us", used / applied * 1e6)
    catalog.drop(spare)
    results.add(
        "followers_catchup_cpu_us", results.figures["catchup_cpu_us"] + others(pocket)
    )


def others(pocket: Pocket) -> float:
    """The CPU per event of the other followers `pocket follow` runs (hold
    expiry, webhooks) catching up, summed: they are behind by what the
    benchmark wrote since the live follower's run (none subscribed)."""
    total = 0.0
    for follower_class in (HoldExpiry, WebhookFeed):
        follower = follower_class(env={**dict(pocket.env), "CREATE_TABLE": "yes"})
        follower.follow(pocket.name, pocket.notification_log)
        with closing(follower):
            cpu = time.process_time()
            applied = follower.catch_up(pocket.name)
            total += (time.process_time() - cpu) / max(applied, 1) * 1e6
    return total


def rebuild(url: str, results: Results) -> None:
    """`pocket migrate` to the spare version, in a process of its own: rate, memory."""
    settings = Settings.from_url(url)
    pocket = open_pocket(settings)
    catalog = open_catalog(pocket)
    spare = 1 if catalog.live_version() != 1 else 2
    head = pocket.recorder.max_notification_id() or 0
    pocket.close()
    env = {**os.environ, "POCKET_DATABASE_URL": url, "POCKET_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "pocket.cli", "migrate", "--version", str(spare)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip()
            msg = f"pocket migrate failed ({process.returncode}): {said}"
            raise RuntimeError(msg)
    results.add("rebuild", rate(head, started))
    results.add("rebuild_peak_mb", usage.ru_maxrss / 1024)  # kilobytes on Linux
