"""Operator commands: rebuild a projection live (migrate), report (status), check
(verify)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, TextIO
from uuid import UUID

import psycopg
from eventsourcing.persistence import ApplicationRecorder as Recorder
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore

from pocket.application import Pocket
from pocket.bootstrap import follower_lock, named_lock, open_catalog
from pocket.catalog import ProjectionCatalog, read_live_version
from pocket.database import Database, Transaction
from pocket.domainmodel import ZERO, Wallet
from pocket.locks import ProcessLock
from pocket.outages import PATIENCE_SECONDS, GaveUp, OutageRetry
from pocket.postgres import ApplicationRecorder
from pocket.reads import Reads
from pocket.system import VERSIONS, WalletRecords, projector_of
from pocket.verifications import Verification, VerificationLog
from pocket.walletrecords import (
    LATEST_VERSION,
    PROJECTION,
    WalletRecord,
    record_from_row,
    table_of,
)

Out = Callable[[str], None]
log = logging.getLogger(__name__)


class Progress:
    """Reports long work: a bar on a terminal, a line every few seconds in a log."""

    def __init__(
        self,
        label: str,
        stream: TextIO = sys.stderr,
        *,
        interval: float = 5.0,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else interval
        self.started = time.monotonic()
        self.last = 0.0
        self.done = 0
        self.total = 0
        self.shown: int | None = None  # The done count the last line showed.

    def update(self, done: int, total: int, *, force: bool = False) -> None:
        """Records progress; shows it when the interval has passed."""
        self.done, self.total = done, max(total, done)
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            self._show(now)

    def finish(self) -> None:
        """Shows the final figures (in a log, unless the last line showed them)."""
        if self.tty or self.shown != self.done:
            self._show(time.monotonic())
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _show(self, now: float) -> None:
        self.shown = self.done
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else 0.0
        share = self.done / self.total if self.total else 1.0
        figures = (
            f"{self.done:,}/{self.total:,} events, {rate:,.0f}/s, "
            f"{format_duration(left)} left"
        )
        if self.tty:
            bar = "#" * int(share * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {figures}  ")
        else:
            self.stream.write(f"{self.label}: {share:.0%}, {figures}\n")
        self.stream.flush()


def format_moment(iso: str | None) -> str:
    """An ISO 8601 moment for a person, in UTC to the second."""
    if iso is None:
        return "an unknown time"
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class MigrationRefused(RuntimeError):
    """Another migration is running, or the version asked for does not exist."""


class MigrationInterrupted(RuntimeError):
    """The database failed for longer than migrate waits; what was built is kept,
    and running migrate again resumes from it."""


# A migration makes sure it still holds its lock at least this often.
LOCK_CHECK_SECONDS = 2.0


class MigrationLock:
    """The lock that one pocket migrate at a time holds, kept across a failover.

    Its session dies with its server: held again on the new primary, unless
    another migration took it meanwhile (then this one stops).
    """

    def __init__(self, lock: ProcessLock) -> None:
        self.lock = lock
        self.checked = 0.0  # When the server last said the lock is ours.
        # The holder as the server showed it when this took the lock: this
        # session, still seen as holder while it ends after a lost link.
        self.mine: dict[str, Any] | None = None

    def hold(self, check: bool = False) -> None:
        """Takes the lock, or makes sure it is still ours (asking the server at
        most every LOCK_CHECK_SECONDS, unless check). Raises MigrationRefused
        when another migration holds it, OperationalError when it cannot be
        taken now."""
        now = time.monotonic()
        if self.lock.held:
            if not check and now - self.checked < LOCK_CHECK_SECONDS:
                return
            if self.lock.is_still_held():
                self.checked = now
                return
            log.warning("Lost the migrate lock with its connection; taking it again")
        if self.lock.try_acquire():
            try:
                holder = self.lock.holder()
            except psycopg.Error:
                self.lock.release()  # Taken again next time, seen as ours then.
                raise
            if self.mine is not None:
                log.info("Holding the migrate lock again")
            self.mine, self.checked = holder, now
            return
        holder = self.lock.holder()  # Raises if the server cannot be reached.
        if holder is None or holder == self.mine:
            # Free again, or still this process's own last session on its
            # way out: the lock could not be taken now, but may be soon.
            msg = f"Could not take the lock {self.lock.name} now"
            raise OperationalError(msg)
        msg = f"Another pocket migrate is running (pid {holder.get('pid', '?')})"
        raise MigrationRefused(msg)

    def leave(self) -> None:
        """Gives the lock's session up (its server refused a write as
        read-only); hold takes the lock again wherever the URL leads now."""
        self.lock.release()

    def release(self) -> None:
        """Gives the lock up."""
        self.lock.release()


def migrate(
    pocket: Pocket,
    *,
    target: int | None = None,
    keep_old: bool = False,
    batch_size: int = 2000,
    progress: Progress | None = None,
    out: Out = print,
    patience: float = PATIENCE_SECONDS,
) -> int:
    """Builds a version of wallet_records beside the live one, then switches to it.

    The API keeps serving throughout: the new version replays the whole log into
    its own tables, catches up with what was written meanwhile, and becomes live
    in one transaction. A killed run resumes from the new version's own position;
    so does this run after a lost link or a failover, for as long as the
    database fails for less than patience seconds on end (else
    MigrationInterrupted). Returns the version now live.
    """
    target = LATEST_VERSION if target is None else target
    if target not in VERSIONS:
        msg = f"wallet_records has no version {target}; known: {sorted(VERSIONS)}"
        raise MigrationRefused(msg)
    lock = MigrationLock(named_lock(pocket, f"migrate-{PROJECTION}"))
    retry = OutageRetry(
        [Database.of(pocket)], patience=patience, guard=lock.hold, leave=lock.leave
    )
    try:
        catalog = retry(lambda: open_catalog(pocket))
        live = retry(catalog.live_version)
        if target != live:
            retry(lambda: catalog.create_rows(target))
            builder = retry(lambda: open_builder(pocket, target, batch_size))
            with closing(builder):
                retry.databases.append(Database.of(builder))
                build(builder, pocket, retry, progress, out)
                switch(builder, pocket, catalog, retry)
            out(f"wallet_records v{target} is live (was v{live}).")
        else:
            out(f"wallet_records v{target} is already live.")
        if not keep_old:
            for version in retry(catalog.positions, check=True):
                if version != target:
                    retry(partial(catalog.drop, version))
                    out(f"Dropped wallet_records v{version}.")
        return target
    except GaveUp as gave_up:
        msg = (
            f"{gave_up}; wallet_records v{target} keeps what was built: run "
            "pocket migrate again to resume"
        )
        raise MigrationInterrupted(msg) from None
    finally:
        lock.release()


def open_builder(pocket: Pocket, version: int, batch_size: int) -> WalletRecords:
    """The version's projector, reading Pocket's log, applying while not live."""
    return projector_of(pocket, version, batch_size=batch_size, live_only=False)


def build(
    builder: WalletRecords,
    pocket: Pocket,
    retry: OutageRetry,
    progress: Progress | None,
    out: Out,
) -> None:
    """Replays the log into the builder's version, from where it last stopped
    (after a failover too: its position is read again before each batch)."""

    def position() -> int:
        return retry(lambda: builder.position) or 0

    start = position()
    if start:
        out(f"Resuming wallet_records v{builder.version} from position {start:,}.")
    # Up to the head as it was at the start; what is written meanwhile is the
    # switch's to catch up with, so a busy log cannot keep this going forever.
    head = retry(pocket.recorder.max_notification_id) or 0
    while position() < head and retry(lambda: builder.process_section(pocket.name)):
        if progress is not None:
            progress.update(position() - start, head - start)
    if progress is not None:
        progress.update(position() - start, head - start)
        progress.finish()


def switch(
    builder: WalletRecords,
    pocket: Pocket,
    catalog: ProjectionCatalog,
    retry: OutageRetry,
    attempts: int = 50,
) -> None:
    """Catches the builder's version up and makes it live, once it is level with
    the live one (the lock checked with the server first)."""
    for _ in range(attempts):
        retry(
            lambda: builder.catch_up(
                pocket.name, until=pocket.recorder.max_notification_id()
            )
        )
        if retry(lambda: catalog.switch(builder.version), check=True):
            return
        time.sleep(0.05)  # The live follower moved on meanwhile: catch up again.
    msg = (
        f"wallet_records v{builder.version} could not catch up with the live "
        "version: events arrive faster than this rebuild applies them (try a "
        "larger --batch-size); run pocket migrate again to resume"
    )
    raise MigrationRefused(msg)


# Status


def status(pocket: Pocket) -> dict[str, Any]:
    """Each projection's version, position, lag, and whether a follower runs.

    Reads only: it creates no table (run on the wrong database, it must not
    leave Pocket's tables there).
    """
    db = Database.of(pocket)
    catalog = ProjectionCatalog(db)
    live = catalog.live_version()
    positions = catalog.positions()
    head = pocket.recorder.max_notification_id() or 0
    position = positions.get(live) or 0
    lag_events = count_after(pocket, db, position)
    lock = follower_lock(pocket, live)
    follower = lock.holder()
    standbys = lock.standbys()
    migration = named_lock(pocket, f"migrate-{PROJECTION}").holder()
    return {
        "projections": [
            {
                "name": PROJECTION,
                "live_version": live,
                "latest_version": LATEST_VERSION,
                "position": position,
                "head": head,
                "lag_events": lag_events,
                "lag_seconds": lag_seconds(pocket, position) if lag_events else 0.0,
                "follower": {
                    "running": follower is not None,
                    **(follower or {}),
                    "standbys": standbys,
                },
                "migration": {"running": migration is not None, **(migration or {})},
                "versions": [
                    {"version": v, "position": p or 0, "live": v == live}
                    for v, p in sorted(positions.items())
                ],
            }
        ]
    }


def replication(pocket: Pocket) -> dict[str, Any] | None:
    """The PostgreSQL server Pocket writes to, and the standbys streaming from
    it with their lag (None on SQLite). Which server of a multi-host URL is the
    primary now; standbys' figures need a superuser or pg_monitor (else None)."""
    db = Database.of(pocket)
    if db.dialect != "postgres":
        return None
    (server,) = db.query(
        "SELECT host(inet_server_addr()) AS host, inet_server_port() AS port, "
        "pg_is_in_recovery() AS in_recovery"
    )
    standbys = db.query(
        "SELECT application_name AS name, host(client_addr) AS host, state, "
        "sync_state, pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN "
        "pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, replay_lsn)::bigint "
        "AS lag_bytes, extract(epoch FROM replay_lag)::float8 AS lag_seconds "
        "FROM pg_stat_replication ORDER BY application_name"
    )
    return {
        "primary": {
            "host": server["host"] or "local",
            "port": server["port"],
            "in_recovery": server["in_recovery"],
        },
        "standbys": [
            {**standby, "lag_seconds": standby["lag_seconds"] or 0.0}
            if standby["lag_bytes"] is not None
            else standby
            for standby in standbys
        ],
    }


def format_replication(servers: dict[str, Any]) -> list[str]:
    """The primary and its standbys, for a person."""
    primary = servers["primary"]
    where = f"{primary['host']}:{primary['port']}"
    lines = [
        f"Primary: {where}"
        if not primary["in_recovery"]
        else f"Server: {where}, a standby (read-only)"
    ]
    for standby in servers["standbys"]:
        lag = (
            "lag unknown (needs pg_monitor)"
            if standby["lag_bytes"] is None
            else f"lag {standby['lag_bytes']:,} bytes, {standby['lag_seconds']:.1f} s"
        )
        lines.append(
            f"Standby: {standby['name']} at {standby['host'] or 'local'}, "
            f"{standby['state']}, {standby['sync_state']}, {lag}"
        )
    if not servers["standbys"]:
        lines.append("Standby: none streaming from this server")
    return lines


def format_reads(reads: dict[str, Any]) -> str:
    """Where the reads that may lag go (POCKET_READ_URL), for a person."""
    if reads["served_by"] == "primary":
        why = reads["problem"] or "the read server has not answered yet"
        return f"Reads: on the primary, because {why}"
    kind = "standby" if reads["standby"] else "read server (not a standby)"
    return (
        f"Reads: on the {kind} {reads['server']}, {reads['lag_seconds']:.1f} s "
        f"behind (at most {reads['max_lag_seconds']:g} s)"
    )


def count_after(pocket: Pocket, db: Database, position: int) -> int:
    """How many events of the log come after a position."""
    table = pocket.recorder.events_table_name  # type: ignore[attr-defined]
    column = "notification_id" if db.dialect == "postgres" else "rowid"
    rows = db.query(
        f"SELECT count(*) AS n FROM {table} WHERE {column} > %s", [position]
    )
    return int(rows[0]["n"])


def lag_seconds(pocket: Pocket, position: int) -> float:
    """How long the oldest event the projection has not applied has been waiting
    (0 when it has applied them all)."""
    after = pocket.recorder.select_notifications(
        start=position, limit=1, inclusive_of_start=False
    )
    if not after:
        return 0.0
    event = pocket.mapper.to_domain_event(after[0])
    written: datetime = event.timestamp  # type: ignore[attr-defined]
    return max(0.0, (datetime.now(UTC) - written).total_seconds())


def format_status(report: dict[str, Any]) -> str:
    """The status report for a person."""
    lines = [f"Database: {report['database']}"] if "database" in report else []
    if report.get("servers"):
        lines += format_replication(report["servers"])
    if report.get("reads"):
        lines.append(format_reads(report["reads"]))
    for p in report["projections"]:
        follower = p["follower"]
        who = (
            f"running (pid {follower.get('pid')} on {follower.get('host')})"
            if follower["running"]
            else "not running"
        )
        lines += [
            f"{p['name']}",
            f"  live version   v{p['live_version']} (this code's latest: "
            f"v{p['latest_version']})",
            f"  position       {p['position']:,} of {p['head']:,}",
            f"  lag            {p['lag_events']:,} events, {p['lag_seconds']:.1f} s",
            f"  follower       {who}",
        ]
        lines += [
            f"  standby        pid {standby.get('pid')} on {standby.get('host')}, "
            f"since {format_moment(standby.get('since'))}"
            for standby in follower["standbys"]
        ]
        if p["migration"]["running"]:
            lines.append(f"  migration      running (pid {p['migration'].get('pid')})")
        others = [v for v in p["versions"] if not v["live"]]
        for other in others:
            version, position = other["version"], other["position"]
            lines.append(f"  also built     v{version} at position {position:,}")
    return "\n".join(lines)


# Verify


@dataclass
class Expected:
    """A wallet as its events say it is, up to the projection's position."""

    user_id: str
    balance: Decimal = ZERO
    version: int = 0
    closed: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Snapshot:
    """wallet_records as one server had it at one moment, and the balances its
    events up to that position add up to."""

    live: int
    position: int
    rows: dict[UUID, WalletRecord]
    expected: dict[UUID, Expected]
    server: str  # which server it was read from, for a person


def verify(pocket: Pocket, out: Out = print, reads: Reads | None = None) -> int:
    """Recomputes every balance from the events and compares it with wallet_records.

    Compares at one moment: the table and its position are read in one snapshot,
    and only events up to that position are folded. Prints each mismatch and
    returns how many there were. Writes nothing but its result, in
    pocket_verifications on the primary, for the operator console to show.

    With a read server (POCKET_READ_URL) it reads there, however far behind the
    primary that server is: what it checks is consistent at the position it
    names. It reads the primary if the read server fails.
    """
    primary = Database.of(pocket)
    reads = Reads(primary) if reads is None else reads
    snapshot = reads.run(lambda db: read_snapshot(pocket, db), any_lag=True)
    mismatches = 0
    expected, rows, live = snapshot.expected, snapshot.rows, snapshot.live
    for wallet_id in sorted(expected.keys() | rows.keys(), key=str):
        for problem in compare(expected.get(wallet_id), rows.get(wallet_id), live):
            out(f"wallet {wallet_id}: {problem}")
            mismatches += 1
    out(
        f"Checked {len(expected):,} wallets against wallet_records v{live} "
        f"at position {snapshot.position:,}{snapshot.server}: "
        f"{mismatches} mismatch(es)."
    )
    VerificationLog(primary).record(
        Verification(
            datetime.now(UTC), len(expected), mismatches, snapshot.position, live
        )
    )
    return mismatches


def read_snapshot(pocket: Pocket, db: Database) -> Snapshot:
    """wallet_records and its position in one snapshot of db, and the balances
    of the events up to that position, read from the same server."""
    on_primary = db.datastore is Database.of(pocket).datastore
    with db.transaction(commit=False) as tx:
        if tx.dialect == "postgres":
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        live = read_live_version(tx)
        position = ProjectionCatalog(db).position(live, tx) or 0
        rows = {
            record.aggregate_id: record
            for record in map(
                record_from_row, tx.execute(f"SELECT * FROM {table_of(live)}")
            )
        }
        where = "" if on_primary else read_server_of(tx)
    recorder = pocket.recorder if on_primary else events_reader(pocket, db)
    expected = replay_balances(pocket, position, recorder)
    return Snapshot(live, position, rows, expected, where)


def read_server_of(tx: Transaction) -> str:
    """Which server verify read, for its last line: on the standby at
    host:port (or on the read server, a primary where the read URL's libpq
    settings found no standby)."""
    (row,) = tx.execute(
        "SELECT host(inet_server_addr()) AS host, inet_server_port() AS port, "
        "pg_is_in_recovery() AS standby"
    )
    kind = "the standby" if row["standby"] else "the read server"
    return f" on {kind} at {row['host'] or 'local'}:{row['port']}"


def events_reader(pocket: Pocket, db: Database) -> ApplicationRecorder:
    """A reader of Pocket's events on another server (a replica); it creates
    nothing there."""
    assert isinstance(db.datastore, PostgresDatastore)
    table = pocket.recorder.events_table_name  # type: ignore[attr-defined]
    return ApplicationRecorder(db.datastore, events_table_name=table)


def last_verification(pocket: Pocket) -> Verification | None:
    """What the latest `pocket verify` on this database found, if it ever ran."""
    return VerificationLog(Database.of(pocket)).last()


def replay_balances(
    pocket: Pocket, position: int, recorder: Recorder | None = None
) -> dict[UUID, Expected]:
    """Every wallet's balance from its amounts, up to a position in the log
    (read by recorder: Pocket's own unless another server's is given)."""
    recorder = pocket.recorder if recorder is None else recorder
    wallets: dict[UUID, Expected] = {}
    topics = WalletRecords.topics
    after = 0
    while after < position:
        notifications = recorder.select_notifications(
            start=after, stop=position, limit=1000, inclusive_of_start=False
        )
        if not notifications:
            break
        after = notifications[-1].id
        for notification in notifications:
            if notification.topic in topics:
                fold_expected(wallets, pocket.mapper.to_domain_event(notification))
    return wallets


def fold_expected(wallets: dict[UUID, Expected], event: Any) -> None:
    """One event's effect on the expected wallets, checking the balance it records."""
    if isinstance(event, Wallet.Created):
        wallets[event.originator_id] = Expected(event.user_id)
    wallet = wallets.get(event.originator_id)
    if wallet is None:
        return
    wallet.version = event.originator_version
    if isinstance(event, Wallet.MoneyAdded | Wallet.TransferReceived):
        wallet.balance += event.amount
    elif isinstance(event, Wallet.MoneyDrawn | Wallet.TransferSent):
        wallet.balance -= event.amount
    elif isinstance(event, Wallet.Closed):
        wallet.closed = True
    recorded = getattr(event, "balance", None)
    if recorded is not None and recorded != wallet.balance:
        wallet.problems.append(
            f"event {event.originator_version} records balance {recorded:.2f}, "
            f"but its amounts add up to {wallet.balance:.2f}"
        )


def compare(
    expected: Expected | None, row: WalletRecord | None, live: int
) -> list[str]:
    """What is wrong with one wallet's row, in words."""
    if expected is None:
        return ["has a row in wallet_records but no events"]
    problems = list(expected.problems)
    if row is None:
        return [*problems, "is missing from wallet_records"]
    if row.balance != expected.balance:
        problems.append(
            f"wallet_records has balance {row.balance:.2f}, "
            f"the events say {expected.balance:.2f}"
        )
    if row.user_id != expected.user_id:
        problems.append(
            f"wallet_records has user {row.user_id}, the events say {expected.user_id}"
        )
    if row.version != expected.version:
        problems.append(
            f"wallet_records has version {row.version}, "
            f"the events say {expected.version}"
        )
    if live >= 2 and row.closed != expected.closed:
        problems.append(
            f"wallet_records has closed={row.closed}, the events say {expected.closed}"
        )
    return problems
