"""The 503 gate: while the database is down, requests are answered at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresDatastore

from pocket.application import Pocket
from pocket.database import Database
from pocket.postgres_pool import connect_kwargs, replace_connections

log = logging.getLogger(__name__)


class DatabaseUnavailable(OperationalError):
    """The database is known to be down; requests are answered without waiting."""


class DatabaseGate:
    """Lets requests through only while the database answers.

    The first request to meet a dead database trips the gate; from then on the
    API answers 503 at once, without waiting on connection timeouts, while a
    background probe checks every half second and reopens the gate when the
    database is back.
    """

    def __init__(self, probe: Callable[[], None] | None, interval: float = 0.5) -> None:
        self.probe = probe
        self.interval = interval
        self.down = threading.Event()
        # How many times the gate closed since the process started (for metrics).
        self.trips = 0
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raises DatabaseUnavailable while the database is known to be down."""
        if self.down.is_set():
            raise DatabaseUnavailable("The database is unavailable")

    def trip(self) -> None:
        """Marks the database down and starts probing for its return."""
        if self.probe is None:
            return
        with self._lock:
            if self.down.is_set():
                return
            self.down.set()
            self.trips += 1
        log.warning("Database unreachable: answering 503 until it is back")
        threading.Thread(target=self._wait_for_return, daemon=True).start()

    def _wait_for_return(self) -> None:
        assert self.probe is not None
        while True:
            try:
                self.probe()
            except Exception:  # Any failure means: still down.
                time.sleep(self.interval)
                continue
            self.down.clear()
            log.info("Database reachable again: serving")
            return


def database_probe(pocket: Pocket) -> Callable[[], None] | None:
    """A cheap check that the database answers (None for an SQLite file)."""
    datastore = Database.of(pocket).datastore
    if not isinstance(datastore, PostgresDatastore):
        return None
    kwargs = connect_kwargs(datastore)

    def probe() -> None:
        with psycopg.connect(connect_timeout=2, **kwargs) as conn:
            conn.execute("SELECT 1")
        # Back: the pool's connections from before are dead; the next requests
        # must not each find one of them.
        replace_connections(datastore)

    return probe
