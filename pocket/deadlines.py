"""Bounded waits on the request path: a watchdog that interrupts a statement
past its deadline, and the errors that say what an interrupted write means.

PostgreSQL bounds a running statement (statement_timeout) and a lock wait
(lock_timeout), but not a commit's wait for its synchronous standby: with the
standby gone, COMMIT waits for ever and keeps its locks. Nothing on the server
bounds a wait for a server that no longer answers either (a network partition).
So a statement whose wait must be bounded is watched. Past its deadline the
watchdog cancels it: the server stops waiting, and a commit that was waiting for
its standby stays committed on the primary alone, with a WARNING. If the cancel
cannot reach the server, the watchdog shuts the connection's socket, and the
waiting thread returns with a lost link. Either way the connection is not used
again (see bound), so a late cancel can never hit another statement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError

log = logging.getLogger(__name__)

# How long the watchdog waits for a cancel to reach the server and take effect
# before it shuts the connection's socket instead.
CANCEL_SECONDS = 1.0
# Default of POCKET_COMMIT_TIMEOUT_SECONDS: the longest a write waits for its commit.
COMMIT_TIMEOUT_SECONDS = 5.0
# The SQLSTATE of a statement cancelled (by the watchdog): it was rolled back.
CANCELED_SQLSTATE = "57014"
# Once a commit has waited this long, the writes waiting for it (and new ones)
# are answered at once rather than holding the server's threads (see
# pocket.groupcommit): a commit takes milliseconds when all is well.
STALLED_SECONDS = 0.5

RESEND = (
    "Whether the change was made is not known: send it again with the same "
    "Idempotency-Key, and it is made exactly once."
)
# For the writes that take no Idempotency-Key (sign-up, a new token).
CHECK_FIRST = "Whether the change was made is not known: check before making it again."


class WriteNotConfirmed(OperationalError):
    """A write may have committed on the primary, but the database did not confirm
    it (its synchronous standby did not take it in time, or its wait was cut
    short): it is not known to have happened, and is not acknowledged."""

    def __init__(self, why: str, advice: str = RESEND) -> None:
        super().__init__(f"{why}. {advice}")
        self.why = why


class WritesStalled(OperationalError):
    """The database is not confirming writes right now; this one was not sent."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"{why}; this change was not made. Send it again shortly (with the "
            "same Idempotency-Key, if it had one)."
        )
        self.why = why


