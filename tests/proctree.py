"""Processes as /proc shows them, for tests that crash servers on purpose: a
process's children and descendants, whether it still runs, and the kill -9 of a
postmaster or of a whole tree, waiting until they have gone."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def parent_of(pid: int) -> int | None:
    """The parent's pid, or None when the process has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    """The processes whose parent is pid (a postmaster's backends, its workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below pid: its children, theirs, and so on."""
    found: list[int] = []
    generation = children(pid)
    while generation:
        found += generation
        generation = [child for parent in generation for child in children(parent)]
    return found


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody reaped yet does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout: float) -> None:
    """Waits for the processes to end; kills the ones that will not."""
    deadline = time.monotonic() + timeout
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    # A backend that missed its postmaster's death: finish the crash.
    for pid in filter(alive, pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_postmaster(pid: int, timeout: float = 30) -> None:
    """kill -9 of a postmaster, as a crash would; returns once it and its
    backends have gone, so that nobody holds its shared memory or answers on a
    connection after the "crash"."""
    # Stopped first, so that it forks no backend between the count of its
    # children and its death: one forked then would outlive it unseen.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    backends = children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone([pid, *backends], timeout)


def kill_tree(pid: int, timeout: float = 30) -> None:
    """kill -9 of a process and of everything below it; returns once all have
    gone. Each is stopped first, so that none forks a process that escapes."""
    everyone = [pid]
    for _ in range(3):  # what was forked while the first ones were stopped
        for each in everyone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGSTOP)
        everyone = [pid, *descendants(pid)]
    for each in everyone:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    wait_gone(everyone, timeout)
