"""Guards: what must still hold when a command's transaction commits: the token
it was sent with (below), and for each wallet it changes, the last stored event
it was decided on (its prior, see head).

A command sent with a user's bearer token carries a TokenGuard: the token, as it
was when the request was authenticated (perhaps from the short-lived token
cache). The group commit sends every command's guard with the batch's events,
and the database checks them in the transaction that writes the events, with
the users' rows locked: a token replaced before that transaction commits moves
no money, even where this process still had it cached. So checking a token
costs no round trip of its own per request, and is stricter than a lookup made
before the command (which a revocation could follow before the commit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenGuard:
    """The user a command acts for, and the hash of the token it was sent with."""

    user_id: int
    token_hash: str


class GuardsBroken(Exception):
    """Some guards no longer held: the transaction wrote nothing.

    user_ids are the users whose token hash had changed (or who were gone).
    """

    def __init__(self, user_ids: Collection[int]) -> None:
        super().__init__(f"Tokens replaced for users {sorted(user_ids)}")
        self.user_ids = frozenset(user_ids)

    def broke(self, guard: TokenGuard) -> bool:
        """Whether this guard is one that no longer held."""
        return guard.user_id in self.user_ids


def head(state: bytes) -> bytes:
    """A stored event's identity, the prior a save names for each wallet it
    changes (what must still be the wallet's last event when it commits), as
    the inserts check it: the SHA-256 of the event's stored state, which holds
    its timestamp and its cause. PostgreSQL's insert function computes the same
    in SQL (sha256(state))."""
    return hashlib.sha256(state).digest()


def broken_guards(
    guards: Sequence[TokenGuard], current: dict[int, str | None]
) -> set[int]:
    """The users whose guard does not hold, given their current token hashes."""
    return {g.user_id for g in guards if current.get(g.user_id) != g.token_hash}


def parse_user_ids(detail: str | None) -> list[int]:
    """The user ids a database's guard error lists ("1,2,3")."""
    return [int(part) for part in (detail or "").split(",") if part.strip()]
