"""Which version of wallet_records is live, each version's tables and position,
and the switch between versions.

Each version keeps its rows in `wallet_records_v<n>`, and its position in the
tracking table of its projector (`wallet_records_v<n>_tracking`). Readers use the
SQL view `wallet_records`, which points at the live version; `pocket migrate`
builds a version beside the live one and switches the view, the live version and
the followers over in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

from pocket.database import Database, Transaction
from pocket.walletrecords import (
    COLUMNS,
    LATEST_VERSION,
    PROJECTION,
    ProjectionError,
    WalletRecord,
    has_closed,
    has_holds,
    record_from_row,
    table_of,
    version_of,
)

LEADER = "Pocket"  # The application whose events wallet_records follows.


class ProjectionCatalog:
    """The versions of wallet_records on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure(self) -> int:
        """Creates the catalogue and the live version's rows; returns the version."""
        with self.db.transaction() as tx:
            tx.lock_schema()
            tx.execute(
                "CREATE TABLE IF NOT EXISTS pocket_projections ("
                "name text PRIMARY KEY, live_version integer NOT NULL)"
            )
            rows = tx.execute(
                "SELECT live_version FROM pocket_projections WHERE name = %s",
                [PROJECTION],
            )
            if rows:
                version = int(rows[0]["live_version"])
            else:
                # Databases from before versions were catalogued have version 1.
                version = 1 if tx.has_table(table_of(1)) else LATEST_VERSION
                tx.execute(
                    "INSERT INTO pocket_projections (name, live_version) "
                    "VALUES (%s, %s)",
                    [PROJECTION, version],
                )
        self.create_rows(version)
        with self.db.transaction() as tx:
            tx.lock_schema()
            if not tx.has_view(PROJECTION):
                point_readers_at(tx, version)
            adopt_old_positions(tx)
        return version

    def live_version(self) -> int:
        """The live version."""
        with self.db.transaction(commit=False) as tx:
            return read_live_version(tx)

    def create_rows(self, version: int) -> None:
        """Creates a version's rows table, if it is not there yet."""
        pg = self.db.dialect == "postgres"
        money = "numeric(20, 2)" if pg else "TEXT"
        columns = [
            f"aggregate_id {'uuid' if pg else 'TEXT'} PRIMARY KEY",
            "user_id text NOT NULL",
            f"balance {money} NOT NULL",
            "version bigint NOT NULL",
        ]
        if has_closed(version):
            columns.append("closed boolean NOT NULL DEFAULT false")
        if has_holds(version):
            zero = "0" if pg else "'0.00'"
            columns += [
                f"{name} {money} NOT NULL DEFAULT {zero}"
                for name in ("held", "available", "credit_limit")
            ]
        with self.db.transaction() as tx:
            tx.lock_schema()
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {table_of(version)} ({', '.join(columns)})"
            )

    def drop(self, version: int) -> None:
        """Drops a version's rows and its projector's tables (its position)."""
        table = table_of(version)
        with self.db.transaction() as tx:
            tx.lock_schema()
            for name in (table, f"{table}_tracking", f"{table}_events"):
                tx.execute(f"DROP TABLE IF EXISTS {name}")

    def position(self, version: int, tx: Transaction | None = None) -> int | None:
        """How far in Pocket's log a version's rows reflect."""
        if tx is None:
            with self.db.transaction(commit=False) as new_tx:
                return self.position(version, new_tx)
        return tracked_position(tx, table_of(version))

    def positions(self) -> dict[int, int | None]:
        """Every version that has rows here, with its position."""
        with self.db.transaction(commit=False) as tx:
            return {
                version: self.position(version, tx)
                for version in COLUMNS
                if tx.has_table(table_of(version))
            }

    def records(self, version: int) -> list[WalletRecord]:
        """Every row of a version, in no particular order."""
        rows = self.db.query(f"SELECT * FROM {table_of(version)}")
        return [record_from_row(row) for row in rows]

    def switch(self, target: int) -> bool:
        """Makes target live if it has caught up with the live version.

        In one transaction: the live version, the view readers use, and (through
        the live check in every follower's batch) the followers. Returns False,
        changing nothing, when the target is still behind the live version.
        """
        with self.db.transaction() as tx:
            # Waits for any follower batch in progress, and holds off new ones.
            tx.execute(
                "UPDATE pocket_projections SET live_version = live_version "
                "WHERE name = %s",
                [PROJECTION],
            )
            current = read_live_version(tx)
            if current == target:
                return True
            live_at = self.position(current, tx) or 0
            target_at = self.position(target, tx) or 0
            if target_at < live_at:
                return False
            tx.execute(
                "UPDATE pocket_projections SET live_version = %s WHERE name = %s",
                [target, PROJECTION],
            )
            point_readers_at(tx, target)
        return True


