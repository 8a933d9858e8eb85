"""The reads of a command (pocket.unitofwork): wallets as stored now, each with its
head, the events written since a wallet was cached, and a wallet's latest stored
event.

A wallet's head is the identity of its last stored event: the SHA-256 of the
event's stored state (which holds its timestamp and its cause). A save sends the
head each wallet was decided on, and the database refuses, as a conflict, events
decided on a history it does not hold (one a failover lost). On PostgreSQL each
read is one statement, for one wallet or many; elsewhere (SQLite) the library's
repository reads, and a wallet read has no head (None) until this process saves
it: until then the event store's version check stands guard alone.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    project_aggregate,
)
from eventsourcing.persistence import PersistenceError, StoredEvent
from psycopg.sql import SQL, Composed, Identifier

from pocket.deadlines import WritesStalled
from pocket.domainmodel import Wallet
from pocket.errors import WalletNotFound
from pocket.guards import head
from pocket.postgres_events import PocketEventsRecorder
from pocket.postgres_pool import replace_connections
from pocket.postgres_reads import latest_states_statement, newer_events_statement

# Wallets as a read found them, each with its head (None where not known).
Loaded = dict[UUID, tuple[Wallet, bytes | None]]


class WalletStore:
    """Reads wallets for commands, from an application's event store."""

    def __init__(self, app: Application[UUID]) -> None:
        self.app = app
        recorder = app.recorder
        self.recorder = recorder if isinstance(recorder, PocketEventsRecorder) else None
        self._latest_states: Composed | None = None
        self._newer_events: Composed | None = None
        self._latest_event: Composed | None = None
        # Whether the event store refuses events that do not follow a stored
        # one (Pocket's recorders do; the library's in-memory one does not):
        # then a handler may decide on events staged and not yet written.
        self.checks_follows: bool = getattr(recorder, "checks_follows", False)
        if self.recorder is not None and app.snapshots is not None:
            datastore, table = self.recorder.datastore, self.recorder.events_table_name
            self._latest_states = latest_states_statement(
                datastore,
                table,
                app.snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
            )
            self._newer_events = newer_events_statement(datastore, table)
            self._latest_event = SQL(
                "SELECT originator_version, sha256(state) AS head FROM {events} "
                "WHERE originator_id = %(id)s "
                "ORDER BY originator_version DESC LIMIT 1"
            ).format(events=Identifier(datastore.schema, table))

    def load_many(self, wallet_ids: Collection[UUID]) -> Loaded:
        """Wallets as they are now, each with its head; those not found are
        left out. On PostgreSQL one read (each one's latest snapshot and the
        events from it on)."""
        if self._latest_states is None:
            return {i: (w, None) for i in wallet_ids if (w := self._get(i)) is not None}
        if not wallet_ids:
            return {}
        assert self.app.snapshots is not None
        rows = self._read(self._latest_states, {"ids": list(wallet_ids)})
        histories: dict[UUID, list[Any]] = {}
        heads: dict[UUID, bytes] = {}
        snapshot_versions: dict[UUID, int] = {}
        for row in rows:
            wallet_id, version = row["originator_id"], row["originator_version"]
            if row["kind"] == 0:
                snapshot_versions[wallet_id] = version
                event = self.app.snapshots.mapper.to_domain_event(stored_event(row))
                histories.setdefault(wallet_id, []).append(event)
                continue
            heads[wallet_id] = head(bytes(row["state"]))
            if version > snapshot_versions.get(wallet_id, 0):
                event = self.app.mapper.to_domain_event(stored_event(row))
                histories.setdefault(wallet_id, []).append(event)
        loaded: Loaded = {}
        for wallet_id, history in histories.items():
            wallet = project_aggregate(None, history)
            if isinstance(wallet, Wallet):
                loaded[wallet_id] = (wallet, heads.get(wallet_id))
        return loaded

    def load(self, wallet_ids: Collection[UUID]) -> Loaded:
        """load_many, raising WalletNotFound for the first wallet not found."""
        loaded = self.load_many(wallet_ids)
        for wallet_id in wallet_ids:
            if wallet_id not in loaded:
                raise WalletNotFound(wallet_id)
        return loaded

    def refresh(self, wallets: Loaded) -> tuple[dict[UUID, bytes | None], set[UUID]]:
        """Applies to cached wallets (in place) the events written since they
        were read, each with the head it was read at; returns the heads of
        those it advanced, and the wallets it found stale: the stored event of
        their version is not the one their head names (a failover lost it), so
        events after it would be applied to a history the database does not
        hold. On PostgreSQL one read; elsewhere one read each, and no heads."""
        if not wallets:
            return {}, set()
        if self._newer_events is None:
            for wallet, _ in wallets.values():
                for event in self.app.events.get(wallet.id, gt=wallet.version):
                    project_aggregate(wallet, [event])
            return {}, set()
        ids = list(wallets)
        versions = [wallets[i][0].version for i in ids]
        rows = self._read(self._newer_events, {"ids": ids, "versions": versions})
        by_wallet: dict[UUID, list[Any]] = {}
        for row in rows:
            by_wallet.setdefault(row["originator_id"], []).append(row)
        advanced: dict[UUID, bytes | None] = {}
        stale: set[UUID] = set()
        for wallet_id, (wallet, known) in wallets.items():
            found = by_wallet.get(wallet_id, [])
            if not found or known is None or head(bytes(found[0]["state"])) != known:
                stale.add(wallet_id)
                continue
            for row in found[1:]:
                event = self.app.mapper.to_domain_event(stored_event(row))
                project_aggregate(wallet, [event])
                advanced[wallet_id] = head(bytes(row["state"]))
        return advanced, stale

    def latest(self, wallet_id: UUID) -> tuple[int, bytes | None]:
        """A wallet's latest stored version and its head (None where not known)."""
        if self._latest_event is None:
            events = self.app.events.get(wallet_id, desc=True, limit=1)
            return max((e.originator_version for e in events), default=0), None
        rows = self._read(self._latest_event, {"id": wallet_id})
        if not rows:
            return 0, None
        return rows[0]["originator_version"], bytes(rows[0]["head"])

    def _get(self, wallet_id: UUID) -> Wallet | None:
        try:
            wallet: object = self.app.repository.get(wallet_id)
        except AggregateNotFoundError:
            return None
        return wallet if isinstance(wallet, Wallet) else None

    def _read(self, statement: Composed, params: dict[str, Any]) -> list[Any]:
        """The rows of one read, tried once more after a lost link, as the
        library's reads are.

        A command's reads are bounded by its deadline as its write is: one that
        does not answer in time (a server gone silent, a lock held elsewhere)
        fails the command with WritesStalled, nothing written, and is not tried
        again.
        """
        recorder = self.recorder
        assert recorder is not None
        for attempt in range(2):
            try:
                with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
                    curs.execute(statement, params)
                    return curs.fetchall()
            except (PersistenceError, psycopg.Error):
                expired = recorder.watchdog.expired()
                if expired is not None:
                    msg = f"The database did not answer within {expired.seconds:g} s"
                    raise WritesStalled(msg) from None
                if attempt:
                    raise
                replace_connections(recorder.datastore)
        raise AssertionError  # pragma: no cover


def stored_event(row: dict[str, Any]) -> StoredEvent:
    """A stored event from a row of an events or snapshots table."""
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
