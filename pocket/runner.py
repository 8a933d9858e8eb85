"""The library's multi-threaded runner, extended where Pocket needs more of it.

The library's MultiThreadedRunner gives each follower a thread that pulls when
its leader saves in the same process. Pocket needs more, and extends it here, in
one place:
- a thread that survives: an error (the database restarting, a lost link) is
  logged and retried with back-off, where the library's thread ends for good;
- a wake-up from other processes (`pocket follow` saves nothing itself):
  PostgreSQL's NOTIFY, on a LISTEN connection that reconnects, or a poll on SQLite;
- one active follower per version across processes: a lock that the database or
  the kernel releases when its holder dies, the others standing by;
- a failover followed: a follower whose server stops taking writes (a primary
  fenced read-only, or demoted) leaves it and gives its lock up, and one that takes
  the lock starts on fresh connections, which a multi-host URL's
  target_session_attrs=read-write sends to the primary;
- the live version: only the live version's projector applies events, and the
  others wait until pocket migrate makes theirs live.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from eventsourcing.system import (
    MultiThreadedRunner,
    MultiThreadedRunnerThread,
    Runner,
    System,
)
from eventsourcing.utils import EnvType

from pocket.amqp import BrokerUnavailable
from pocket.application import Pocket
from pocket.broker import EventPublisher
from pocket.catalog import ProjectionCatalog
from pocket.commands import ExpireHold, expiry_key
from pocket.database import Database
from pocket.domainmodel import Cause, correlation_id, utcnow
from pocket.errors import HoldEnded, HoldNotDue, HoldNotFound, PocketError
from pocket.expiry import EXPIRY_TICK_SECONDS
from pocket.locks import ProcessLock, process_lock
from pocket.postgres_pool import connect_kwargs, refused_as_read_only
from pocket.system import HoldExpiry, SectionFollower, WalletRecords, WebhookFeed
from pocket.walletrecords import ProjectionSwitched
from pocket.webhook_replay import replay_step
from pocket.webhooks import Dispatcher, WebhookSettings

log = logging.getLogger(__name__)
# A lock holder checks that it still holds its lock, and that its version is
# still live, this often (not every round: each check is a round trip, and
# neither is what keeps an event from being applied twice or by a version that
# is not live; the compare-and-set of the position and the live check in the
# batch's own transaction are).
LOCK_CHECK_SECONDS = 2.0
# After a round that applied events, an active follower lets this long pass
# before the next, so that under load each round applies what arrived meanwhile
# in one transaction (a wake-up per commit would apply a few events at a time,
# each round paying its fixed cost). The first event after a quiet spell is
# applied at once; under load, the projection lags by at most this, plus a round.
GATHER_SECONDS = 0.2
# Followers nobody waits on by the tenth of a second gather longer: each round
# has a fixed cost (about 0.7 ms of CPU: its read, its transaction, their own
# queries), paid five times a second under load at 0.2 s. The hold-expiry
# follower (its bound is EXPIRY_BOUND_SECONDS; it looks for due holds on its own
# tick) and the webhook follower while no subscription exists (a new one starts
# at the log's head: it misses nothing, its first deliveries come at most this
# much later).
LONG_GATHER_SECONDS = 1.0
# A version that is not live looks again this often (a switch sends no NOTIFY).
STANDBY_SECONDS = 1.0
# A follower standing by tries for the lock at least this long apart, however
# often writes prompt it (its takeover comes at most this much later).
STANDBY_FLOOR_SECONDS = 0.25
# What a projector thread does: applies events (it holds its version's lock),
# waits for the lock (another follower holds it), or waits for its version to
# become live.
ACTIVE, STANDBY, NOT_LIVE = "active", "standby", "not_live"
# The longest the broker publisher waits before trying a broker again.
BROKER_BACKOFF_SECONDS = 10.0
ROLES = (ACTIVE, STANDBY, NOT_LIVE)


class PocketRunner(MultiThreadedRunner[UUID]):
    """Runs Pocket's system: Pocket, and a thread per version of the projector."""

    def __init__(
        self,
        system: System,
        env: EnvType | None = None,
        *,
        batch_size: int | None = None,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__(system, env)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.listener: Listener | None = None

    @property
    def pocket(self) -> Pocket:
        """The application every command goes through."""
        return self.get(Pocket)

    @property
    def projectors(self) -> list[WalletRecords]:
        """The projector of each version, as this runner constructed them."""
        return [f for f in self.followers if isinstance(f, WalletRecords)]

    @property
    def followers(self) -> list[SectionFollower]:
        """Every follower of Pocket's log: the projectors, the hold-expiry one."""
        return [
            cast(SectionFollower, self.apps[name]) for name in self.system.followers
        ]

    def start(self) -> None:
        """Makes the live version's tables, then starts a thread per projector."""
        Runner.start(self)
        pocket = self.pocket
        if not self.projectors:
            return
        catalog = ProjectionCatalog(Database.of(pocket))
        catalog.ensure()
        listens = isinstance(pocket.recorder, PostgresApplicationRecorder)
        for projector in self.followers:
            if self.batch_size:
                projector.batch_size = min(self.batch_size, pocket.log_section_size)
            projector.follow(pocket.name, pocket.notification_log)
            arguments = (
                catalog,
                self._lock_for(projector),
                self.poll_interval or (30.0 if listens else 0.5),
                self.has_errored,
            )
            thread: FollowerThread
            if isinstance(projector, HoldExpiry):
                thread = ExpiryThread(
                    projector, *arguments, pocket=pocket, leave_server=self.leave_server
                )
            elif isinstance(projector, EventPublisher):
                thread = PublisherThread(
                    projector, *arguments, leave_server=self.leave_server
                )
            elif isinstance(projector, WebhookFeed):
                thread = WebhookThread(
                    projector, *arguments, leave_server=self.leave_server
                )
            else:
                assert isinstance(projector, WalletRecords)
                thread = ProjectorThread(
                    projector, *arguments, leave_server=self.leave_server
                )
            self.threads[projector.name] = thread
            pocket.lead(thread)
            thread.start()
        if isinstance(pocket.recorder, PostgresApplicationRecorder):
            self.listener = Listener(pocket.recorder, self.prompt)
            self.listener.start()

    def leave_server(self) -> None:
        """Replaces every connection of the applications (their pools, the LISTEN
        one), for new ones that find the primary: the server they are on took no
        writes (a fenced old primary), or may be another than the lock's."""
        for app in self.apps.values():
            Database.of(app).leave_server()
        if self.listener is not None:
            self.listener.listen_again()

    def prompt(self) -> None:
        """Wakes every projector (another process saved events)."""
        for thread in self.threads.values():
            thread.is_prompted.set()

    def live_position(self) -> int | None:
        """How far in Pocket's log the live version of wallet_records is."""
        live = ProjectionCatalog(Database.of(self.pocket)).live_version()
        (projector,) = [p for p in self.projectors if p.version == live]
        return projector.position

    def stop_threads(self, timeout: float = 10.0) -> None:
        """Stops the threads, each after the transaction in hand."""
        if self.listener is not None:
            self.listener.stopping.set()
        for thread in self.threads.values():
            thread.stop()
        for thread in self.threads.values():
            thread.join(timeout)
        if self.listener is not None:
            self.listener.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the threads, then closes the applications."""
        self.stop_threads(timeout)
        for app in self.apps.values():
            app.close()
        self.apps.clear()

    def _lock_for(self, projector: SectionFollower) -> ProcessLock:
        db = Database.of(self.pocket)
        path = self.pocket.env.get("SQLITE_DBNAME")
        return process_lock(db.datastore, path, follower_lock_name(projector.name))


def follower_lock_name(projector: str) -> str:
    """The name of the lock that one follower of a version holds."""
    return f"follower-{projector}"


class FollowerThread(MultiThreadedRunnerThread[UUID]):
    """Follows Pocket's log for one follower, for as long as the runner runs: it
    takes the follower's lock, applies while it may (see ProjectorThread), and
    backs off and tries again after any failure."""

    # How long to let pass after a round that applied events (a test may set
    # an instance's).
    gather = GATHER_SECONDS

    def __init__(
        self,
        projector: SectionFollower,
        catalog: ProjectionCatalog,
        lock: ProcessLock,
        poll_interval: float,
        has_errored: threading.Event,
        *,
        leave_server: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(follower=projector, has_errored=has_errored)
        self.name = f"pocket-{projector.name}"
        self.projector = projector
        self.catalog = catalog
        self.lock = lock
        self.poll_interval = poll_interval
        self.leave_server = leave_server
        self.failures = 0
        # What this thread does now (ACTIVE, STANDBY or NOT_LIVE; None until its
        # first round), and how many rounds failed since it started (for metrics).
        self.role: str | None = None
        self.failed_rounds = 0
        # When (monotonic) the lock and the live version were last checked.
        self.checked_at = -math.inf

    def stop(self) -> None:
        """Stops after the transaction in hand."""
        self.projector.stopping.set()
        super().stop()

    def run(self) -> None:
        self.has_started.set()
        while not self.is_stopping.is_set():
            self.is_prompted.clear()
            applied = 0
            try:
                wait, applied = self._step()
            except ProjectionSwitched as switched:
                log.info("%s: %s; standing by", self.projector.name, switched)
                self.checked_at = -math.inf
                wait = 0.0
            except Exception as error:
                self.checked_at = -math.inf
                wait = self._failed(error)
            else:
                if self.failures:
                    # Not "recovered" alone: after a read-only refusal it may
                    # be waiting for a primary, not applying.
                    now = "applying events" if self.role == ACTIVE else "standing by"
                    log.info(
                        "Follower answered again after %d failed attempt(s); %s",
                        self.failures,
                        now,
                    )
                    self.failures = 0
            if self.role == NOT_LIVE:
                # Every write prompts every thread, but a switch of the live
                # version sends nothing: a version that is not live looks again
                # on its own clock, not once per write.
                self.is_stopping.wait(wait)
                continue
            if self.role == STANDBY:
                # Each write's NOTIFY prompts every thread: a standby tries for
                # the lock at most this often, not once per write.
                self.is_stopping.wait(STANDBY_FLOOR_SECONDS)
                wait = max(0.0, wait - STANDBY_FLOOR_SECONDS)
            elif applied:
                # Gathers the events that arrive meanwhile into the next round.
                self.is_stopping.wait(self.gathering())
            self.is_prompted.wait(wait)
        self.stand_down()
        self.lock.release()

    def gathering(self) -> float:
        """How long to let pass after a round that applied events."""
        return self.gather

    def stand_down(self) -> None:
        """What a stopping follower finishes before it gives its lock up to a
        standby (nothing here; the webhook follower's tries in hand)."""

    def _step(self) -> tuple[float, int]:
        """One round: apply what there is if this version is live and the lock is
        ours; returns how long to wait for a prompt before the next round, and
        how many notifications the round applied."""
        now = time.monotonic()
        if self.role != ACTIVE or now - self.checked_at >= LOCK_CHECK_SECONDS:
            if not self._may_apply():
                return (STANDBY_SECONDS if self.role == NOT_LIVE else 1.0), 0
            self.checked_at = now
        applied = self.projector.catch_up(Pocket.name)
        return min(self.poll_interval, LOCK_CHECK_SECONDS), applied

    def _may_apply(self) -> bool:
        """Whether this version is live and the lock is ours (taking it if it is
        free); sets the role."""
        if not self._is_live():
            if self.lock.held:
                log.info("%s is no longer live: standing by", self.projector.name)
            self.lock.release()  # The lock, or the place in line for it.
            self.role = NOT_LIVE
            self.projector.forget_position()
            return False
        if not self._hold_lock():
            self._stand_by()
            self.projector.forget_position()
            return False
        if self.role != ACTIVE:
            # Another process may have applied events while this one did not.
            self.projector.forget_position()
        self.role = ACTIVE
        return True

    def _is_live(self) -> bool:
        """Whether this follower's events may be applied now (a projector's
        version must be live; other followers always may)."""
        return True

    def _hold_lock(self) -> bool:
        """Takes or keeps the right to apply events; never two followers at once."""
        gave_up = False
        if self.lock.held:
            if self.lock.is_still_held():
                return True
            gave_up = self.lock.read_only
            if gave_up:
                log.warning(
                    "Gave up the follower lock: the server takes no writes now (a "
                    "standby, or a primary fenced in a failover); looking for the "
                    "primary"
                )
            else:
                log.warning("Lost the follower lock (connection dropped)")
        taken = self.lock.try_acquire()
        if taken:
            log.info("Active: this follower applies %s now", self.projector.name)
        if taken or gave_up:
            # Fresh connections, found as the lock's was: a pooled one may be on
            # an old primary fenced read-only, which gets no new events. Once,
            # when the lock is given up and taken again in the same round.
            self.leave_server()
        return taken

    def _stand_by(self) -> None:
        """Waits for the lock where `pocket status` sees it; says so once."""
        self.lock.stand_by()
        if self.lock.read_only:
            if self.role != STANDBY:
                log.info("Waiting for a primary: the server takes no writes now")
            self.role = STANDBY
            return
        if self.role == STANDBY:
            return
        self.role = STANDBY
        try:
            holder = self.lock.holder()
        except Exception:  # Only for the message: the lock is what matters.
            holder = None
        who = f" (pid {holder['pid']} on {holder['host']})" if holder else ""
        log.info(
            "Standing by: another follower%s applies %s; this one takes over "
            "when it stops",
            who,
            self.projector.name,
        )

    def _failed(self, error: Exception) -> float:
        """Logs a failed round (nothing was applied: its batch rolled back whole)
        and returns the back-off before the next."""
        self.failures += 1
        self.failed_rounds += 1
        delay = min(30.0, 0.05 * 2.0 ** min(self.failures, 10))
        if refused_as_read_only(error):
            # Nothing here is wrong but the server: expected in a failover, so
            # one line, no traceback.
            self.leave_server()
            self.lock.release()
            log.warning(
                "The server refused the batch as read-only (a standby, or a "
                "primary fenced in a failover): left it and gave up the follower "
                "lock; looking for the primary again in %.2fs",
                delay,
            )
            return delay
        if is_connection_error(error):
            # Every pooled connection the failure broke is replaced now, not
            # found by one slow retry after another.
            self.catalog.db.replace_broken_connections()
            Database.of(self.projector).replace_broken_connections()
        # An IntegrityError means another follower moved the position.
        expected = isinstance(error, IntegrityError | OSError) or is_connection_error(
            error
        )
        log.warning(
            "Follower batch failed (%s: %s); again in %.2fs",
            type(error).__name__,
            error,
            delay,
            exc_info=not expected,
        )
        return delay


class ProjectorThread(FollowerThread):
    """Follows Pocket's log into one version of wallet_records: applies only
    while the version is live."""

    projector: WalletRecords

    def __init__(self, projector: WalletRecords, *args: Any, **kwargs: Any) -> None:
        super().__init__(projector, *args, **kwargs)

    def _is_live(self) -> bool:
        return self.catalog.live_version() == self.projector.version


class ExpiryThread(FollowerThread):
    """Runs the hold-expiry follower: keeps its table of open holds from the log
    and, while it holds the follower's lock, records each due hold's expiry
    through Pocket, under the key every follower sends it with (so it runs once
    however many send it)."""

    projector: HoldExpiry
    gather = LONG_GATHER_SECONDS

    def __init__(
        self, projector: HoldExpiry, *args: Any, pocket: Pocket, **kwargs: Any
    ) -> None:
        super().__init__(projector, *args, **kwargs)
        self.pocket = pocket
        # Expiries this thread recorded, and those another ending beat (metrics).
        self.expired = 0
        self.beaten = 0

    def _step(self) -> tuple[float, int]:
        wait, applied = super()._step()
        if self.role != ACTIVE:
            return wait, applied
        # The catch-up ended at the log's head as it stood, so the table of open
        # holds is up to date: expiries are sent after every round, applied or
        # not (under writes that never pause, every round applies some events).
        self.expire_due()
        soonest = self.projector.next_expiry()
        if soonest is not None:
            wait = min(wait, max(0.0, (soonest - utcnow()).total_seconds()))
        return min(wait, EXPIRY_TICK_SECONDS), applied

    def _failed(self, error: Exception) -> float:
        # A projector backs off up to 30 s; expiries have a bound to keep, so
        # this one tries again at least this often once the database is back.
        return min(super()._failed(error), 2 * EXPIRY_TICK_SECONDS)

    def expire_due(self) -> int:
        """Records the expiry of each open hold whose time has come; returns how
        many it recorded. One whose hold ended first (a capture, a void, another
        follower's expiry) is dropped: the ending's event removes it from the
        table of open holds."""
        expired = 0
        for due in self.projector.due(utcnow()):
            if self.is_stopping.is_set():
                break
            command = ExpireHold(
                wallet_id=due.wallet_id,
                hold_id=due.hold_id,
                command_id=expiry_key(due.hold_id),
                cause=Cause(actor="system", correlation_id=correlation_id()),
            )
            try:
                answer = self.pocket.expire_hold(command)
            except (HoldEnded, HoldNotDue):
                self.beaten += 1
                continue
            except HoldNotFound:
                log.warning("Hold %s to expire is not in its wallet", due.hold_id)
                continue
            except PocketError as error:
                log.warning("Hold %s not expired: %s", due.hold_id, error)
                continue
            if answer.replayed:  # Another follower recorded it.
                self.beaten += 1
                continue
            expired += 1
        self.expired += expired
        return expired


class PublisherThread(FollowerThread):
    """Runs the broker publisher. A broker that is down, refuses or is slow fails
    only this thread's rounds: each backs off and starts again from the position,
    which moved only past what the broker confirmed."""

    projector: EventPublisher

    def _step(self) -> tuple[float, int]:
        if self.role == ACTIVE:
            self.projector.broker.keep_alive()  # Its heartbeats, between rounds.
        return super()._step()

    def _failed(self, error: Exception) -> float:
        if not isinstance(error, BrokerUnavailable):
            return super()._failed(error)
        self.failures += 1
        self.failed_rounds += 1
        delay = min(BROKER_BACKOFF_SECONDS, 0.25 * 2.0 ** min(self.failures, 6))
        log.warning(
            "Publishing to the broker failed (%s); the position stays, again in %.2fs",
            error,
            delay,
        )
        return delay


class WebhookThread(FollowerThread):
    """Runs the webhook follower: queues each section's deliveries and, while it
    holds the follower's lock, the replays operators ask for, and keeps the
    senders (pocket.webhooks.Dispatcher) running in this process."""

    projector: WebhookFeed

    def __init__(self, projector: WebhookFeed, *args: Any, **kwargs: Any) -> None:
        super().__init__(projector, *args, **kwargs)
        self.dispatcher: Dispatcher | None = None
        self.settings = WebhookSettings.from_env(projector.env)
        # Tries by outcome, of every dispatcher this thread ran (for metrics).
        self.sent: dict[str, int] = {"delivered": 0, "failed": 0, "parked": 0}

    def _step(self) -> tuple[float, int]:
        wait, applied = super()._step()
        if self.role != ACTIVE:
            self.stop_sending()
            return wait, applied
        replayed = replay_step(self.projector)
        if self.dispatcher is None or not self.dispatcher.is_alive():
            self.dispatcher = Dispatcher(
                Database.of(self.projector), self.settings, self.sent
            )
            self.dispatcher.start()
        if applied or replayed:
            self.dispatcher.wake()
        return (0.0 if replayed else wait), applied

    def gathering(self) -> float:
        if self.projector.subscribed:
            return self.gather
        return max(self.gather, LONG_GATHER_SECONDS)

    def stop_sending(self) -> None:
        """Stops the senders (another process's follower sends now, or this one
        is stopping), and waits for them: a sender still using a connection
        when the runner closes the applications' pools would crash the process."""
        if self.dispatcher is not None:
            self.dispatcher.stop()
            # A delivery in flight takes the timeout at most.
            self.dispatcher.join(self.settings.timeout + 2)
            self.dispatcher = None

    def stand_down(self) -> None:
        # A standby that took the lock at once would send the tries in hand
        # again, as first tries: they are finished and recorded first.
        self.stop_sending()

    def join(self, timeout: float | None = None) -> None:
        # Stopping, it waits for its tries in hand (the webhook timeout at most)
        # and records them: the runner closes the pools only after that.
        if timeout is not None:
            timeout = max(timeout, self.settings.timeout + 5)
        super().join(timeout)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.stop_sending()


def is_connection_error(error: BaseException) -> bool:
    """Whether an error says the database could not be reached."""
    return isinstance(
        error, OperationalError | InterfaceError | psycopg.OperationalError
    )


class Listener(threading.Thread):
    """Prompts the projectors on each NOTIFY of Pocket's events channel.

    The library's subscription ends for good on a dropped connection; this keeps
    a LISTEN connection of its own and reconnects.
    """

    def __init__(
        self, recorder: PostgresApplicationRecorder, notify: Callable[[], None]
    ) -> None:
        super().__init__(name="pocket-listen", daemon=True)
        self.datastore: PostgresDatastore = recorder.datastore
        self.channel = recorder.channel_name
        self.notify = notify
        self.stopping = threading.Event()
        # Set: leave the server listened on, for the one a new connection finds.
        self.moving = threading.Event()
        self.gather = GATHER_SECONDS

    def listen_again(self) -> None:
        """Reconnects (within a second): after a failover the old server, if it
        still runs, hears no new events."""
        self.moving.set()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as error:
                failures += 1
                delay = min(10.0, 0.2 * 2 ** min(failures, 6))
                log.warning("LISTEN connection lost (%s); again in %.1fs", error, delay)
                self.stopping.wait(delay)

    def _listen(self) -> None:
        kwargs = connect_kwargs(self.datastore)
        self.moving.clear()
        with psycopg.connect(autocommit=True, connect_timeout=5, **kwargs) as conn:
            conn.execute(
                psycopg.sql.SQL("LISTEN {}").format(
                    psycopg.sql.Identifier(self.channel)
                )
            )
            # Events written while nobody listened are found by this pull.
            self.notify()
            while not self.stopping.is_set() and not self.moving.is_set():
                heard = False
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    heard = True
                if heard:
                    self.notify()
                    self._gather(conn)

    def _gather(self, conn: psycopg.Connection[Any]) -> None:
        """While writes keep coming: pauses for the gathering time, then takes
        every NOTIFY that arrived meanwhile at once and prompts once for them.

        Every write sends a NOTIFY; heard one at a time (a Python object each,
        from psycopg's notifies()) they cost more than applying their events.
        Only their arrival matters, so they are read from libpq and dropped.
        """
        pgconn = conn.pgconn
        while not self.stopping.is_set() and not self.moving.is_set():
            self.stopping.wait(self.gather)
            pgconn.consume_input()  # Raises on a lost connection: run() retries.
            arrived = False
            while pgconn.notifies() is not None:
                arrived = True
            if not arrived:
                return  # Quiet: back to waiting for the next one.
            self.notify()


def open_runner(system: System, env: dict[str, str], **options: Any) -> PocketRunner:
    """Constructs the runner (and so the applications, creating the library's
    tables), retrying when another process creates them at the same moment."""
    attempts = 5
    for attempt in range(attempts):
        try:
            return PocketRunner(system, env, **options)
        except IntegrityError:
            # Two processes creating the library's tables on an empty PostgreSQL
            # database at the same moment collide on pg_type; the loser retries.
            if attempt == attempts - 1:
                raise
            threading.Event().wait(0.2 * (attempt + 1))
    raise AssertionError  # pragma: no cover
