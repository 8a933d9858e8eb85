"""The library's SQLite infrastructure, with the commands' guards checked in the
transaction that inserts their events (see pocket.guards).

SQLite runs one writing transaction at a time, so the users' token hashes read
in it, after its inserts, cannot change before it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteFactory,
)

from pocket.guards import GuardsBroken, TokenGuard, broken_guards


class PocketSQLiteEventsRecorder(SQLiteApplicationRecorder):
    """Events: the library's recorder, refusing a batch whose guards do not hold."""

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> Sequence[int] | None:
        # Events first: the insert takes the write lock (waiting for it if need
        # be), so the token hashes read next cannot change before the commit; a
        # read first would make the insert fail at once on a busy database.
        notification_ids = super()._insert_events(c, stored_events, **kwargs)
        guards: Sequence[TokenGuard] = kwargs.get("guards") or ()
        if guards:
            ids = sorted({g.user_id for g in guards})
            c.execute(
                "SELECT id, token_hash FROM users "
                f"WHERE id IN ({', '.join('?' * len(ids))})",
                ids,
            )
            current = {int(row[0]): row[1] for row in c.fetchall()}
            broken = broken_guards(guards, current)
            if broken:
                raise GuardsBroken(broken)  # The transaction is rolled back.
        return notification_ids


class PocketSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory, building Pocket's events recorder."""

    application_recorder_class = PocketSQLiteEventsRecorder
