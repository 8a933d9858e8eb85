"""Whether writes are being confirmed, and if not, why: what the database says
(its synchronous standbys, the commits waiting for them) beside what a process
saw of its own commits. Shown by `pocket status`, `/health/ready`,
`/admin/status` and the console."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pocket.database import Database
from pocket.groupcommit import WritesHealth

# One read: the server's synchronous replication settings, its synchronous
# standbys streaming now (NULL columns: the role may not see them, without
# pg_monitor), and the sessions whose commit waits for a standby.
COMMIT_WAITS = (
    "SELECT current_setting('synchronous_standby_names') AS standby_names, "
    "current_setting('synchronous_commit') AS synchronous_commit, "
    "(SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' "
    "AND sync_state IN ('sync', 'quorum')) AS synchronous_streaming, "
    "(SELECT count(*) FROM pg_stat_replication WHERE sync_state IS NULL) "
    "AS hidden, "
    "(SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep') "
    "AS waiting, "
    "(SELECT extract(epoch FROM now() - min(state_change))::float8 "
    "FROM pg_stat_activity WHERE wait_event = 'SyncRep') AS waiting_seconds"
)


def commit_waits(db: Database) -> dict[str, Any] | None:
    """What the primary says of synchronous commits (None on SQLite): the
    standbys it waits for, how many stream as synchronous now (None when the
    role may not see it), and the commits waiting for them."""
    if db.dialect != "postgres":
        return None
    (row,) = db.query(COMMIT_WAITS)
    names = row["standby_names"].strip()
    hidden = int(row["hidden"]) > 0
    return {
        "synchronous_standby_names": names,
        "synchronous_commit": row["synchronous_commit"],
        "synchronous_standbys_streaming": (
            None if hidden else int(row["synchronous_streaming"])
        ),
        "commits_waiting": int(row["waiting"]),
        "oldest_wait_seconds": row["waiting_seconds"] or 0.0,
    }


def stalled_by_standby(waits: dict[str, Any] | None) -> bool:
    """Whether commits are waiting for a synchronous standby that is not there."""
    if waits is None or not waits["synchronous_standby_names"]:
        return False
    if waits["synchronous_commit"] in ("off", "local"):
        return False
    return (
        bool(waits["commits_waiting"]) or waits["synchronous_standbys_streaming"] == 0
    )


def why_stuck(waits: dict[str, Any]) -> str:
    """Why commits wait for a synchronous standby, in a sentence's words."""
    names = waits["synchronous_standby_names"]
    streaming = waits["synchronous_standbys_streaming"]
    seen = (
        "none is streaming"
        if streaming == 0
        else "the standbys cannot be seen without pg_monitor"
        if streaming is None
        else f"{streaming} streaming"
    )
    return (
        f"waiting for the synchronous standby (synchronous_standby_names = "
        f"'{names}'; {seen})"
    )


def writes_report(
    health: WritesHealth | None, waits: dict[str, Any] | None
) -> dict[str, Any]:
    """Whether writes go through, for /health/ready, /admin/status and status:
    this process's view (health; None in a process that does not write) and
    the database's (commit_waits)."""
    stuck_since = None if health is None else health.stuck_since
    by_standby = stalled_by_standby(waits)
    why = None
    if by_standby and waits is not None:
        why = why_stuck(waits)
    elif health is not None and stuck_since is not None:
        # The database does not say why (its standbys hidden without
        # pg_monitor, or not the cause): what this process saw.
        why = health.why[:1].lower() + health.why[1:]
    return {
        "confirmed": why is None,
        "stuck_since": (
            None
            if stuck_since is None
            else datetime.fromtimestamp(stuck_since, UTC).isoformat()
        ),
        "why": why,
        "database": waits,
    }


def format_writes(report: dict[str, Any]) -> str:
    """The writes line of `pocket status`, for a person."""
    waits = report["database"]
    if not report["confirmed"]:
        line = f"Writes: stuck, {report['why']}"
        if waits and waits["commits_waiting"]:
            line += (
                f"; {waits['commits_waiting']} commit(s) waiting, the oldest for "
                f"{waits['oldest_wait_seconds']:.1f} s"
            )
        return line
    if waits is None or not waits["synchronous_standby_names"]:
        return "Writes: confirmed by this server alone (no synchronous standby)"
    streaming = waits["synchronous_standbys_streaming"]
    count = "?" if streaming is None else str(streaming)
    return (
        f"Writes: confirmed by the synchronous standby ({count} streaming; "
        f"synchronous_standby_names = '{waits['synchronous_standby_names']}')"
    )
