"""Group commit: commands that arrive together are decided in memory against their
wallets and saved in one transaction, each caller still getting its own answer.

PostgreSQL serializes writers to one event store (the library locks the table),
so more threads do not make more commits: batching does. One committer thread per
application takes every command waiting, decides each in arrival order against
the wallets as the last commit left them, and saves all their events (and their
idempotency records) at once. Wallets are decided from a cache; a save that meets
another process's newer events fails as a whole, the stale wallets are reloaded
and the batch is decided again, so a conflict costs a retry, never a wrong answer.
A refusal (which saves nothing, so cannot conflict) is checked against the
database before it is given.

Each cached wallet keeps the SHA-256 of the stored event it was last decided or
loaded at (its head), and a save sends it along: the database refuses, as a
conflict, events decided on a history it does not hold (one a failover lost),
so a stale cache costs a retry, never money that is not there.

No wait is unbounded: the commit itself is interrupted past the commit timeout
(pocket.postgres), and once a commit has been waiting STALLED_SECONDS, the
callers waiting behind it, and new ones, are answered at once (503), so that a
database that does not confirm writes (a synchronous standby gone) holds one of
the server's threads, not all of them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from pocket.deadlines import STALLED_SECONDS, WriteNotConfirmed, WritesStalled
from pocket.domainmodel import Wallet
from pocket.errors import ConcurrencyConflict, PocketError
from pocket.guards import GuardsBroken, TokenGuard

log = logging.getLogger(__name__)
R = TypeVar("R")
# After a conflict, how long batches read their cached wallets' newer events first.
CONTENDED_SECONDS = 10.0
# How often a caller waiting for its answer looks whether the commit has stalled.
WAIT_TICK_SECONDS = 0.05
# Wallets as a load found them, each with its head: the SHA-256 of the stored
# state of its last event (None where the load could not tell).
Loaded = dict[UUID, tuple[Wallet, bytes | None]]


@dataclass(eq=False)
class Command(Generic[R]):
    """One caller's command, waiting for the committer's answer."""

    wallet_ids: Sequence[UUID]
    decide: Callable[[list[Wallet]], R]
    # The result of an earlier run with the same idempotency key, if any.
    replay: Callable[[], R | None]
    # What to save beside the wallets' events (an idempotency record), if anything.
    record: Callable[[R], Aggregate | None]
    # What must still hold when the batch commits (the caller's token), if anything.
    guard: TokenGuard | None = None
    # The stored aggregate an earlier run's result is read from (its record).
    record_id: UUID | None = None
    outcome: Any = None
    failed: bool = False
    # Set (with done) when this command's caller must lead the next commit.
    promoted: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def succeed(self, result: R) -> None:
        """Answers the caller."""
        self.outcome, self.failed = result, False
        self.done.set()

    def fail(self, error: BaseException) -> None:
        """Answers the caller with an error."""
        self.outcome, self.failed = error, True
        self.done.set()


@dataclass(frozen=True)
class WritesHealth:
    """Whether this process's writes go through: None, or since when (a Unix
    time) they have not, and why."""

    stuck_since: float | None = None
    why: str = ""


@dataclass(frozen=True)
class CommitStats:
    """How commits have gone: how many batches held how many commands, and how
    many times a batch met another writer's newer events and was decided again."""

    batch_sizes: dict[int, int]
    retries: int
    # Batches answered 503 because the database did not confirm them in time.
    unconfirmed: int = 0


@dataclass(frozen=True)
class Decision:
    """What one command came to in a batch."""

    outcome: Any
    failed: bool
    # What to save beside the wallets' events (an idempotency record), if anything.
    record: Aggregate | None = None
    # Answered from an earlier run's record.
    replayed: bool = False


class Retry(Exception):
    """The batch met newer events written elsewhere: decide it again."""


class Poisoned(Exception):
    """A command failed after changing its wallets in memory."""

    def __init__(self, command: Command[Any], error: BaseException) -> None:
        super().__init__(str(error))
        self.command = command
        self.error = error


