"""API tokens: how they are made, what is kept of them, and a short-lived cache of
the ones checked recently."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from pocket.users import User

TOKEN_PREFIX = "pkt_"  # noqa: S105 - a marker that makes leaked tokens findable


def hash_token(token: str) -> str:
    """What is stored of a token: tokens are random, so a plain SHA-256 suffices."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh API token (256 random bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


# How long a checked token may stand for its user in a request that changes
# something: such a change commits only if the token is still the user's then
# (pocket.guards), so the cache only saves the lookup, and keeping the entry
# longer than a read may trust it keeps a spread of busy users from costing a
# lookup each every few seconds.
CHANGE_HORIZON_SECONDS = 300.0


class TokenCache:
    """Tokens checked recently, so a busy client's requests skip the lookup.

    A read trusts an entry for ttl seconds; a change (whose token is checked
    again when it commits) for up to CHANGE_HORIZON_SECONDS. A token replaced
    through this process stops working at once; one replaced through another
    process, for reads within ttl seconds, for changes at once (at the commit).
    A ttl of 0 turns the cache off.
    """

    def __init__(
        self, ttl: float, size: int = 10_000, horizon: float = CHANGE_HORIZON_SECONDS
    ) -> None:
        self.ttl = ttl
        self.horizon = max(ttl, horizon)
        self.size = size
        # token hash -> (when it was checked, on the monotonic clock; its user)
        self.entries: dict[str, tuple[float, User]] = {}
        self.lock = threading.Lock()
        # Bumped whenever a token is replaced: a lookup that began before the
        # replacement must not put the old token back.
        self.generation = 0

    def get(self, token_hash: str, *, for_change: bool = False) -> User | None:
        """The user of a recently checked token, if checked recently enough for
        a read (or, for_change, for a change)."""
        entry = self.entries.get(token_hash)
        max_age = self.horizon if for_change else self.ttl
        if entry is None or time.monotonic() - entry[0] > max_age:
            return None
        return entry[1]

    def put(self, token_hash: str, user: User, generation: int) -> None:
        """Remembers a token checked since generation (if nothing was replaced)."""
        if self.ttl <= 0:
            return
        with self.lock:
            if generation != self.generation:
                return
            if len(self.entries) >= self.size:
                self.entries.clear()
            self.entries[token_hash] = (time.monotonic(), user)

    def forget(self, user_id: int) -> None:
        """Forgets a user's tokens (theirs was just replaced)."""
        with self.lock:
            self.generation += 1
            self.entries = {h: e for h, e in self.entries.items() if e[1].id != user_id}
