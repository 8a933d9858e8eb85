"""Rate limits by client address, in one process's memory: how often an address
may do something (sign up), with a bound on how many addresses are remembered.

Each address has a bucket of `count` that refills at `count` per `period`, kept
as one number, the moment its bucket will be full again (the generic cell rate
algorithm): an address whose bucket is full is forgotten, as it would start
full anyway.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}
# Addresses remembered at most: about 160 bytes each, 1.6 MB in all. One is
# remembered only until its bucket is full again: a period at most, 1/count of
# it after a single sign-up.
MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Rate:
    """Up to `count` at once, then `count` per `period` seconds, evenly spread."""

    count: int
    period: float

    @property
    def interval(self) -> float:
        """The time one more takes to become available again."""
        return self.period / self.count

    def __str__(self) -> str:
        units = [name for name, seconds in PERIODS.items() if seconds == self.period]
        return f"{self.count}/{units[0] if units else f'{self.period:g}s'}"


class RateLimiter:
    """One rate for every address, each address on its own; safe across threads."""

    def __init__(
        self,
        rate: Rate,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.max_addresses = max_addresses
        self.clock = clock
        self.lock = threading.Lock()
        # Address (as a key: see address_key) -> when its bucket is full again;
        # the least recently used first.
        self.full_at: OrderedDict[str, float] = OrderedDict()

    def take(self, address: str) -> float:
        """Takes one for `address`: 0 when it may go ahead, else the seconds
        until it may."""
        key = address_key(address)
        with self.lock:
            now = self.clock()
            self.forget_full(now)
            known = key in self.full_at
            if not known and len(self.full_at) >= self.max_addresses:
                # Every address remembered is still limited: forgetting one would
                # give it its whole bucket back, so that an attacker with more
                # addresses than the bound would have no limit at all. New
                # addresses wait instead, until the oldest bucket is full again.
                return next(iter(self.full_at.values())) - now
            full_at = max(self.full_at.get(key, now), now)
            wait = full_at - now - (self.rate.period - self.rate.interval)
            if wait > 1e-9:
                return wait
            self.full_at[key] = full_at + self.rate.interval
            self.full_at.move_to_end(key)
            return 0.0

    def forget_full(self, now: float) -> None:
        """Forgets the least recently used addresses whose buckets are full again."""
        while self.full_at:
            key, full_at = next(iter(self.full_at.items()))
            if full_at > now:
                return
            del self.full_at[key]


def address_key(address: str) -> str:
    """What one client is limited by: its IPv4 address, or its IPv6 address's
    /64 network (what one subscriber usually has: limiting each of its 2**64
    addresses on its own would limit nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # Not an IP address (a Unix socket's peer): as it is.
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)
