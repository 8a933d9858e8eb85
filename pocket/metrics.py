"""What Pocket's processes tell Prometheus: the group commits, the 503 gate, the
followers and the projection's lag, read when scraped.

Each server or follower has a registry of its own, never the library's global
one, so that tests and several apps in one process do not collide. The counts
are kept, without Prometheus, by what they count (the group committer, the gate,
the projector threads); a collector turns them into metrics at each scrape, and
reads the lag from the database then (the live version's position and the head:
two small reads), never on a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pocket.application import Pocket
from pocket.catalog import ProjectionCatalog
from pocket.gate import DatabaseGate
from pocket.groupcommit import CommitStats
from pocket.operations import lag_seconds
from pocket.runner import (
    ROLES,
    ExpiryThread,
    PocketRunner,
    ProjectorThread,
    PublisherThread,
    WebhookThread,
)
from pocket.verifications import VerificationLog
from pocket.walletrecords import PROJECTION

log = logging.getLogger(__name__)
# Commands per group commit: the committer takes at most 256 at once.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(eq=False)  # A registry keeps its collectors in a dict.
class PocketCollector(Collector):
    """Pocket's own metrics, read from the parts of one process at each scrape.

    gate: the API's 503 gate (None in `pocket follow`, which has none); commits:
    whether this process writes (a follower commits nothing).
    """

    pocket: Pocket
    catalog: ProjectionCatalog
    runner: PocketRunner
    gate: DatabaseGate | None = None
    commits: bool = True

    def collect(self) -> Iterator[Metric]:
        if self.commits:
            yield from commit_metrics(self.pocket.commit_stats)
            stuck_since = self.pocket.writes_health.stuck_since
            yield GaugeMetricFamily(
                "pocket_writes_stuck_seconds",
                "How long this process's writes have not been confirmed by the "
                "database (a synchronous standby gone, a partition); 0 while they are.",
                value=0.0 if stuck_since is None else time.time() - stuck_since,
            )
        if self.gate is not None:
            yield from gate_metrics(self.gate)
        threads = self.runner.threads.values()
        yield from follower_metrics(
            t for t in threads if isinstance(t, ProjectorThread)
        )
        yield from hold_metrics(
            self.pocket.hold_counts,
            [t for t in threads if isinstance(t, ExpiryThread)],
        )
        yield from publisher_metrics(
            [t for t in threads if isinstance(t, PublisherThread)]
        )
        yield from webhook_metrics([t for t in threads if isinstance(t, WebhookThread)])
        # While the gate is closed the database is known to be down: a scrape
        # must not wait on it.
        if self.gate is None or not self.gate.down.is_set():
            yield from self.projection_metrics()
            yield from self.verify_metrics()

    def verify_metrics(self) -> Iterator[Metric]:
        """The last `pocket verify`: when, and how many mismatches it found."""
        try:
            run = VerificationLog(self.catalog.db).last()
        except Exception as error:  # The scrape goes on without them.
            log.debug("Verify metrics not read: %s", error)
            return
        if run is None:
            return  # Never run here: no figure rather than a made-up one.
        yield gauge(
            "pocket_verify_last_run_timestamp_seconds",
            "When the last pocket verify finished (Unix time).",
            run.at.timestamp(),
        )
        yield gauge(
            "pocket_verify_last_mismatches",
            "Wallets the last pocket verify found disagreeing with the events.",
            run.mismatches,
        )
        yield gauge(
            "pocket_verify_last_checked",
            "Wallets the last pocket verify compared.",
            run.checked,
        )

    def projection_metrics(self) -> Iterator[Metric]:
        """The live version's position and lag, or nothing if they cannot be read."""
        try:
            live = self.catalog.live_version()
            position = self.catalog.position(live) or 0
            head = self.pocket.recorder.max_notification_id() or 0
            behind = max(0, head - position)
            seconds = lag_seconds(self.pocket, position) if behind else 0.0
        except Exception as error:  # The scrape goes on without them.
            log.debug("Projection metrics not read: %s", error)
            return
        labels = [PROJECTION, str(live)]
        yield gauge("pocket_projection_live_version", "The live version.", live)
        yield gauge("pocket_projection_head", "The last event of the log.", head)
        figures: list[tuple[str, float, str]] = [
            ("position", position, "The last event of the log the live version holds."),
            (
                "lag_events",
                behind,
                "Events of the log the live version lacks (head minus position: "
                "ids that a rolled-back write took count too).",
            ),
            ("lag_seconds", seconds, "Age of the oldest event it lacks."),
        ]
        for name, value, help_text in figures:
            metric = GaugeMetricFamily(
                f"pocket_projection_{name}", help_text, labels=["projection", "version"]
            )
            metric.add_metric(labels, value)
            yield metric


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A gauge of one projection, labelled with its name."""
    metric = GaugeMetricFamily(name, documentation, labels=["projection"])
    metric.add_metric([PROJECTION], value)
    return metric


def commit_metrics(stats: CommitStats) -> Iterator[Metric]:
    """The group commit's batch sizes, as a histogram, and its retries."""
    sizes = stats.batch_sizes
    buckets = [
        (str(bound), sum(n for size, n in sizes.items() if size <= bound))
        for bound in BATCH_BUCKETS
    ]
    buckets.append(("+Inf", sum(sizes.values())))
    yield HistogramMetricFamily(
        "pocket_group_commit_batch_size",
        "Commands decided together and saved in one transaction (a group commit).",
        buckets=buckets,
        sum_value=sum(size * n for size, n in sizes.items()),
    )
    yield CounterMetricFamily(
        "pocket_group_commit_retries",
        "Batches decided again after meeting another writer's newer events "
        "(optimistic concurrency conflicts).",
        value=stats.retries,
    )
    yield CounterMetricFamily(
        "pocket_group_commit_unconfirmed",
        "Batches answered 503 because the database did not confirm them within "
        "POCKET_COMMIT_TIMEOUT_SECONDS (whether they were made is not known).",
        value=stats.unconfirmed,
    )


