"""The live projection as the benchmark sees it from outside its follower: the
head of Pocket's log beside the live version's position, a wait until a given
follower process applies and it and the other followers have caught up, and the
events applied between two positions (notification ids may skip numbers: those
are not events)."""

from __future__ import annotations

import subprocess
import time

from pocket.application import Pocket
from pocket.bootstrap import follower_lock, open_catalog
from pocket.catalog import tracked_position
from pocket.expiry import EXPIRY
from pocket.webhook_store import DELIVERIES

POLL_SECONDS = 0.05


class Projection:
    """The live version of wallet_records on the benchmark's database."""

    def __init__(self, pocket: Pocket) -> None:
        self.pocket = pocket
        self.catalog = open_catalog(pocket)
        self.version = self.catalog.live_version()

    def head(self) -> int:
        """The last notification id in Pocket's log."""
        return self.pocket.recorder.max_notification_id() or 0

    def position(self) -> int:
        """The last notification id the live version reflects."""
        return self.catalog.position(self.version) or 0

    def wait_for(
        self, follower: subprocess.Popen[bytes], timeout: float = 300.0
    ) -> None:
        """Waits until the process holds the live version's follower lock (so
        its start-up is over) and the projection reflects the log as it is now;
        raises if the process exits first or it takes longer than timeout."""
        lock = follower_lock(self.pocket, self.version)
        deadline = time.monotonic() + timeout
        head = self.head()
        while (
            not self._applies(lock.holder(), follower)
            or self.position() < head
            or self.others() < head
        ):
            if follower.poll() is not None or time.monotonic() > deadline:
                msg = f"{follower.args!r} did not catch up (exit {follower.poll()})"
                raise RuntimeError(msg)
            time.sleep(POLL_SECONDS)

    def others(self) -> int:
        """How far the other followers a `pocket follow` runs (hold expiry,
        webhooks) have come, the one behind: a measurement that starts before
        they catch up counts their catch-up as live work."""
        with self.catalog.db.transaction(commit=False) as tx:
            return min(tracked_position(tx, name) or 0 for name in (EXPIRY, DELIVERIES))

    @staticmethod
    def _applies(
        holder: dict[str, object] | None, follower: subprocess.Popen[bytes]
    ) -> bool:
        return holder is not None and holder.get("pid") == follower.pid

    def events_between(self, after: int, upto: int) -> int:
        """How many events have notification ids in (after, upto]."""
        if upto <= after:
            return 0
        notifications = self.pocket.recorder.select_notifications(
            start=after, limit=upto - after, stop=upto, inclusive_of_start=False
        )
        return len(notifications)
