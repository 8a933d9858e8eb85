"""This process's wallets, as its handlers last decided them (pocket.unitofwork):
each locked by the one handler deciding on it, so that the commands of a hot
wallet are decided one after another on its newest state."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from uuid import UUID

from pocket.domainmodel import Wallet
from pocket.groupcommit import Save


@dataclass(eq=False)
class Entry:
    """A cached wallet: as this process last read or decided it (its staged
    events included), its head, and the last save staged on it."""

    wallet_id: UUID
    lock: threading.Lock = field(default_factory=threading.Lock)
    wallet: Wallet | None = None
    head: bytes | None = None
    last: Save | None = None


class WalletCache:
    """This process's wallets, each locked by the handler deciding on it."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.entries: OrderedDict[UUID, Entry] = OrderedDict()
        self.lock = threading.Lock()

    def acquire(self, wallet_ids: Collection[UUID]) -> list[Entry]:
        """The entries of wallets, each locked, locked in id order (so two
        handlers of the same two wallets never wait for each other)."""
        entries = []
        for wallet_id in sorted(set(wallet_ids)):
            while True:
                with self.lock:
                    entry = self.entries.get(wallet_id)
                    if entry is None:
                        entry = self.entries[wallet_id] = Entry(wallet_id)
                    self.entries.move_to_end(wallet_id)
                entry.lock.acquire()
                with self.lock:
                    if self.entries.get(wallet_id) is entry:
                        break
                entry.lock.release()  # Forgotten while waiting: take the new one.
            entries.append(entry)
        self._evict()
        return entries

    def forget(self, entry: Entry) -> None:
        """Drops an entry (unless it was replaced already): its wallet is read
        again, whole, by the next handler."""
        with self.lock:
            if self.entries.get(entry.wallet_id) is entry:
                del self.entries[entry.wallet_id]

    def clear(self) -> None:
        """Drops every entry: what the database holds is not known."""
        with self.lock:
            self.entries.clear()

    def _evict(self) -> None:
        if len(self.entries) <= self.size:
            return
        with self.lock:
            excess = len(self.entries) - self.size
            for wallet_id in list(itertools.islice(self.entries, max(excess, 0))):
                if not self.entries[wallet_id].lock.locked():
                    del self.entries[wallet_id]
