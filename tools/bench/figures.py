"""What a benchmark run is asked to do (its sizes) and what it finds (its figures
and notes), and the load every measurement shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pocket.cli import SERVE_THREADS

# Concurrent callers: threads of the Python API, wrk's connections, a server's
# threads (pocket serve's default, which its benchmark runs keep).
CALLERS = SERVE_THREADS


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    commands: int = 4000
    http_seconds: int = 8  # each wrk run (wrk takes whole seconds)
    events: int = 200_000
    per_event_events: int = 2_000
    history_events: int = 100_000
    raw_inserts: int = 3_000
    raw_upserts: int = 200_000
    repeats: int = 5
    live_seconds: int = 10  # the follower live, at a steady pace


TINY = Sizes(
    commands=64,
    http_seconds=1,
    events=600,
    per_event_events=40,
    history_events=250,
    raw_inserts=50,
    raw_upserts=2_000,
    repeats=2,
    live_seconds=1,
)


@dataclass
class Results:
    """One backend's figures (None where a figure could not be measured), and
    what they alone do not say: a figure left out and why, the money checked."""

    backend: str
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        """Records a figure."""
        self.figures[name] = value

    def note(self, line: str) -> None:
        """Records a line for under the table."""
        self.notes.append(line)


def rate(count: int, started: float) -> float:
    """Things per second since started."""
    return count / max(time.perf_counter() - started, 1e-9)
