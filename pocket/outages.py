"""Riding out a database outage in a long operator command (pocket migrate): a
lost link, a failover, a server that turned read-only.

A step that failed so changed nothing it did not also record (each of the
builder's batches commits with its position), so it is run again: after the
pools have let go of what the failure broke, with back-off, for as long as the
database keeps failing, up to a bound. Each failure is one warning line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from pocket.database import Database
from pocket.postgres_pool import refused_as_read_only
from pocket.preflight import one_line

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a command keeps trying while every attempt fails, by default: longer
# than a failover manager takes to promote a standby.
PATIENCE_SECONDS = 60.0
# The back-off between attempts: doubling from the first to the longest.
FIRST_DELAY = 0.1
LONGEST_DELAY = 1.0


class GaveUp(Exception):
    """The database kept failing for longer than the command waits."""


def is_outage(error: BaseException) -> bool:
    """Whether an error says the database failed the step, not the step itself:
    the link was lost, no connection could be had, or the server is read-only."""
    if isinstance(
        error,
        OperationalError
        | InterfaceError
        | psycopg.OperationalError
        | psycopg.InterfaceError,
    ):
        return True
    if refused_as_read_only(error):
        return True
    # A recorder retries once on a lost link (pocket.postgres_pool.once_more). If the
    # lost attempt had committed, the retry finds the position moved by it and
    # raises IntegrityError: the step was done, and reading the position again
    # says so.
    context = error.__context__
    return (
        isinstance(error, IntegrityError)
        and context is not None
        and (is_outage(context))
    )


def nothing(*_: object) -> None:
    """A hook that does nothing."""


class OutageRetry:
    """Runs steps, each again after a database outage, until it succeeds or the
    database has failed for `patience` seconds on end.

    Before each attempt, `guard` runs, told whether to check in full (after a
    failure, or when the step asks): pocket migrate keeps its lock there, and
    stops there if another process has taken it. After a read-only refusal,
    `leave` runs too, beside the pools leaving that server.
    """

    def __init__(
        self,
        databases: list[Database],
        *,
        patience: float = PATIENCE_SECONDS,
        guard: Callable[[bool], None] = nothing,
        leave: Callable[[], None] = nothing,
    ) -> None:
        self.databases = databases
        self.patience = patience
        self.guard = guard
        self.leave = leave
        self.failures = 0  # Failed attempts since the last success.
        self.failing_since: float | None = None
        self.last_reason: str | None = None  # Of the failure before, if any.
        self.pauses: list[float] = []  # Each outage ridden out, in seconds.

    def __call__(self, step: Callable[[], T], *, check: bool = False) -> T:
        """The step's result, once an attempt succeeds; raises GaveUp when the
        database has failed for longer than patience, and any error that is
        not an outage at once."""
        while True:
            try:
                self.guard(check or self.failures > 0)
                result = step()
            except Exception as error:
                if not is_outage(error):
                    raise
                self._failed(error)
            else:
                self._succeeded()
                return result

    def _failed(self, error: Exception) -> None:
        """Lets go of what the failure broke, says so in a line, and waits."""
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        self.failures += 1
        left = self.failing_since + self.patience - now
        if left <= 0:
            msg = (
                f"the database failed for {self.patience:g}s on end "
                f"(last: {describe(error)})"
            )
            raise GaveUp(msg) from error
        if refused_as_read_only(error):
            # Every connection to that server would be refused the same way;
            # new ones find the primary (target_session_attrs=read-write).
            for db in self.databases:
                db.leave_server()
            self.leave()
        else:
            for db in self.databases:
                db.replace_broken_connections()
        delay = min(LONGEST_DELAY, FIRST_DELAY * 2 ** (self.failures - 1), left)
        reason = describe(error)
        # libpq's reasons for a multi-host URL run long: said once per outage.
        said = "the same as before" if reason == self.last_reason else reason
        self.last_reason = reason
        log.warning(
            "Database outage (%s); trying again in %.1fs, for %.0fs more at most",
            said,
            delay,
            left,
        )
        time.sleep(delay)

    def _succeeded(self) -> None:
        if self.failing_since is not None:
            paused = time.monotonic() - self.failing_since
            self.pauses.append(paused)
            log.info(
                "The database answers again: going on after %.1fs and %d failed "
                "attempt(s)",
                paused,
                self.failures,
            )
        self.failures = 0
        self.failing_since = None
        self.last_reason = None


def describe(error: BaseException) -> str:
    """An outage's error in one line: what kind, and the driver's reason."""
    if refused_as_read_only(error):
        what = "the server refused a write as read-only"
    elif isinstance(error, IntegrityError):
        what = "a write whose link was lost had committed"
    else:
        what = "lost the link to the database"
    return f"{what}: {type(error).__name__}: {one_line(error)}"