def gate_metrics(gate: DatabaseGate) -> Iterator[Metric]:
    """Whether the 503 gate lets requests through, and how often it closed."""
    yield GaugeMetricFamily(
        "pocket_database_gate_open",
        "1 while requests reach the database; 0 while the database is known to "
        "be down and the API answers 503 at once.",
        value=0 if gate.down.is_set() else 1,
    )
    yield CounterMetricFamily(
        "pocket_database_gate_trips",
        "Times the gate closed because the database could not be reached.",
        value=gate.trips,
    )


def follower_metrics(threads: Iterable[ProjectorThread]) -> Iterator[Metric]:
    """Each projector thread's role, sections applied and failed rounds."""
    labels = ["projection", "version"]
    role = GaugeMetricFamily(
        "pocket_follower_role",
        "What this process's follower of a version does: 1 for its role "
        "(active: applies events; standby: waits for the active one's lock; "
        "not_live: its version is not live), 0 for the others.",
        labels=[*labels, "role"],
    )
    batches = CounterMetricFamily(
        "pocket_follower_batches",
        "Sections of the log applied, each in one transaction.",
        labels=labels,
    )
    events = CounterMetricFamily(
        "pocket_follower_events",
        "Events of the log the applied sections covered.",
        labels=labels,
    )
    failures = CounterMetricFamily(
        "pocket_follower_failures",
        "Rounds that failed (and were tried again after a pause).",
        labels=labels,
    )
    for thread in threads:
        version = [PROJECTION, str(thread.projector.version)]
        if thread.role is not None:
            for name in ROLES:
                role.add_metric([*version, name], 1 if thread.role == name else 0)
        batches.add_metric(version, thread.projector.sections_applied)
        events.add_metric(version, thread.projector.notifications_applied)
        failures.add_metric(version, thread.failed_rounds)
    yield from (role, batches, events, failures)


