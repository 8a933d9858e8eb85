"""Operator commands that report (status) and check (verify); pocket migrate is
in pocket.migration."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder as Recorder
from eventsourcing.postgres import PostgresDatastore

from pocket.application import Pocket
from pocket.bootstrap import follower_lock, named_lock
from pocket.broker import AMQP_EXCHANGE_KEY, PUBLISHER, publishes
from pocket.catalog import ProjectionCatalog, read_live_version, tracked_position
from pocket.database import Database, Transaction
from pocket.domainmodel import (
    CAPTURED,
    ENDED_BY,
    HOLD_ENDINGS,
    ZERO,
    Wallet,
)
from pocket.expiry import EXPIRY
from pocket.expiry_sqlite import utc_text
from pocket.locks import ProcessLock
from pocket.postgres_events import PocketEventsRecorder
from pocket.reads import Reads
from pocket.runner import follower_lock_name
from pocket.system import WalletRecords
from pocket.verifications import Verification, VerificationLog
from pocket.walletrecords import (
    LATEST_VERSION,
    PROJECTION,
    WalletRecord,
    has_holds,
    record_from_row,
    table_of,
)
from pocket.webhook_store import DELIVERIES, SUBSCRIPTIONS
from pocket.writes import format_writes

Out = Callable[[str], None]
log = logging.getLogger(__name__)


def format_moment(iso: str | None) -> str:
    """An ISO 8601 moment for a person, in UTC to the second."""
    if iso is None:
        return "an unknown time"
    moment = datetime.fromisoformat(iso).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


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
    following = follower_report(pocket, db, position, head, follower_lock(pocket, live))
    migration = named_lock(pocket, f"migrate-{PROJECTION}").holder()
    return {
        "projections": [
            {
                "name": PROJECTION,
                "live_version": live,
                "latest_version": LATEST_VERSION,
                **following,
                "migration": {"running": migration is not None, **(migration or {})},
                "versions": [
                    {"version": v, "position": p or 0, "live": v == live}
                    for v, p in sorted(positions.items())
                ],
            }
        ],
        "followers": [
            expiry_status(pocket, db, head),
            webhook_status(pocket, db, head),
            *publisher_status(pocket, db, head),
        ],
    }


def follower_report(
    pocket: Pocket, db: Database, position: int, head: int, lock: ProcessLock
) -> dict[str, Any]:
    """Where a follower is in Pocket's log (its position, the head, its lag) and
    who runs it: the holder of its lock, and those standing by for it."""
    lag_events = count_after(pocket, db, position)
    holder = lock.holder()
    return {
        "position": position,
        "head": head,
        "lag_events": lag_events,
        "lag_seconds": lag_seconds(pocket, position) if lag_events else 0.0,
        "follower": {
            "running": holder is not None,
            **(holder or {}),
            "standbys": lock.standbys(),
        },
    }


def expiry_status(pocket: Pocket, db: Database, head: int) -> dict[str, Any]:
    """The hold-expiry follower: its position and lag in Pocket's log, whether
    it runs, the open holds it knows of, and those past their expiry that it has
    not recorded yet (due)."""
    now = datetime.now(UTC)
    with db.transaction(commit=False) as tx:
        position = tracked_position(tx, EXPIRY) or 0
        open_holds, due, soonest = 0, 0, None
        if tx.has_table(EXPIRY):
            (counts,) = tx.execute(
                f"SELECT count(*) AS open, min(expires_at) AS soonest FROM {EXPIRY}"
            )
            open_holds, soonest = int(counts["open"]), counts["soonest"]
            moment: object = now if db.dialect == "postgres" else utc_text(now)
            (overdue,) = tx.execute(
                f"SELECT count(*) AS due FROM {EXPIRY} WHERE expires_at <= %s",
                [moment],
            )
            due = int(overdue["due"])
    if isinstance(soonest, str):
        soonest = datetime.fromisoformat(soonest)
    lock = named_lock(pocket, follower_lock_name(EXPIRY))
    return {
        "name": EXPIRY,
        **follower_report(pocket, db, position, head, lock),
        "open_holds": open_holds,
        "due_holds": due,
        "next_expiry": None if soonest is None else soonest.isoformat(),
    }


def publisher_status(pocket: Pocket, db: Database, head: int) -> list[dict[str, Any]]:
    """The broker publisher, when a broker is configured: its position (the
    last event the broker confirmed), its lag, who runs it, and its exchange."""
    if not publishes(pocket.env):
        return []
    with db.transaction(commit=False) as tx:
        position = tracked_position(tx, PUBLISHER) or 0
    lock = named_lock(pocket, follower_lock_name(PUBLISHER))
    return [
        {
            "name": PUBLISHER,
            **follower_report(pocket, db, position, head, lock),
            "exchange": pocket.env.get(AMQP_EXCHANGE_KEY),
        }
    ]


def webhook_status(pocket: Pocket, db: Database, head: int) -> dict[str, Any]:
    """The webhook follower: its position and lag in Pocket's log, whether it
    runs, and the subscriptions' deliveries pending and parked."""
    with db.transaction(commit=False) as tx:
        position = tracked_position(tx, DELIVERIES) or 0
        subs, pending, parked = 0, 0, 0
        if tx.has_table(SUBSCRIPTIONS) and tx.has_table(DELIVERIES):
            (counts,) = tx.execute(
                f"SELECT (SELECT count(*) FROM {SUBSCRIPTIONS}) AS subs, "
                "sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending, "
                "sum(CASE WHEN status = 'parked' THEN 1 ELSE 0 END) AS parked "
                f"FROM {DELIVERIES} WHERE status <> 'delivered'"
            )
            subs = int(counts["subs"] or 0)
            pending, parked = int(counts["pending"] or 0), int(counts["parked"] or 0)
    lock = named_lock(pocket, follower_lock_name(DELIVERIES))
    return {
        "name": DELIVERIES,
        **follower_report(pocket, db, position, head, lock),
        "subscriptions": subs,
        "pending_deliveries": pending,
        "parked_deliveries": parked,
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
    if report.get("writes"):
        lines.append(format_writes(report["writes"]))
    if report.get("reads"):
        lines.append(format_reads(report["reads"]))
    for p in report["projections"]:
        follower = p["follower"]
        who = who_runs(follower)
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
    for f in report.get("followers", []):
        lines += format_follower(f)
    return "\n".join(lines)


def who_runs(follower: dict[str, Any]) -> str:
    """Whether a follower runs, and where, for a person."""
    if not follower["running"]:
        return "not running"
    return f"running (pid {follower.get('pid')} on {follower.get('host')})"


def format_follower(f: dict[str, Any]) -> list[str]:
    """A follower other than the projection's (the hold-expiry one, the webhook
    one, the broker publisher), for a person."""
    who = who_runs(f["follower"])
    lines = [
        f"{f['name']}",
        f"  position       {f['position']:,} of {f['head']:,}",
        f"  lag            {f['lag_events']:,} events, {f['lag_seconds']:.1f} s",
        f"  follower       {who}",
    ]
    if "exchange" in f:
        lines.append(f"  exchange       {f['exchange']}")
    if "subscriptions" in f:
        lines.append(
            f"  webhooks       {f['subscriptions']:,} subscription(s), "
            f"{f['pending_deliveries']:,} deliveries pending, "
            f"{f['parked_deliveries']:,} parked"
        )
    if "open_holds" in f:
        lines.append(
            f"  open holds     {f['open_holds']:,}, {f['due_holds']:,} past their "
            "expiry"
        )
    if f.get("next_expiry"):
        lines.append(f"  next expiry    {format_moment(f['next_expiry'])}")
    return lines


# Verify


@dataclass
class Expected:
    """A wallet as its events say it is, up to the projection's position."""

    user_id: str
    balance: Decimal = ZERO
    version: int = 0
    closed: bool = False
    # What the holds placed and not yet ended in the log reserve.
    held: Decimal = ZERO
    credit_limit: Decimal = ZERO
    problems: list[str] = field(default_factory=list)

    @property
    def available(self) -> Decimal:
        """What the wallet may spend, as wallet_records v3 keeps it."""
        return self.balance - self.held + self.credit_limit


@dataclass
class HoldSeen:
    """A hold as the log has it so far: its wallet, what it reserved, and how it
    ended (None while open)."""

    wallet_id: UUID
    amount: Decimal
    ended: str | None = None


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


def events_reader(pocket: Pocket, db: Database) -> PocketEventsRecorder:
    """A reader of Pocket's events on another server (a replica); it creates
    nothing there."""
    assert isinstance(db.datastore, PostgresDatastore)
    table = pocket.recorder.events_table_name  # type: ignore[attr-defined]
    return PocketEventsRecorder(db.datastore, events_table_name=table)


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
    holds: dict[UUID, HoldSeen] = {}
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
                event = pocket.mapper.to_domain_event(notification)
                fold_expected(wallets, event, holds)
    return wallets


def fold_expected(
    wallets: dict[UUID, Expected], event: Any, holds: dict[UUID, HoldSeen]
) -> None:
    """One event's effect on the expected wallets (and the holds seen so far),
    checking the balance it records and, for a hold's end, the hold."""
    if isinstance(event, Wallet.Created):
        wallets[event.originator_id] = Expected(event.user_id)
    wallet = wallets.get(event.originator_id)
    if wallet is None:
        return
    wallet.version = event.originator_version
    if isinstance(event, Wallet.MoneyAdded | Wallet.TransferReceived):
        wallet.balance += event.amount
    elif isinstance(
        event, Wallet.MoneyDrawn | Wallet.TransferSent | Wallet.HoldCaptured
    ):
        wallet.balance -= event.amount
    elif isinstance(event, Wallet.Closed):
        wallet.closed = True
    elif isinstance(event, Wallet.CreditLimitSet):
        wallet.credit_limit = event.credit_limit
    if isinstance(event, Wallet.HoldPlaced):
        place_expected(wallet, event, holds)
    elif isinstance(event, HOLD_ENDINGS):
        end_expected(wallet, event, holds)
    recorded = getattr(event, "balance", None)
    if recorded is not None and recorded != wallet.balance:
        wallet.problems.append(
            f"event {event.originator_version} records balance {recorded:.2f}, "
            f"but its amounts add up to {wallet.balance:.2f}"
        )


def place_expected(
    wallet: Expected, event: Wallet.HoldPlaced, holds: dict[UUID, HoldSeen]
) -> None:
    """A hold placed: it reserves its amount, unless its id was placed before."""
    seen = holds.get(event.hold_id)
    if seen is not None:
        wallet.problems.append(
            f"event {event.originator_version} places hold {event.hold_id} "
            f"again (first placed in wallet {seen.wallet_id})"
        )
        return
    holds[event.hold_id] = HoldSeen(event.originator_id, event.amount)
    wallet.held += event.amount


def end_expected(wallet: Expected, event: Any, holds: dict[UUID, HoldSeen]) -> None:
    """A hold ended (captured, voided, expired): once, in its own wallet, and
    a capture takes no more than the hold reserved."""
    version, hold_id = event.originator_version, event.hold_id
    ended = ENDED_BY[type(event)]
    seen = holds.get(hold_id)
    if seen is None or seen.wallet_id != event.originator_id:
        wallet.problems.append(
            f"event {version} ends hold {hold_id} ({ended}), which this wallet "
            "never placed"
        )
        return
    if seen.ended is not None:
        wallet.problems.append(
            f"event {version} ends hold {hold_id} ({ended}), which had ended "
            f"already ({seen.ended})"
        )
        return
    seen.ended = ended
    wallet.held -= seen.amount
    if ended == CAPTURED and event.amount > seen.amount:
        wallet.problems.append(
            f"event {version} captures {event.amount:.2f} of hold {hold_id}, "
            f"which held {seen.amount:.2f}"
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
    if has_holds(live):
        for name in ("held", "available", "credit_limit"):
            has, says = getattr(row, name), getattr(expected, name)
            if has != says:
                problems.append(
                    f"wallet_records has {name} {has:.2f}, the events say {says:.2f}"
                )
    return problems
