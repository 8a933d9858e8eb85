"""This process's wallets, as its handlers last decided them (pocket.unitofwork),
each with its head and the last save staged on it. Only the caller running a
batch of handlers touches it, one at a time: it needs no lock."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID

from pocket.domainmodel import Wallet
from pocket.groupcommit import Save


@dataclass(eq=False, slots=True)
class Entry:
    """A cached wallet: as this process last read or decided it (with the events
    of saves staged and not yet written), its head, and its last save."""

    wallet_id: UUID
    wallet: Wallet
    head: bytes | None = None
    last: Save | None = None

    def staged(self) -> Save | None:
        """The save staged on it that is not written yet, if any."""
        last = self.last
        return last if last is not None and not last.answered else None


class WalletCache:
    """The wallets, the most recently used last, at most size of them."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.entries: OrderedDict[UUID, Entry] = OrderedDict()

    def get(self, wallet_id: UUID) -> Entry | None:
        """A wallet's entry, if it is cached."""
        entry = self.entries.get(wallet_id)
        if entry is not None:
            self.entries.move_to_end(wallet_id)
        return entry

    def put(self, wallet: Wallet, head: bytes | None) -> Entry:
        """Caches a wallet as read (replacing its entry, if any)."""
        entry = self.entries[wallet.id] = Entry(wallet.id, wallet, head)
        self.entries.move_to_end(wallet.id)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return entry

    def forget(self, entry: Entry) -> None:
        """Drops an entry (unless it was replaced already): its wallet is read
        again, whole, by the next handler."""
        if self.entries.get(entry.wallet_id) is entry:
            del self.entries[entry.wallet_id]

    def clear(self) -> None:
        """Drops every entry: what the database holds is not known."""
        self.entries.clear()
