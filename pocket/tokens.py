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


class TokenCache:
    """Tokens checked in the last few seconds, so a busy client's requests skip
    the lookup. A token replaced through this process stops working at once;
    one replaced through another process, within ttl seconds."""

    def __init__(self, ttl: float, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self.entries: dict[str, tuple[float, User]] = {}
        self.lock = threading.Lock()
        # Bumped whenever a token is replaced: a lookup that began before the
        # replacement must not put the old token back.
        self.generation = 0

    def get(self, token_hash: str) -> User | None:
        """The user of a recently checked token, if still fresh."""
        entry = self.entries.get(token_hash)
        if entry is None or entry[0] < time.monotonic():
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
            self.entries[token_hash] = (time.monotonic() + self.ttl, user)

    def forget(self, user_id: int) -> None:
        """Forgets a user's tokens (theirs was just replaced)."""
        with self.lock:
            self.generation += 1
            self.entries = {h: e for h, e in self.entries.items() if e[1].id != user_id}