@dataclass(frozen=True)
class Deadline:
    """When a thread's database work must be done by (monotonic), and the
    seconds it was given, for messages."""

    at: float
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether it has passed."""
        return time.monotonic() >= self.at


@dataclass(eq=False)
class Watch:
    """One statement (or transaction) being watched on one connection."""

    conn: psycopg.Connection[Any]
    deadline: float
    # The time it was given, for messages.
    seconds: float = 0.0
    # Set when the deadline passed and the watchdog interrupted the statement.
    fired: bool = False
    # Set while the watchdog is interrupting: the watch's owner waits for it to
    # finish before it lets the connection go.
    interrupting: bool = False


class Watchdog:
    """Interrupts the statements whose deadline has passed (one thread, started
    when the first statement is watched)."""

    def __init__(self, cancel_seconds: float = CANCEL_SECONDS) -> None:
        self.cancel_seconds = cancel_seconds
        self._watches: set[Watch] = set()
        lock = threading.Lock()
        # The watchdog's thread sleeps on the first; the owners of watches being
        # interrupted, and the interrupters, wait on the second.
        self._deadlines = threading.Condition(lock)
        self._ended = threading.Condition(lock)
        # When the watchdog's thread wakes next (it is woken sooner only for an
        # earlier deadline: a statement that ends costs it nothing).
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None
        # Each thread's deadline, and the watches on the connections it holds.
        self._local = threading.local()

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection[Any], seconds: float) -> Iterator[Watch]:
        """Watches what the block does on conn; interrupted after seconds."""
        watch = Watch(conn, time.monotonic() + seconds)
        with self._deadlines:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pocket-watchdog", daemon=True
                )
                self._thread.start()
            if watch.deadline < self._wake_at:
                self._deadlines.notify()
        try:
            yield watch
        finally:
            with self._ended:
                self._watches.discard(watch)
                if watch.fired:
                    self._ended.notify_all()
                    while watch.interrupting:
                        self._ended.wait()

    @contextlib.contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Bounds every connection this thread takes from a bounded pool (see
        bound) until the block ends, by seconds from now at most (or sooner,
        within a block of its own that ends sooner)."""
        local = self._local
        previous = getattr(local, "deadline", None)
        mine = Deadline(time.monotonic() + seconds, seconds)
        local.deadline = mine if previous is None or mine.at < previous.at else previous
        try:
            yield
        finally:
            local.deadline = previous

    def current(self) -> Deadline | None:
        """This thread's deadline, if it has one."""
        deadline: Deadline | None = getattr(self._local, "deadline", None)
        return deadline

    def expired(self) -> Deadline | None:
        """This thread's deadline, if it has one and it has passed."""
        current: Deadline | None = getattr(self._local, "deadline", None)
        return current if current is not None and current.passed else None

    @contextlib.contextmanager
    def bound(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Watches conn until this thread's deadline, if it has one (a pool's
        connection, from when it is taken to when it is returned). A connection
        the watchdog interrupted is closed, never used again."""
        current: Deadline | None = getattr(self._local, "deadline", None)
        if current is None:
            yield
            return
        watches = self._thread_watches()
        watch = None
        try:
            with self.watch(conn, current.at - time.monotonic()) as watch:
                watch.seconds = current.seconds
                watches[id(conn)] = watch
                try:
                    yield
                finally:
                    del watches[id(conn)]
        finally:
            # Only now is fired final (the watch is out of the watchdog's sight
            # and any interrupter has finished): a connection a cancel was sent
            # to never goes back to the pool, where it could meet a later
            # statement of another request.
            if watch is not None and watch.fired:
                conn.close()

    def watch_of(self, conn: psycopg.Connection[Any]) -> Watch | None:
        """The watch on conn in this thread, if it is bounded."""
        return self._thread_watches().get(id(conn))

    @contextlib.contextmanager
    def write(
        self, conn: psycopg.Connection[Any], advice: str = RESEND
    ) -> Iterator[None]:
        """A write on a bounded conn (a statement, or a transaction to its
        commit): raises WriteNotConfirmed after the block if its commit was
        not confirmed, because the watchdog interrupted it or its server cut
        short its wait for the synchronous standby (a WARNING, whoever
        cancelled it)."""
        warnings = WarningsSeen()
        conn.add_notice_handler(warnings)
        try:
            yield
        except psycopg.Error as error:
            watch = self.watch_of(conn)
            if watch is None or not watch.fired:
                raise
            within = f"within {watch.seconds:g} s"
            if error.sqlstate == CANCELED_SQLSTATE:
                # Cancelled before its commit (waiting for a lock, say): the
                # transaction was rolled back.
                msg = f"The database did not take the write {within}"
                raise WritesStalled(msg) from error
            # The cancel did not reach the server and the link was cut: the
            # write may still commit.
            msg = f"The database did not answer {within}"
            raise WriteNotConfirmed(msg, advice) from error
        finally:
            if not conn.closed:
                conn.remove_notice_handler(warnings)
        watch = self.watch_of(conn)
        if watch is not None and watch.fired:
            msg = f"The database did not confirm the write within {watch.seconds:g} s"
            raise WriteNotConfirmed(msg, advice)
        if warnings.count:
            msg = "The database cut short the write's wait for its standby"
            raise WriteNotConfirmed(msg, advice)

    def _thread_watches(self) -> dict[int, Watch]:
        watches: dict[int, Watch] | None = getattr(self._local, "watches", None)
        if watches is None:
            watches = self._local.watches = {}
        return watches

    def _run(self) -> None:
        while True:
            with self._deadlines:
                now = time.monotonic()
                due = [w for w in self._watches if not w.fired and w.deadline <= now]
                for watch in due:
                    watch.fired = watch.interrupting = True
                if not due:
                    pending = [w.deadline for w in self._watches if not w.fired]
                    self._wake_at = min(pending, default=float("inf"))
                    timeout = None if not pending else self._wake_at - now
                    self._deadlines.wait(timeout)
                    self._wake_at = float("inf")
                    continue
            for watch in due:
                threading.Thread(
                    target=self._interrupt, args=(watch,), daemon=True
                ).start()

    def _interrupt(self, watch: Watch) -> None:
        """Cancels the watched statement; shuts its socket if that does not end it."""
        try:
            try:
                watch.conn.cancel_safe(timeout=self.cancel_seconds)
            except Exception as error:  # The server cannot be reached to cancel.
                log.debug("Cancel failed (%s); shutting the socket", error)
            else:
                with self._ended:
                    self._ended.wait_for(
                        lambda: watch not in self._watches, self.cancel_seconds
                    )
            with self._ended:
                ended = watch not in self._watches
            if not ended:
                shut_socket(watch.conn)
        finally:
            with self._ended:
                watch.interrupting = False
                self._ended.notify_all()


def shut_socket(conn: psycopg.Connection[Any]) -> None:
    """Shuts a connection's socket both ways, so that a thread waiting on it
    returns with a lost link (the connection itself is freed by its owner)."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = os.dup(conn.pgconn.socket)
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class WarningsSeen:
    """Notes the WARNINGs a connection's server sends (the one that matters: a
    commit's wait for its synchronous standby was cut short, by anyone)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.severity_nonlocalized == "WARNING":
            self.count += 1
