"""A host of the test's own that the test can cut off: a network namespace
joined to this machine by a veth pair, for tests of what a network partition
does (a userspace proxy cannot stand for one: its kernel still acknowledges
every packet and every keep-alive probe).

`cut()` makes every packet between the two sides vanish (blackhole routes on
both), as a partition does: nothing is refused, nothing answers, and TCP
connections wait; `mend()` lets them through again, and the connections that
survived carry on. Needs root and iproute2; everything is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.pgserver import PostgresServer, find_bindir

# The subnets the namespaces take: 10.231.N.0/30, N from 1 to 250.
PREFIX = "10.231"


def netns_problem() -> str | None:
    """Why no namespace can be made here, or None when one can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` (iproute2)"
    return None


@dataclass
class Namespace:
    """A namespace and its link to this machine."""

    name: str
    subnet: int

    @property
    def host_ip(self) -> str:
        """This machine's side of the link."""
        return f"{PREFIX}.{self.subnet}.1"

    @property
    def ip(self) -> str:
        """The namespace's side: where its servers listen."""
        return f"{PREFIX}.{self.subnet}.2"

    @property
    def exec_prefix(self) -> list[str]:
        """Runs a command in the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        """Every packet between the two sides vanishes from now on."""
        ip("route", "add", "blackhole", f"{self.ip}/32")
        ip("-n", self.name, "route", "add", "blackhole", f"{self.host_ip}/32")

    def mend(self) -> None:
        """Packets go through again."""
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("route", "del", "blackhole", f"{self.ip}/32")
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("-n", self.name, "route", "del", "blackhole", f"{self.host_ip}/32")


def ip(*args: str) -> None:
    """Runs `ip` with args (`-n NS` first: in a namespace); raises if it fails."""
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def free_subnet() -> int:
    """A subnet of PREFIX no interface of this machine uses."""
    used = subprocess.run(
        ["ip", "-o", "addr"], check=True, capture_output=True, text=True
    ).stdout
    for subnet in range(1, 251):
        if f" {PREFIX}.{subnet}." not in used:
            return subnet
    msg = f"every {PREFIX}.N subnet is taken"
    raise RuntimeError(msg)


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A new namespace joined to this machine, removed afterwards."""
    subnet = free_subnet()
    name = f"pocket-{os.getpid()}-{subnet}"
    host_side, far_side = f"pkh{subnet}-{os.getpid() % 10000}", f"pkn{subnet}"
    made = Namespace(name, subnet)
    ip("netns", "add", name)
    try:
        ip("link", "add", host_side, "type", "veth", "peer", "name", far_side)
        ip("link", "set", far_side, "netns", name)
        ip("addr", "add", f"{made.host_ip}/30", "dev", host_side)
        ip("link", "set", host_side, "up")
        ip("-n", name, "addr", "add", f"{made.ip}/30", "dev", far_side)
        ip("-n", name, "link", "set", far_side, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield made
    finally:
        made.mend()
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", host_side)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("netns", "del", name)


@contextlib.contextmanager
def server_in_a_namespace() -> Iterator[tuple[PostgresServer, Namespace]]:
    """A throwaway PostgreSQL listening on a namespace's address, and the
    namespace; both gone afterwards, whatever happened."""
    bindir = find_bindir()
    if bindir is None:
        msg = "no PostgreSQL binaries"
        raise RuntimeError(msg)
    with namespace() as ns:
        folder = Path(tempfile.mkdtemp(prefix="pocket-pg-"))
        server = PostgresServer(folder, bindir, 5432, host=ns.ip, netns=ns.exec_prefix)
        try:
            server.initdb()
            server.start()
            yield server, ns
        finally:
            ns.mend()
            server.destroy()
