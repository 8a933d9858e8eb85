"""Users: a plain table outside event sourcing, as in the seed, one wallet each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pocket.database import Database, as_datetime, as_uuid
from pocket.errors import UserNotFound

# Larger ids cannot exist (bigint), and asking PostgreSQL for one is an error.
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True)
class User:
    """A row of the users table."""

    id: int
    name: str
    wallet_id: UUID
    wallet_opened: bool
    created_at: datetime
    updated_at: datetime


class UserStore:
    """Reads and writes the users table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_table(self) -> None:
        """Creates the users table if it is not there yet."""
        pg = self.db.dialect == "postgres"
        statements = [
            "CREATE TABLE IF NOT EXISTS users ("
            + ("id bigserial PRIMARY KEY, " if pg else "id INTEGER PRIMARY KEY, ")
            + "name text NOT NULL, "
            f"wallet_id {'uuid' if pg else 'TEXT'} NOT NULL UNIQUE, "
            "wallet_opened boolean NOT NULL DEFAULT false, "
            f"created_at {'timestamptz' if pg else 'TEXT'} NOT NULL, "
            f"updated_at {'timestamptz' if pg else 'TEXT'} NOT NULL)",
            # Finds, at start, users whose wallet a crash left unopened.
            "CREATE INDEX IF NOT EXISTS users_wallet_pending "
            "ON users (id) WHERE NOT wallet_opened",
        ]
        with self.db.transaction() as tx:
            tx.lock_schema()
            for statement in statements:
                tx.execute(statement)
            # Tables made before users had API tokens gain the column here.
            if not tx.has_column("users", "token_hash"):
                tx.execute("ALTER TABLE users ADD COLUMN token_hash text")
            tx.execute(
                "CREATE UNIQUE INDEX IF NOT EXISTS users_token_hash "
                "ON users (token_hash)"
            )

    def create(self, name: str, wallet_id: UUID, token_hash: str) -> User:
        """Adds a user whose wallet, with the given id, is yet to be opened."""
        now = datetime.now(UTC)
        rows = self.db.execute(
            "INSERT INTO users "
            "(name, wallet_id, wallet_opened, created_at, updated_at, token_hash)"
            " VALUES (%s, %s, false, %s, %s, %s) RETURNING *",
            [name, wallet_id, now, now, token_hash],
            bounded=True,
        )
        return to_user(rows[0])

    def replace_token_hash(
        self, user_id: int, token_hash: str, *, replacing: str | None
    ) -> bool:
        """Replaces the user's API token (the old one stops working).

        With replacing, only if that is still the user's token hash (a
        compare-and-set: a token revoked meanwhile cannot replace its
        replacement); without, whatever the token was. Returns whether it did.
        """
        sql = "UPDATE users SET token_hash = %s, updated_at = %s WHERE id = %s"
        params: list[object] = [token_hash, datetime.now(UTC), user_id]
        if replacing is not None:
            sql += " AND token_hash = %s"
            params.append(replacing)
        with self.db.transaction(bounded=True) as tx:
            tx.lock_tokens()
            tx.execute(sql, params)
            return tx.rowcount == 1

    def find_by_token_hash(self, token_hash: str) -> User | None:
        """The user whose token has this hash, if any."""
        rows = self.db.query("SELECT * FROM users WHERE token_hash = %s", [token_hash])
        return to_user(rows[0]) if rows else None

    def page(self, after: int, limit: int) -> list[User]:
        """Users with ids above after, in id order."""
        rows = self.db.query(
            "SELECT * FROM users WHERE id > %s ORDER BY id LIMIT %s", [after, limit]
        )
        return [to_user(row) for row in rows]

    def get(self, user_id: int) -> User:
        """The user with this id, or UserNotFound."""
        if not 0 < user_id <= MAX_USER_ID:
            raise UserNotFound(user_id)
        rows = self.db.query("SELECT * FROM users WHERE id = %s", [user_id])
        if not rows:
            raise UserNotFound(user_id)
        return to_user(rows[0])

    def mark_wallet_opened(self, user_id: int) -> None:
        """Records that the user's wallet exists in the event store."""
        self.db.execute(
            "UPDATE users SET wallet_opened = true WHERE id = %s",
            [user_id],
            bounded=True,
        )

    def pending_wallets(self, limit: int = 1000) -> list[User]:
        """Users whose wallet was never confirmed opened (a crash in between)."""
        rows = self.db.query(
            "SELECT * FROM users WHERE NOT wallet_opened ORDER BY id LIMIT %s",
            [limit],
        )
        return [to_user(row) for row in rows]


def to_user(row: dict[str, Any]) -> User:
    """A User from a row of either database."""
    return User(
        id=int(row["id"]),
        name=str(row["name"]),
        wallet_id=as_uuid(row["wallet_id"]),
        wallet_opened=bool(row["wallet_opened"]),
        created_at=as_datetime(row["created_at"]),
        updated_at=as_datetime(row["updated_at"]),
    )
