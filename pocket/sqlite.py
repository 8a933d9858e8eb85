"""The library's SQLite infrastructure, with the commands' guards checked in the
transaction that inserts their events (see pocket.guards), and each aggregate's
new events refused unless they follow a stored one.

SQLite runs one writing transaction at a time, so the users' token hashes and
the versions read in it, after its inserts, cannot change before it commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteFactory,
)

from pocket.guards import GuardsBroken, TokenGuard, broken_guards, head


class PocketSQLiteEventsRecorder(SQLiteApplicationRecorder):
    """Events: the library's recorder, refusing a batch whose guards do not hold,
    or whose events do not follow the stored ones they were decided on.

    The library refuses a version that is taken; Pocket also refuses one whose
    predecessor is not stored, or is not the event it was decided on (its
    SHA-256, the prior, where the caller knows it), as PostgreSQL's insert
    function does: a command decided on the events of a save written with it
    (pocket.unitofwork) must fail if that save does, or a wallet would hold a
    history with a hole in it, or another writer's event under its own, and a
    balance from nowhere.
    """

    # Whether this recorder refuses events that do not follow a stored one.
    checks_follows = True

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
        priors: Mapping[UUID | str, bytes] = kwargs.get("priors") or {}
        firsts: dict[UUID | str, int] = {}
        for event in stored_events:
            firsts.setdefault(event.originator_id, event.originator_version)
        for originator_id, version in firsts.items():
            if version > 1:
                c.execute(
                    f"SELECT state FROM {self.events_table_name} "
                    "WHERE originator_id = ? AND originator_version = ?",
                    (stored_id(originator_id), version - 1),
                )
                row = c.fetchone()
                prior = priors.get(originator_id)
                if row is None or (prior is not None and head(row[0]) != prior):
                    msg = f"Version {version} of {originator_id} does not follow"
                    raise IntegrityError(msg)  # The transaction is rolled back.
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


def stored_id(originator_id: UUID | str) -> str:
    """An aggregate id as the library's SQLite tables hold it."""
    return originator_id.hex if isinstance(originator_id, UUID) else originator_id


class PocketSQLiteFactory(SQLiteFactory):
    """The library's SQLite factory, building Pocket's events recorder."""

    application_recorder_class = PocketSQLiteEventsRecorder