def adopt_old_positions(tx: Transaction) -> None:
    """Moves positions kept in projection_tracking (before each version had its
    projector's tracking table) to the tables that exist by now."""
    if not tx.has_table("projection_tracking"):
        return
    rows = tx.execute(
        "SELECT projection, application_name, notification_id FROM projection_tracking"
    )
    for row in rows:
        tracking = f"{row['projection']}_tracking"
        if version_of(str(row["projection"])) is None or not tx.has_table(tracking):
            continue  # Its projector has not run yet: moved on a later start.
        tx.execute(
            f"INSERT INTO {tracking} (application_name, notification_id) "
            "VALUES (%s, %s) ON CONFLICT (application_name) DO NOTHING",
            [row["application_name"], row["notification_id"]],
        )
        tx.execute(
            "DELETE FROM projection_tracking WHERE projection = %s",
            [row["projection"]],
        )
    if not tx.execute("SELECT 1 FROM projection_tracking LIMIT 1"):
        tx.execute("DROP TABLE projection_tracking")


def read_live_version(tx: Transaction) -> int:
    """The version readers and followers use, read inside a transaction."""
    rows = tx.execute(
        "SELECT live_version FROM pocket_projections WHERE name = %s", [PROJECTION]
    )
    if not rows:
        msg = "The projection catalogue is empty: start Pocket once to create it."
        raise ProjectionError(msg)
    return int(rows[0]["live_version"])


def point_readers_at(tx: Transaction, version: int) -> None:
    """(Re)creates the wallet_records SQL view over one version's rows."""
    tx.execute(f"DROP VIEW IF EXISTS {PROJECTION}")
    tx.execute(
        f"CREATE VIEW {PROJECTION} AS SELECT {COLUMNS[version]} "
        f"FROM {table_of(version)}"
    )


def live_records(db: Database, ids: list[UUID]) -> dict[UUID, WalletRecord]:
    """Rows of whichever version is live, through the view readers use."""
    with db.transaction(commit=False) as tx:
        return {
            record.aggregate_id: record
            for record in map(record_from_row, select_in(tx, PROJECTION, ids))
        }


def select_in(
    tx: Transaction, table: str, ids: list[UUID]
) -> Iterator[dict[str, object]]:
    """Rows of a table whose aggregate_id is one of ids."""
    # In chunks: SQLite allows a limited number of parameters per statement.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join(["%s"] * len(chunk))
        yield from tx.execute(
            f"SELECT * FROM {table} WHERE aggregate_id IN ({marks})", chunk
        )


def tracked_position(tx: Transaction, follower: str) -> int | None:
    """How far in Pocket's log a follower (a projector, the hold-expiry one) has
    applied, by its tracking table; None if it has applied nothing here."""
    tracking = f"{follower}_tracking"
    if not tx.has_table(tracking):
        return None
    rows = tx.execute(
        f"SELECT notification_id FROM {tracking} WHERE application_name = %s",
        [LEADER],
    )
    return int(rows[0]["notification_id"]) if rows else None
