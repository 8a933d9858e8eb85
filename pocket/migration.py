"""pocket migrate: a new version of the projection built beside the live one,
while the API serves, then switched to in one transaction."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from typing import Any, TextIO

import psycopg
from eventsourcing.persistence import OperationalError

from pocket.application import Pocket
from pocket.bootstrap import named_lock, open_catalog
from pocket.catalog import ProjectionCatalog
from pocket.database import Database
from pocket.locks import ProcessLock
from pocket.outages import PATIENCE_SECONDS, GaveUp, OutageRetry
from pocket.system import VERSIONS, WalletRecords, projector_of
from pocket.walletrecords import (
    LATEST_VERSION,
    PROJECTION,
)

Out = Callable[[str], None]
log = logging.getLogger(__name__)


class Progress:
    """Reports long work: a bar on a terminal, a line every few seconds in a log."""

    def __init__(
        self,
        label: str,
        stream: TextIO = sys.stderr,
        *,
        interval: float = 5.0,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = 0.2 if self.tty else interval
        self.started = time.monotonic()
        self.last = 0.0
        self.done = 0
        self.total = 0
        self.shown: int | None = None  # The done count the last line showed.

    def update(self, done: int, total: int, *, force: bool = False) -> None:
        """Records progress; shows it when the interval has passed."""
        self.done, self.total = done, max(total, done)
        now = time.monotonic()
        if force or now - self.last >= self.interval:
            self.last = now
            self._show(now)

    def finish(self) -> None:
        """Shows the final figures (in a log, unless the last line showed them)."""
        if self.tty or self.shown != self.done:
            self._show(time.monotonic())
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _show(self, now: float) -> None:
        self.shown = self.done
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else 0.0
        share = self.done / self.total if self.total else 1.0
        figures = (
            f"{self.done:,}/{self.total:,} events, {rate:,.0f}/s, "
            f"{format_duration(left)} left"
        )
        if self.tty:
            bar = "#" * int(share * 30)
            self.stream.write(f"\r{self.label} [{bar:<30}] {share:4.0%} {figures}  ")
        else:
            self.stream.write(f"{self.label}: {share:.0%}, {figures}\n")
        self.stream.flush()


def format_duration(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class MigrationRefused(RuntimeError):
    """Another migration is running, or the version asked for does not exist."""


class MigrationInterrupted(RuntimeError):
    """The database failed for longer than migrate waits; what was built is kept,
    and running migrate again resumes from it."""


# A migration makes sure it still holds its lock at least this often.
LOCK_CHECK_SECONDS = 2.0


class MigrationLock:
    """The lock that one pocket migrate at a time holds, kept across a failover.

    Its session dies with its server: held again on the new primary, unless
    another migration took it meanwhile (then this one stops).
    """

    def __init__(self, lock: ProcessLock) -> None:
        self.lock = lock
        self.checked = 0.0  # When the server last said the lock is ours.
        # The holder as the server showed it when this took the lock: this
        # session, still seen as holder while it ends after a lost link.
        self.mine: dict[str, Any] | None = None

    def hold(self, check: bool = False) -> None:
        """Takes the lock, or makes sure it is still ours (asking the server at
        most every LOCK_CHECK_SECONDS, unless check). Raises MigrationRefused
        when another migration holds it, OperationalError when it cannot be
        taken now."""
        now = time.monotonic()
        if self.lock.held:
            if not check and now - self.checked < LOCK_CHECK_SECONDS:
                return
            if self.lock.is_still_held():
                self.checked = now
                return
            log.warning("Lost the migrate lock with its connection; taking it again")
        if self.lock.try_acquire():
            try:
                holder = self.lock.holder()
            except psycopg.Error:
                self.lock.release()  # Taken again next time, seen as ours then.
                raise
            if self.mine is not None:
                log.info("Holding the migrate lock again")
            self.mine, self.checked = holder, now
            return
        holder = self.lock.holder()  # Raises if the server cannot be reached.
        if holder is None or holder == self.mine:
            # Free again, or still this process's own last session on its
            # way out: the lock could not be taken now, but may be soon.
            msg = f"Could not take the lock {self.lock.name} now"
            raise OperationalError(msg)
        msg = f"Another pocket migrate is running (pid {holder.get('pid', '?')})"
        raise MigrationRefused(msg)

    def leave(self) -> None:
        """Gives the lock's session up (its server refused a write as
        read-only); hold takes the lock again wherever the URL leads now."""
        self.lock.release()

    def release(self) -> None:
        """Gives the lock up."""
        self.lock.release()


def migrate(
    pocket: Pocket,
    *,
    target: int | None = None,
    keep_old: bool = False,
    batch_size: int = 2000,
    progress: Progress | None = None,
    out: Out = print,
    patience: float = PATIENCE_SECONDS,
) -> int:
    """Builds a version of wallet_records beside the live one, then switches to it.

    The API keeps serving throughout: the new version replays the whole log into
    its own tables, catches up with what was written meanwhile, and becomes live
    in one transaction. A killed run resumes from the new version's own position;
    so does this run after a lost link or a failover, for as long as the
    database fails for less than patience seconds on end (else
    MigrationInterrupted). Returns the version now live.
    """
    target = LATEST_VERSION if target is None else target
    if target not in VERSIONS:
        msg = f"wallet_records has no version {target}; known: {sorted(VERSIONS)}"
        raise MigrationRefused(msg)
    lock = MigrationLock(named_lock(pocket, f"migrate-{PROJECTION}"))
    retry = OutageRetry(
        [Database.of(pocket)], patience=patience, guard=lock.hold, leave=lock.leave
    )
    try:
        catalog = retry(lambda: open_catalog(pocket))
        live = retry(catalog.live_version)
        if target != live:
            retry(lambda: catalog.create_rows(target))
            builder = retry(lambda: open_builder(pocket, target, batch_size))
            with closing(builder):
                retry.databases.append(Database.of(builder))
                build(builder, pocket, retry, progress, out)
                switch(builder, pocket, catalog, retry)
            out(f"wallet_records v{target} is live (was v{live}).")
        else:
            out(f"wallet_records v{target} is already live.")
        if not keep_old:
            for version in retry(catalog.positions, check=True):
                if version != target:
                    retry(partial(catalog.drop, version))
                    out(f"Dropped wallet_records v{version}.")
        return target
    except GaveUp as gave_up:
        msg = (
            f"{gave_up}; wallet_records v{target} keeps what was built: run "
            "pocket migrate again to resume"
        )
        raise MigrationInterrupted(msg) from None
    finally:
        lock.release()


def open_builder(pocket: Pocket, version: int, batch_size: int) -> WalletRecords:
    """The version's projector, reading Pocket's log, applying while not live."""
    return projector_of(pocket, version, batch_size=batch_size, live_only=False)


def build(
    builder: WalletRecords,
    pocket: Pocket,
    retry: OutageRetry,
    progress: Progress | None,
    out: Out,
) -> None:
    """Replays the log into the builder's version, from where it last stopped
    (after a failover too: its position is read again before each batch)."""

    def position() -> int:
        return retry(lambda: builder.position) or 0

    start = position()
    if start:
        out(f"Resuming wallet_records v{builder.version} from position {start:,}.")
    # Up to the head as it was at the start; what is written meanwhile is the
    # switch's to catch up with, so a busy log cannot keep this going forever.
    head = retry(pocket.recorder.max_notification_id) or 0
    while position() < head and retry(lambda: builder.process_section(pocket.name)):
        if progress is not None:
            progress.update(position() - start, head - start)
    if progress is not None:
        progress.update(position() - start, head - start)
        progress.finish()


def switch(
    builder: WalletRecords,
    pocket: Pocket,
    catalog: ProjectionCatalog,
    retry: OutageRetry,
    attempts: int = 50,
) -> None:
    """Catches the builder's version up and makes it live, once it is level with
    the live one (the lock checked with the server first)."""
    for _ in range(attempts):
        retry(
            lambda: builder.catch_up(
                pocket.name, until=pocket.recorder.max_notification_id()
            )
        )
        if retry(lambda: catalog.switch(builder.version), check=True):
            return
        time.sleep(0.05)  # The live follower moved on meanwhile: catch up again.
    msg = (
        f"wallet_records v{builder.version} could not catch up with the live "
        "version: events arrive faster than this rebuild applies them (try a "
        "larger --batch-size); run pocket migrate again to resume"
    )
    raise MigrationRefused(msg)
