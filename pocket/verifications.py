"""What `pocket verify` found, run after run, in the table pocket_verifications:
when, how many wallets it checked, how many mismatches, at which position of the
log and on which version of wallet_records. The operator console shows the last."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pocket.database import Database, as_datetime

TABLE = "pocket_verifications"


@dataclass(frozen=True)
class Verification:
    """One run of `pocket verify`."""

    at: datetime
    checked: int
    mismatches: int
    position: int
    version: int

    def as_json(self) -> dict[str, Any]:
        """The run as the admin API shows it."""
        return {
            "at": self.at.isoformat(),
            "checked": self.checked,
            "mismatches": self.mismatches,
            "position": self.position,
            "version": self.version,
        }


class VerificationLog:
    """Reads and writes pocket_verifications."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_table(self) -> None:
        """Creates the table if it is not there yet."""
        pg = self.db.dialect == "postgres"
        with self.db.transaction() as tx:
            tx.lock_schema()
            tx.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                + ("id bigserial PRIMARY KEY, " if pg else "id INTEGER PRIMARY KEY, ")
                + f"at {'timestamptz' if pg else 'TEXT'} NOT NULL, "
                "checked bigint NOT NULL, mismatches bigint NOT NULL, "
                "position bigint NOT NULL, version integer NOT NULL)"
            )

    def record(self, run: Verification) -> None:
        """Adds a run (making the table on a database from before it existed)."""
        self.create_table()
        self.db.execute(
            f"INSERT INTO {TABLE} (at, checked, mismatches, position, version) "
            "VALUES (%s, %s, %s, %s, %s)",
            [run.at, run.checked, run.mismatches, run.position, run.version],
        )

    def last(self) -> Verification | None:
        """The latest run, or None when verify has never run here.

        Reads only: on a database without the table it creates nothing."""
        with self.db.transaction(commit=False) as tx:
            if not tx.has_table(TABLE):
                return None
            rows = tx.execute(f"SELECT * FROM {TABLE} ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        row = rows[0]
        return Verification(
            at=as_datetime(row["at"]),
            checked=int(row["checked"]),
            mismatches=int(row["mismatches"]),
            position=int(row["position"]),
            version=int(row["version"]),
        )