def hold_metrics(
    counts: Mapping[str, int], expirers: list[ExpiryThread]
) -> Iterator[Metric]:
    """Holds placed, captured, voided, expired and refused by this process's
    commands; and its hold-expiry follower's role."""
    holds = CounterMetricFamily(
        "pocket_holds",
        "Hold commands this process ran, by outcome: placed, captured, voided, "
        "expired (recorded by the expiry follower), refused (a rule refused the "
        "command: funds, limits, a hold that had ended).",
        labels=["outcome"],
    )
    for outcome in HOLD_OUTCOMES:
        holds.add_metric([outcome], counts.get(outcome, 0))
    yield holds
    if not expirers:
        return
    role = GaugeMetricFamily(
        "pocket_expiry_follower_role",
        "What this process's hold-expiry follower does: 1 for its role (active: "
        "records expiries; standby: waits for the active one's lock), 0 for the "
        "others.",
        labels=["role"],
    )
    beaten = CounterMetricFamily(
        "pocket_expiry_follower_beaten",
        "Expiries this process's follower sent that another ending beat (a "
        "capture, a void, another follower's expiry).",
    )
    for thread in expirers:
        if thread.role is not None:
            for name in ROLES[:2]:
                role.add_metric([name], 1 if thread.role == name else 0)
        beaten.add_metric([], thread.beaten)
    yield from (role, beaten)


HOLD_OUTCOMES = ("placed", "captured", "voided", "expired", "refused")


def publisher_metrics(publishers: list[PublisherThread]) -> Iterator[Metric]:
    """The broker publisher's messages confirmed, failed rounds and role (no
    samples without POCKET_AMQP_URL, the families all the same)."""
    published = CounterMetricFamily(
        "pocket_broker_published",
        "Wallet events this process published to the broker and the broker "
        "confirmed (a section sent again after a failure counts again).",
    )
    failures = CounterMetricFamily(
        "pocket_broker_failures",
        "Rounds of the broker publisher that failed (the broker down, slow to "
        "confirm, or refusing), each tried again after a pause.",
    )
    role = GaugeMetricFamily(
        "pocket_broker_publisher_role",
        "What this process's broker publisher does: 1 for its role (active: "
        "publishes; standby: waits for the active one's lock), 0 for the other.",
        labels=["role"],
    )
    if publishers:
        published.add_metric([], sum(t.projector.published for t in publishers))
        failures.add_metric([], sum(t.failed_rounds for t in publishers))
    for thread in publishers:
        if thread.role is not None:
            for name in ROLES[:2]:
                role.add_metric([name], 1 if thread.role == name else 0)
    yield from (published, failures, role)


def webhook_metrics(threads: list[WebhookThread]) -> Iterator[Metric]:
    """This process's webhook follower: its role, and its senders' tries by
    outcome (while it is active)."""
    if not threads:
        return
    role = GaugeMetricFamily(
        "pocket_webhook_follower_role",
        "What this process's webhook follower does: 1 for its role (active: queues "
        "and sends deliveries; standby), 0 for the other.",
        labels=["role"],
    )
    tries = CounterMetricFamily(
        "pocket_webhook_deliveries",
        "Webhook delivery tries this process made, by outcome: delivered (a 2xx), "
        "failed (to be retried), parked (failed past the retry period).",
        labels=["outcome"],
    )
    for thread in threads:
        if thread.role is not None:
            for name in ROLES[:2]:
                role.add_metric([name], 1 if thread.role == name else 0)
        for outcome, count in thread.sent.items():
            tries.add_metric([outcome], count)
    yield from (role, tries)


def registry_for(
    runner: PocketRunner,
    catalog: ProjectionCatalog,
    *,
    gate: DatabaseGate | None = None,
    commits: bool = True,
) -> CollectorRegistry:
    """A registry of one process's own: Pocket's metrics and the process's
    (CPU, memory, open files, garbage collection)."""
    registry = CollectorRegistry()
    registry.register(PocketCollector(runner.pocket, catalog, runner, gate, commits))
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    return registry
