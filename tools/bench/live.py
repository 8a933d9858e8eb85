"""The projection follower live: a `pocket follow` process applying what the
benchmark's own commands write at a steady pace (add_money through the Python
API, one event each), its CPU per event applied, and how far it lags the log.

The lag is sampled every SAMPLE_SECONDS: the head of the log and the live
version's position. In events, the largest head - position seen. In
milliseconds, the largest age seen of the oldest event not yet applied: its
commit time is interpolated between the two samples whose heads straddle its
notification id (the pace is steady, so the head moves evenly between them).
Both can miss a peak that falls between two samples.
"""

from __future__ import annotations

import itertools
import threading
import time
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from pocket.application import Pocket
from pocket.commands import AddMoney, OpenWallet
from tools.bench.figures import Results, Sizes, rate
from tools.bench.servers import cpu_seconds, follower_process
from tools.bench.watch import Projection

LIVE_RATE = 500  # commands a second
DRIVERS = 8  # threads, each on its own wallet
SAMPLE_SECONDS = 0.05


class Sample(NamedTuple):
    """The log's head and the projection's position, at a moment."""

    at: float
    head: int
    position: int


def live_follower(pocket: Pocket, url: str, sizes: Sizes, results: Results) -> None:
    """add_money at LIVE_RATE a second for sizes.live_seconds, with `pocket
    follow` running: its CPU per event, the rate achieved, the largest lag."""
    projection = Projection(pocket)
    wallets = [
        pocket.open_wallet(OpenWallet(user_id=f"live-{n}")) for n in range(DRIVERS)
    ]
    with follower_process(url) as follower:
        projection.wait_for(follower)
        start, before = projection.position(), cpu_seconds(follower.pid)
        samples: list[Sample] = []
        stop = threading.Event()
        sampler = threading.Thread(
            target=take_samples, args=(projection, samples, stop)
        )
        sampler.start()
        try:
            achieved = paced(pocket, wallets, LIVE_RATE, sizes.live_seconds)
            projection.wait_for(follower)
        finally:
            stop.set()
            sampler.join()
        used = cpu_seconds(follower.pid) - before
        applied = projection.events_between(start, projection.position())
    results.add("follow_live_cpu_us", used / max(applied, 1) * 1e6)
    results.add("follow_live_rate", achieved)
    results.add("follow_live_lag_events", max(s.head - s.position for s in samples))
    results.add("follow_live_lag_ms", max_lag_seconds(samples) * 1000)


def paced(pocket: Pocket, wallets: list[UUID], per_second: int, seconds: int) -> float:
    """add_money on a schedule, the n-th due n / per_second seconds after the
    start, from a thread per wallet (each takes the next one due when it is
    free); returns the rate achieved."""
    total = per_second * seconds
    numbers = itertools.count()  # next() on it is atomic under the GIL
    started = time.perf_counter()

    def drive(wallet_id: UUID) -> None:
        while (n := next(numbers)) < total:
            delay = started + n / per_second - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            command = AddMoney(wallet_id=wallet_id, amount=Decimal(1), source="live")
            pocket.add_money(command)

    threads = [threading.Thread(target=drive, args=(w,)) for w in wallets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return rate(total, started)


def take_samples(
    projection: Projection, samples: list[Sample], stop: threading.Event
) -> None:
    """Samples the head, then the position, every SAMPLE_SECONDS until stopped."""
    while True:
        head = projection.head()
        samples.append(Sample(time.perf_counter(), head, projection.position()))
        if stop.wait(SAMPLE_SECONDS):
            return


def max_lag_seconds(samples: list[Sample]) -> float:
    """The largest age of the oldest event not yet applied, over the samples."""
    ages = [
        sample.at - committed(samples, sample.position + 1)
        for sample in samples
        if sample.head > sample.position
    ]
    return max([0.0, *ages])


def committed(samples: list[Sample], notification_id: int) -> float:
    """When a notification id was committed, interpolated between the samples
    whose heads straddle it."""
    previous = samples[0]
    for sample in samples:
        if sample.head >= notification_id:
            if sample.head == previous.head:
                return sample.at
            share = (notification_id - previous.head) / (sample.head - previous.head)
            return previous.at + share * (sample.at - previous.at)
        previous = sample
    return samples[-1].at