class GroupCommitter:
    """Decides and saves this process's wallet commands, many to a transaction.

    No thread of its own: the first caller to find nobody committing becomes
    the leader, commits every command waiting (its own among them), and hands
    the lead to a waiting caller if more arrived meanwhile. Callers who arrive
    while a commit is in flight wait to be answered.
    """

    def __init__(
        self,
        load: Callable[[UUID], Wallet],
        save: Callable[..., Any],
        has_newer_events: Callable[[Wallet], bool],
        *,
        guard_failed: Callable[[TokenGuard], BaseException] | None = None,
        load_many: Callable[[set[UUID]], Loaded] | None = None,
        refresh: Callable[
            [dict[UUID, Wallet], dict[UUID, bytes]],
            tuple[dict[UUID, bytes], set[UUID]],
        ]
        | None = None,
        max_batch: int = 256,
        max_attempts: int = 12,
        cache_size: int = 10_000,
        linger: float = 0.001,
        stalled_seconds: float = STALLED_SECONDS,
        deadline: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.load = load
        # Many wallets in one read (where the store can), else one load each.
        self.load_many = load_many
        # Brings cached wallets up to date with events written elsewhere, in one
        # read: used while another process writes the same wallets.
        self.refresh = refresh
        # Until when (monotonic) batches refresh their cached wallets first: a
        # conflict says another process is writing this process's wallets.
        self.contended_until = 0.0
        self.save = save
        self.has_newer_events = has_newer_events
        # The error a command whose guard no longer held is answered with.
        self.guard_failed = guard_failed or PermissionError
        self.max_batch = max_batch
        self.max_attempts = max_attempts
        self.cache_size = cache_size
        # Wallets as this process last saved or loaded them, and their heads
        # (see the module's docstring); only the leader (one caller at a time)
        # reads or writes them.
        self.cache: OrderedDict[UUID, Wallet] = OrderedDict()
        self.heads: dict[UUID, bytes] = {}
        # Since when (monotonic) the save in flight has been waiting, and after
        # how long that counts as stalled (never, where nothing bounds saves).
        self.committing_since: float | None = None
        self.stalled_seconds = stalled_seconds
        # What bounds the database work of one batch (its reads and its save):
        # pocket.deadlines on PostgreSQL.
        self.deadline = deadline
        # The last batch's failure to be confirmed (a Unix time and why), until
        # a batch goes through.
        self.unconfirmed: tuple[float, str] | None = None
        self.unconfirmed_batches = 0
        self.lock = threading.Lock()
        self.pending: list[Command[Any]] = []
        self.leading = False
        self.linger = linger
        self.expected = 0
        # How many transactions carried how many commands (for benchmarks and
        # metrics), and how often a batch met newer events and was decided again.
        self.batches = 0
        self.commands = 0
        self.batch_sizes: Counter[int] = Counter()
        self.retries = 0

    def run(self, command: Command[R]) -> R:
        """Runs a command in the next group commit and returns its answer.

        Raises WritesStalled if the commit in flight has stalled (the command is
        not sent), or WriteNotConfirmed if its own commit stalls (it may yet
        be made: a resend with its key makes it exactly once).
        """
        with self.lock:
            if self._stalled():
                raise WritesStalled(self._stalled_why())
            self.pending.append(command)
            lead = not self.leading
            self.leading = True
        while True:
            if lead:
                self._lead()
            else:
                self._wait(command)
            if not command.promoted:
                break
            # The previous leader handed the lead over: commit for the others.
            command.promoted = False
            command.done.clear()
            lead = True
        if command.failed:
            raise command.outcome
        result: R = command.outcome
        return result

    def health(self) -> WritesHealth:
        """Whether this process's writes go through now."""
        with self.lock:
            since = self.committing_since
            if since is not None and time.monotonic() - since > self.stalled_seconds:
                started = time.time() - (time.monotonic() - since)
                return WritesHealth(started, "a commit has not been confirmed yet")
            if self.unconfirmed is not None:
                return WritesHealth(*self.unconfirmed)
        return WritesHealth()

    def _wait(self, command: Command[Any]) -> None:
        """Waits for the answer, or the lead, for as long as commits go through."""
        while not command.done.wait(WAIT_TICK_SECONDS):
            with self.lock:
                if command.done.is_set() or not self._stalled():
                    continue
                if command in self.pending:
                    # Not sent: it never will be.
                    self.pending.remove(command)
                    raise WritesStalled(self._stalled_why())
            # In the batch being committed: it may yet be made. The caller
            # hears so now, and its thread is free; the commit goes on.
            msg = "The database has not confirmed the write yet"
            raise WriteNotConfirmed(msg)

    def _stalled(self) -> bool:
        """Whether the commit in flight has been waiting too long (under the lock)."""
        since = self.committing_since
        return since is not None and time.monotonic() - since > self.stalled_seconds

    def _stalled_why(self) -> str:
        assert self.committing_since is not None
        waited = time.monotonic() - self.committing_since
        return f"The database has not confirmed a write for {waited:.1f} s"

    def stop(self) -> None:
        """Reports how well commits were grouped (there is no thread to stop)."""
        if self.batches:
            log.debug(
                "Group commit: %d commands in %d transactions (%.1f each)",
                self.commands,
                self.batches,
                self.commands / self.batches,
            )

    def stats(self) -> CommitStats:
        """How commits have gone so far in this process."""
        with self.lock:
            return CommitStats(
                dict(self.batch_sizes), self.retries, self.unconfirmed_batches
            )

    def _lead(self) -> None:
        """Commits one batch of waiting commands, then passes the lead on."""
        # The callers of the last batch are likely on their way back with their
        # next command: wait a moment for them, so they share this commit.
        deadline = time.monotonic() + self.linger
        while len(self.pending) < self.expected and time.monotonic() < deadline:
            time.sleep(0.00005)
        with self.lock:
            batch = self.pending[: self.max_batch]
            del self.pending[: self.max_batch]
            waiting = len(self.pending)
        if batch:
            self._commit(batch)
        self.expected = len(batch) + waiting if len(batch) > 1 else 0
        with self.lock:
            if batch:  # Counted under the lock, so that stats() reads them whole.
                self.batches += 1
                self.commands += len(batch)
                self.batch_sizes[len(batch)] += 1
            if self.pending:
                # Commands arrived during the commit: their first caller leads.
                successor = self.pending[0]
                successor.promoted = True
                successor.done.set()
            else:
                self.leading = False

    def _commit(self, batch: list[Command[Any]]) -> None:
        """Decides and saves a batch within its deadline."""
        with self.deadline():
            self._commit_all(batch)

    def _commit_all(self, batch: list[Command[Any]]) -> None:
        """Decides and saves a batch, retrying it whole; isolates a stubborn one."""
        attempt = 0
        while attempt < self.max_attempts:
            try:
                self._attempt(batch)
            except Poisoned as poisoned:
                # One command broke its wallets' state: it alone fails, and the
                # rest are decided again from fresh wallets.
                poisoned.command.fail(poisoned.error)
                batch = [c for c in batch if c is not poisoned.command]
                continue
            except GuardsBroken as broken:
                batch = self._fail_broken(batch, broken)
                continue
            except (IntegrityError, Retry):
                attempt += 1
                self.retries += 1
                self.contended_until = time.monotonic() + CONTENDED_SECONDS
                if len(batch) > 1 and attempt >= 2:
                    # Let each command meet its own conflict alone.
                    for command in batch:
                        self._commit_all([command])
                    return
                pause(attempt)
                continue
            except Exception as error:  # The database failed: every caller hears.
                # What was committed is not known.
                self.cache.clear()
                self.heads.clear()
                if isinstance(error, WriteNotConfirmed | WritesStalled):
                    self.unconfirmed = (time.time(), error.why)
                    self.unconfirmed_batches += 1
                for command in batch:
                    if not command.done.is_set():
                        command.fail(error)
                return
            self.unconfirmed = None
            return
        for command in batch:
            if not command.done.is_set():
                command.fail(ConcurrencyConflict(command.wallet_ids[0]))

    def _fail_broken(
        self, batch: list[Command[Any]], broken: GuardsBroken
    ) -> list[Command[Any]]:
        """Nothing was written: the commands whose guards broke (their tokens were
        replaced) fail; returns the rest, to be decided again."""
        for command in batch:
            if command.guard is not None and broken.broke(command.guard):
                command.fail(self.guard_failed(command.guard))
        return [c for c in batch if not c.done.is_set()]

    def _attempt(self, batch: list[Command[Any]]) -> None:
        live = [c for c in batch if not c.done.is_set()]
        if self.refresh and time.monotonic() < self.contended_until:
            # Other processes write these wallets too: rather than meet their
            # events as a conflict that fails the whole batch, read them first.
            self._refresh({i for c in live for i in c.wallet_ids if i in self.cache})
        # The batch's wallets that are not cached, read at once: one read per
        # batch, whether one of its wallets is new to this process or fifty.
        missing = {i for c in live for i in c.wallet_ids if i not in self.cache}
        loaded = self.load_many(missing) if missing and self.load_many else {}
        wallets = {wallet_id: wallet for wallet_id, (wallet, _) in loaded.items()}
        heads = {i: head for i, (_, head) in loaded.items() if head is not None}
        from_cache: set[UUID] = set()
        decisions = [self._decide(c, wallets, from_cache) for c in live]
        extra = [d.record for d in decisions if d.record is not None]
        guards = [c.guard for c in live if c.guard is not None]
        answered = [
            c.record_id
            for c, d in zip(live, decisions, strict=True)
            if d.replayed and c.record_id is not None
        ]
        changed = [w for w in wallets.values() if w.pending_events]
        for wallet_id in from_cache:
            if wallet_id in self.heads:
                heads[wallet_id] = self.heads[wallet_id]
        if changed or extra or guards or answered:
            priors = {w.id: heads[w.id] for w in changed if w.id in heads}
            try:
                recordings = self._save(changed, extra, guards, priors, answered)
            except BaseException:
                self._forget(wallets)
                raise
            heads.update(heads_of(recordings, wallets))
        for wallet_id, wallet in wallets.items():
            self._remember(wallet_id, wallet, heads.get(wallet_id))
        for command, decision in zip(live, decisions, strict=True):
            if decision.failed:
                command.fail(decision.outcome)
            else:
                command.succeed(decision.outcome)

    def _refresh(self, wallet_ids: set[UUID]) -> None:
        """Brings cached wallets up to date with the events written since; a
        wallet whose cached head is not the stored event of its version (a
        failover lost it), or is not known, is dropped from the cache, to be
        read whole."""
        cached = {i: self.cache[i] for i in wallet_ids if i in self.heads}
        assert self.refresh is not None
        advanced, stale = self.refresh(cached, self.heads)
        self.heads.update(advanced)
        for wallet_id in wallet_ids - cached.keys() | stale:
            self.cache.pop(wallet_id, None)
            self.heads.pop(wallet_id, None)

    def _save(
        self,
        changed: list[Wallet],
        extra: list[Aggregate],
        guards: list[TokenGuard],
        priors: dict[UUID, bytes],
        answered: list[UUID],
    ) -> Sequence[Recording[UUID]] | None:
        """Saves a batch's events and records, with what the insert checks."""
        kwargs: dict[str, Any] = {}
        # Every answer, a refusal or a replay too, waits for its guard: a batch
        # that writes nothing still sends its guards to be checked.
        if guards:
            kwargs["guards"] = guards
        # The heads the changed wallets were decided at (see the module).
        if priors:
            kwargs["priors"] = priors
        # An answer read from an earlier run's record counts only if the
        # server that commits holds it, and once its synchronous standbys do.
        if answered:
            kwargs["answered"] = answered
        # The save is timed: once it has waited stalled_seconds (a commit that
        # waits for a standby that is gone), the callers behind it are
        # answered at once (see _wait).
        with self.lock:
            self.committing_since = time.monotonic()
        try:
            recordings: Sequence[Recording[UUID]] | None = self.save(
                *changed, *extra, **kwargs
            )
        finally:
            with self.lock:
                self.committing_since = None
        return recordings

    def _decide(
        self,
        command: Command[Any],
        wallets: dict[UUID, Wallet],
        from_cache: set[UUID],
    ) -> Decision:
        """One command against the batch's wallets: its outcome, whether it was
        refused, what to save beside its events (its idempotency record), and
        whether it was answered from an earlier run's record."""
        chosen: list[Wallet] = []
        before: list[int] | None = None
        try:
            replayed = command.replay()
            if replayed is not None:
                # Done before: nothing new to save.
                return Decision(replayed, failed=False, replayed=True)
            chosen = [self._wallet(i, wallets, from_cache) for i in command.wallet_ids]
            before = [len(w.pending_events) for w in chosen]
            result = command.decide(chosen)
        except PocketError as error:
            if before is not None and before != [len(w.pending_events) for w in chosen]:
                # Refused after changing a wallet: those changes must go.
                self._forget(wallets)
                raise Poisoned(command, error) from error
            self._check_refusal(command, wallets, from_cache)
            return Decision(error, failed=True)
        except Exception as error:
            self._forget(wallets)
            if before is None:
                raise  # Loading failed (the database): the batch fails.
            raise Poisoned(command, error) from error
        return Decision(result, failed=False, record=command.record(result))

    def _wallet(
        self, wallet_id: UUID, wallets: dict[UUID, Wallet], from_cache: set[UUID]
    ) -> Wallet:
        if wallet_id in wallets:
            return wallets[wallet_id]
        cached = self.cache.get(wallet_id)
        if cached is not None:
            from_cache.add(wallet_id)
            wallet = cached
        else:
            wallet = self.load(wallet_id)
        wallets[wallet_id] = wallet
        return wallet

    def _check_refusal(
        self, command: Command[Any], wallets: dict[UUID, Wallet], from_cache: set[UUID]
    ) -> None:
        """A refusal decided on cached state stands only if that state is current."""
        for wallet_id in command.wallet_ids:
            wallet = wallets.get(wallet_id)
            if (
                wallet_id in from_cache
                and wallet is not None
                and not wallet.pending_events
                and self.has_newer_events(wallet)
            ):
                self._forget(wallets)
                raise Retry

    def _remember(self, wallet_id: UUID, wallet: Wallet, head: bytes | None) -> None:
        self.cache[wallet_id] = wallet
        self.cache.move_to_end(wallet_id)
        if head is None:
            self.heads.pop(wallet_id, None)
        else:
            self.heads[wallet_id] = head
        while len(self.cache) > self.cache_size:
            evicted, _ = self.cache.popitem(last=False)
            self.heads.pop(evicted, None)

    def _forget(self, wallets: dict[UUID, Wallet]) -> None:
        for wallet_id in wallets:
            self.cache.pop(wallet_id, None)
            self.heads.pop(wallet_id, None)


def head(state: bytes) -> bytes:
    """A stored event's identity, as the insert function checks it: the SHA-256
    of its stored state (which holds its timestamp and its cause)."""
    return hashlib.sha256(state).digest()


def heads_of(
    recordings: Sequence[Recording[UUID]] | None, wallets: dict[UUID, Wallet]
) -> dict[UUID, bytes]:
    """The heads of the wallets a save just recorded, from its recordings."""
    heads: dict[UUID, bytes] = {}
    for recording in recordings or ():
        wallet_id = recording.notification.originator_id
        if isinstance(wallet_id, UUID) and wallet_id in wallets:
            heads[wallet_id] = head(recording.notification.state)
    return heads


def pause(attempt: int) -> None:
    """Sleeps a little longer after each failed attempt, with jitter."""
    time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
