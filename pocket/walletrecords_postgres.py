"""The wallet_records projector's recorder on PostgreSQL: a batch's row changes and
its tracking position in one transaction, the position moved by compare-and-set."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
    PostgresTrackingRecorder,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from pocket.domainmodel import ZERO
from pocket.postgres import PocketPostgresFactory
from pocket.postgres_events import SerializedSchema
from pocket.postgres_pool import once_more
from pocket.walletrecords import (
    PROJECTION,
    Batch,
    ProjectionError,
    ProjectionSwitched,
    WalletChanges,
    has_closed,
    has_holds,
    version_of,
)


class WalletRecordsPostgresRecorder(SerializedSchema, PostgresProcessRecorder):
    """One version of wallet_records: the library's process recorder, whose tables
    are named after the version's projector, applying each batch's changes to the
    version's rows in the transaction that records its tracking position."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=tracking_table_name,
        )
        # The projector of version n is named wallet_records_v<n>, so are its
        # rows; a recorder of another name is a plain process recorder.
        self.rows_table = tracking_table_name.removesuffix("_tracking")
        self.version = version_of(self.rows_table)
        schema = Identifier(datastore.schema)
        tracking = Identifier(datastore.schema, tracking_table_name)
        rows = Identifier(datastore.schema, self.rows_table)
        self.first_position = SQL(
            "INSERT INTO {0} (application_name, notification_id) VALUES (%s, %s) "
            "ON CONFLICT (application_name) DO NOTHING RETURNING notification_id"
        ).format(tracking)
        self.next_position = SQL(
            "UPDATE {0} SET notification_id = %s WHERE application_name = %s "
            "AND notification_id = %s RETURNING notification_id"
        ).format(tracking)
        self.select_live_version = SQL(
            "SELECT live_version FROM {0}.pocket_projections WHERE name = %s FOR SHARE"
        ).format(schema)
        self.open_rows = SQL(
            "INSERT INTO {0} (aggregate_id, user_id, balance, version) "
            "SELECT id, user_id, 0, version FROM unnest("
            "%s::uuid[], %s::text[], %s::bigint[]) AS o(id, user_id, version)"
        ).format(rows)
        self.add_deltas = SQL(
            "UPDATE {0} AS t SET balance = t.balance + d.delta, version = d.version "
            "FROM unnest(%s::uuid[], %s::numeric[], %s::bigint[]) "
            "AS d(id, delta, version) WHERE t.aggregate_id = d.id "
            "RETURNING t.aggregate_id"
        ).format(rows)
        # Versions with holds: held and the credit limit too, and available
        # from the row's new figures (the right-hand sides read the old row).
        self.add_deltas_with_holds = SQL(
            "UPDATE {0} AS t SET balance = t.balance + d.delta, "
            "held = t.held + d.held, "
            "credit_limit = coalesce(d.credit_limit, t.credit_limit), "
            "available = t.balance + d.delta - (t.held + d.held) "
            "+ coalesce(d.credit_limit, t.credit_limit), version = d.version "
            "FROM unnest(%s::uuid[], %s::numeric[], %s::bigint[], %s::numeric[], "
            "%s::numeric[]) AS d(id, delta, version, held, credit_limit) "
            "WHERE t.aggregate_id = d.id RETURNING t.aggregate_id"
        ).format(rows)
        self.holds = self.version is not None and has_holds(self.version)
        self.close_rows = SQL(
            "UPDATE {0} SET closed = true WHERE aggregate_id = ANY(%s::uuid[])"
        ).format(rows)

    # The library tries ten times on a lost link; a follower retries by itself.
    _library_insert_events = once_more(PostgresApplicationRecorder.insert_events)
    max_tracking_id = once_more(PostgresTrackingRecorder.max_tracking_id)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """A section's batch in a plain transaction: its statements each wait for
        their answer (the compare-and-set must see its row), which in the
        library's pipeline spins the CPU until the server answers, costing a
        live round more than its events did. Anything else, as the library."""
        if stored_events or kwargs.get("batch") is None:
            return self._library_insert_events(stored_events, **kwargs)  # type: ignore[no-any-return]
        with self.datastore.transaction(commit=True) as curs:
            self._insert_events(curs, stored_events, **kwargs)
        return []

    def _insert_events(
        self,
        curs: Cursor[DictRow],
        stored_events: Sequence[StoredEvent],
        **kwargs: Any,
    ) -> None:
        batch: Batch | None = kwargs.get("batch")
        tracking: Tracking | None = kwargs.get("tracking")
        if batch is None or tracking is None:
            # The library's semantics: any position ahead of the last.
            super()._insert_events(curs, stored_events, **kwargs)
            return
        self._advance(curs, tracking, batch.after)
        if batch.live_only:
            self._check_live(curs)
        self._apply(curs, batch.changes)

    def _advance(
        self, curs: Cursor[DictRow], tracking: Tracking, after: int | None
    ) -> None:
        """Moves the position from after to the tracking's, or raises
        IntegrityError (changing nothing) when it is no longer at after."""
        if after is not None and tracking.notification_id <= after:
            msg = f"Position {tracking.notification_id} is not after {after}"
            raise IntegrityError(msg)
        name, position = tracking.application_name, tracking.notification_id
        if after is None:
            curs.execute(self.first_position, (name, position), prepare=True)
        else:
            curs.execute(self.next_position, (position, name, after), prepare=True)
        if curs.fetchone() is None:
            msg = f"{self.rows_table} is no longer at position {after}"
            raise IntegrityError(msg)

    def _check_live(self, curs: Cursor[DictRow]) -> None:
        """Holds off a switch of the live version while this batch commits."""
        curs.execute(self.select_live_version, (PROJECTION,), prepare=True)
        row = curs.fetchone()
        live = None if row is None else int(row["live_version"])
        if live != self.version:
            msg = f"{PROJECTION} v{live} is live, not v{self.version}"
            raise ProjectionSwitched(msg)

    def _apply(self, curs: Cursor[DictRow], changes: WalletChanges) -> None:
        if changes.opened:
            opened = changes.opened.items()
            curs.execute(
                self.open_rows,
                (
                    [i for i, _ in opened],
                    [u for _, (u, _) in opened],
                    [v for _, (_, v) in opened],
                ),
                prepare=True,
            )
        if changes.deltas:
            deltas = changes.deltas.items()
            columns = [
                [i for i, _ in deltas],
                [d for _, (d, _) in deltas],
                [v for _, (_, v) in deltas],
            ]
            if self.holds:
                columns += [
                    [changes.held.get(i, ZERO) for i, _ in deltas],
                    [changes.credit_limits.get(i) for i, _ in deltas],
                ]
            curs.execute(
                self.add_deltas_with_holds if self.holds else self.add_deltas,
                columns,
                prepare=True,
            )
            missing = len(changes.deltas) - len(curs.fetchall())
            if missing:
                msg = f"{self.rows_table} lacks rows for {missing} wallet(s)"
                raise ProjectionError(msg)
        if changes.closed and self.version is not None and has_closed(self.version):
            curs.execute(self.close_rows, (list(changes.closed),), prepare=True)


class WalletRecordsPostgresFactory(PocketPostgresFactory):
    """Pocket's PostgreSQL factory, whose process recorders are wallet_records'."""

    process_recorder_class = WalletRecordsPostgresRecorder
