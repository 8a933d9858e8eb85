"""What the hold-expiry follower keeps: each open hold's wallet and expiry, folded
from the hold events of Pocket's log (the follower itself, HoldExpiry, is in
pocket.system; each database's recorder applies the changes in
pocket.expiry_postgres and pocket.expiry_sqlite).

A hold expires within EXPIRY_BOUND_SECONDS of its expiry while a follower runs: the
active follower looks for due holds every EXPIRY_TICK_SECONDS, and sooner when the
next expiry it knows of comes first; a standby takes over a dead one's lock within
a few seconds. With no follower running, a hold past its expiry reserves nothing
anyway, and cannot be captured (pocket.domainmodel): only its HoldExpired event
waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from pocket.domainmodel import HOLD_ENDINGS, Wallet

# The table of open holds (and, as the library names them, the follower's
# tracking table: hold_expiry_tracking).
EXPIRY = "hold_expiry"
# The active follower looks for due holds at least this often.
EXPIRY_TICK_SECONDS = 1.0
# Expiries sent in one go, at most (the rest in the next).
EXPIRY_BATCH = 100
# What the docs promise: a hold's HoldExpired is recorded at most this long after
# its expiry while a follower runs (a tick, a round's gathering, a standby's
# takeover of a dead follower's lock, and slack for a loaded machine).
EXPIRY_BOUND_SECONDS = 10.0

HOLD_EVENTS = (Wallet.HoldPlaced, *HOLD_ENDINGS)


@dataclass
class HoldChanges:
    """What a section of the log does to the open holds."""

    # Holds placed (and not ended within the section): their wallet and expiry.
    placed: dict[UUID, tuple[UUID, datetime]] = field(default_factory=dict)
    # Holds that ended, placed in an earlier section.
    ended: set[UUID] = field(default_factory=set)

    def fold(self, event: object) -> None:
        """Adds one event's effect."""
        if isinstance(event, Wallet.HoldPlaced):
            self.placed[event.hold_id] = (event.originator_id, event.expires_at)
        elif (
            isinstance(event, HOLD_ENDINGS)
            and self.placed.pop(event.hold_id, None) is None
        ):
            self.ended.add(event.hold_id)


@dataclass(frozen=True)
class DueHold:
    """A hold whose expiry has come, and its wallet."""

    hold_id: UUID
    wallet_id: UUID
    expires_at: datetime
