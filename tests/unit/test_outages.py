"""OutageRetry on its own: steps that fail as a database outage would, with no
database behind them."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from eventsourcing.persistence import (
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from psycopg.errors import ReadOnlySqlTransaction

from pocket.outages import GaveUp, OutageRetry, is_outage


def failing(times: int, error: Callable[[], Exception]) -> Callable[[], str]:
    """A step that raises error() its first `times` attempts, then answers."""
    attempts: list[int] = []

    def step() -> str:
        attempts.append(1)
        if len(attempts) <= times:
            raise error()
        return f"done after {len(attempts)}"

    return step


def read_only_refusal() -> Exception:
    """What the library raises for a write a read-only server refused."""
    try:
        raise InternalError("read-only") from ReadOnlySqlTransaction("read-only")
    except InternalError as error:
        return error


def committed_before_its_link_was_lost() -> Exception:
    """A recorder's retry finding the position moved by the lost attempt."""
    try:
        try:
            raise OperationalError("server closed the connection unexpectedly")
        except OperationalError:
            raise IntegrityError("no longer at position 40") from None
    except IntegrityError as error:
        return error


def test_a_step_is_run_again_until_the_database_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    retry = OutageRetry([])
    assert retry(failing(3, lambda: OperationalError("gone"))) == "done after 4"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert all(not r.exc_info and "\n" not in r.getMessage() for r in warnings)
    assert "the same as before" in warnings[1].getMessage()
    assert len(retry.pauses) == 1
    assert "going on after" in caplog.records[-1].getMessage()


def test_a_read_only_refusal_leaves_the_server_then_runs_again() -> None:
    left: list[bool] = []
    retry = OutageRetry([], leave=lambda: left.append(True))
    assert retry(failing(1, read_only_refusal)) == "done after 2"
    assert left == [True]


def test_a_write_that_committed_before_its_link_was_lost_is_run_again() -> None:
    assert is_outage(committed_before_its_link_was_lost())
    assert not is_outage(IntegrityError("no longer at position 40"))
    assert OutageRetry([])(failing(1, committed_before_its_link_was_lost))


def test_an_error_of_the_step_itself_is_raised_at_once() -> None:
    with pytest.raises(ProgrammingError):
        OutageRetry([])(failing(1, lambda: ProgrammingError("no such table")))


def test_the_guard_checks_in_full_after_a_failure_or_when_asked() -> None:
    checks: list[bool] = []
    retry = OutageRetry([], guard=checks.append)
    retry(failing(1, lambda: OperationalError("gone")))
    retry(lambda: None)
    retry(lambda: None, check=True)
    assert checks == [False, True, False, True]


def test_it_gives_up_once_the_database_has_failed_for_patience_seconds() -> None:
    retry = OutageRetry([], patience=0.5)
    with pytest.raises(GaveUp, match=r"failed for 0.5s on end \(last: lost the link"):
        retry(failing(1000, lambda: OperationalError("gone")))
