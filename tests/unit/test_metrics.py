"""The metrics Pocket makes of its counts: the group commit's histogram and the
503 gate's state and trips, with no database."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from pocket.gate import DatabaseGate
from pocket.groupcommit import CommitStats
from pocket.metrics import commit_metrics, gate_metrics


class Fixed(Collector):
    """A collector of metrics made beforehand."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def exposed(metrics: list[Metric]) -> list[str]:
    """The metrics' sample lines, as a scrape shows them."""
    registry = CollectorRegistry()
    registry.register(Fixed(metrics))
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_batch_sizes_become_a_cumulative_histogram_and_retries_a_counter() -> None:
    stats = CommitStats(
        batch_sizes={1: 5, 3: 2, 16: 1, 300: 1}, retries=4, unconfirmed=2
    )
    lines = exposed(list(commit_metrics(stats)))
    assert lines == [
        'pocket_group_commit_batch_size_bucket{le="1"} 5.0',
        'pocket_group_commit_batch_size_bucket{le="2"} 5.0',
        'pocket_group_commit_batch_size_bucket{le="4"} 7.0',
        'pocket_group_commit_batch_size_bucket{le="8"} 7.0',
        'pocket_group_commit_batch_size_bucket{le="16"} 8.0',
        'pocket_group_commit_batch_size_bucket{le="32"} 8.0',
        'pocket_group_commit_batch_size_bucket{le="64"} 8.0',
        'pocket_group_commit_batch_size_bucket{le="128"} 8.0',
        'pocket_group_commit_batch_size_bucket{le="256"} 8.0',
        'pocket_group_commit_batch_size_bucket{le="+Inf"} 9.0',
        "pocket_group_commit_batch_size_count 9.0",
        "pocket_group_commit_batch_size_sum 327.0",
        "pocket_group_commit_retries_total 4.0",
        "pocket_group_commit_unconfirmed_total 2.0",
    ]


def test_the_gate_shows_closed_while_the_database_is_down_and_counts_trips() -> None:
    back = threading.Event()

    def probe() -> None:
        if not back.is_set():
            raise OSError("still down")

    gate = DatabaseGate(probe, interval=0.01)
    assert exposed(list(gate_metrics(gate))) == [
        "pocket_database_gate_open 1.0",
        "pocket_database_gate_trips_total 0.0",
    ]
    gate.trip()
    gate.trip()  # Already closed: not a second trip.
    assert exposed(list(gate_metrics(gate))) == [
        "pocket_database_gate_open 0.0",
        "pocket_database_gate_trips_total 1.0",
    ]
    back.set()
    for _ in range(500):
        if not gate.down.is_set():
            break
        threading.Event().wait(0.01)
    assert exposed(list(gate_metrics(gate)))[0] == "pocket_database_gate_open 1.0"
