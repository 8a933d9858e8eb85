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
again (see Watch.spent), so a late cancel can never hit another statement.
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


@dataclass(eq=False)
class Watch:
    """One statement (or transaction) being watched on one connection."""

    conn: psycopg.Connection[Any]
    deadline: float
    # Set when the deadline passed and the watchdog interrupted the statement.
    fired: bool = False
    # Set while the watchdog is interrupting: the watch's owner waits for it to
    # finish before it lets the connection go.
    interrupting: bool = False

    @property
    def spent(self) -> bool:
        """Whether the connection must be closed rather than used again: a cancel
        sent to it could still arrive during a later statement."""
        return self.fired


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
    def write(
        self, conn: psycopg.Connection[Any], seconds: float, advice: str = RESEND
    ) -> Iterator[Watch]:
        """Watches a write on conn (a statement, or a transaction to its commit):
        raises WriteNotConfirmed after the block if its commit was not confirmed,
        because the watchdog interrupted it or its server cut short its wait
        for the synchronous standby (a WARNING, whoever cancelled it). A
        connection the watchdog interrupted is closed, never used again."""
        warnings = WarningsSeen()
        conn.add_notice_handler(warnings)
        with self.watch(conn, seconds) as watch:
            try:
                yield watch
            finally:
                if watch.spent:
                    conn.close()
                else:
                    conn.remove_notice_handler(warnings)
        if watch.fired:
            msg = f"The database did not confirm the write within {seconds:g} s"
            raise WriteNotConfirmed(msg, advice)
        if warnings.count:
            msg = "The database cut short the write's wait for its standby"
            raise WriteNotConfirmed(msg, advice)

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
