"""A TCP proxy in front of PostgreSQL that loses replies on purpose.

Armed with a marker (bytes a request is known to carry, such as a transfer's
description inside its events), it forwards the statement that carries the marker
up to its Sync message, so the server runs and may commit it, then cuts both
sides of that connection: the client never hears how it ended. Or it cuts before
forwarding any of that statement, so the server (or a pooler) never sees it and
finds its connection idle when it ends. It can also refuse new connections, to
stand for a database nobody can reach, and fall silent as a network partition
does: whatever it forwards (PostgreSQL, or the HTTP of etcd and Patroni), nothing
crosses any more and nobody is told.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

# The extended query protocol's Sync message: the server ends an implicit
# transaction (commits it) when it reads this.
SYNC = b"S\x00\x00\x00\x04"
KEEP = 1 << 16  # How much of each client's recent traffic is searched.


@dataclass
class Trap:
    """A cut waiting for a marker, and what happened when it sprang."""

    markers: tuple[bytes, ...]
    # Then refuse every connection, as if the database had become unreachable.
    isolate: bool = False
    # Whether the statement that carries the marker goes through before the cut.
    forward: bool = True
    sprung: threading.Event = field(default_factory=threading.Event)


class Proxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server, cutting links on demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.links: set[Link] = set()
        self.trap: Trap | None = None
        self.refusing = False
        self.partitioned = False
        # Connections taken while partitioned: held open, never read or answered.
        self.held: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, dbname: str, user: str = "postgres") -> str:
        """A PostgreSQL URL that goes through this proxy."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def arm(self, marker: str, *, isolate: bool = False, forward: bool = True) -> Trap:
        """Cuts the next link that carries marker, once the statement is sent
        (with forward=False, before any of it is); with isolate, every other
        link too, and refuses new ones from then on."""
        raw = marker.encode()
        # Parameters may travel in text form, where bytea is written as hex.
        trap = Trap((raw, raw.hex().encode()), isolate, forward)
        with self.lock:
            self.trap = trap
        return trap

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, every new connection is closed as soon as it opens."""
        with self.lock:
            self.refusing = refusing

    def partition(self) -> None:
        """From now on nothing crosses, either way, and nobody is told: bytes on
        open links are dropped (and so is a side's closing), new connections
        are taken and left unanswered. Like a partition, seen from either side
        as silence until its own timeouts; there is no healing it."""
        with self.lock:
            self.partitioned = True

    def cut_all(self) -> None:
        """Drops every open link, as a network failure would."""
        with self.lock:
            links = list(self.links)
        for link in links:
            link.cut()

    def close(self) -> None:
        """Stops listening and drops every link."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
        with self.lock:
            self.partitioned = False  # the links' ends close now, as they should
            held, self.held = self.held, []
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        self.cut_all()

    def take_trap(self, data: bytes) -> Trap | None:
        """The armed trap if data springs it (it then disarms)."""
        with self.lock:
            trap = self.trap
            if trap is None or not any(m in data for m in trap.markers):
                return None
            self.trap = None
            return trap

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            if self.partitioned:
                with self.lock:
                    self.held.append(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = Link(self, client, server)
            with self.lock:
                # Refused meanwhile (while this one was connecting): so is it.
                refused = self.refusing
                if not refused:
                    self.links.add(link)
            if refused:
                link.cut()
                continue
            link.start()

    def forget(self, link: Link) -> None:
        """A link has ended."""
        with self.lock:
            self.links.discard(link)


class Link:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket):
        self.proxy = proxy
        self.client = client
        self.server = server
        self.sent = bytearray()  # The client's recent traffic, to find markers in.
        self.trap: Trap | None = None
        self.trap_at = 0  # Where in sent the marker was found.
        self.ended = threading.Event()

    def start(self) -> None:
        """Starts forwarding both ways."""
        threading.Thread(target=self._upstream, daemon=True).start()
        threading.Thread(target=self._downstream, daemon=True).start()

    def cut(self) -> None:
        """Closes both sockets without a word to either side."""
        if self.ended.is_set():
            return
        self.ended.set()
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.proxy.forget(self)

    def _upstream(self) -> None:
        try:
            while not self.ended.is_set():
                data = self.client.recv(65536)
                if self.proxy.partitioned:
                    if not data:
                        return  # the other side must not hear of it
                    continue
                if not data:
                    break
                end = self._cut_point(data)
                self.server.sendall(data if end is None else data[:end])
                if end is not None:
                    assert self.trap is not None
                    if self.trap.isolate:
                        self.proxy.refuse()
                        self.proxy.cut_all()
                    self.cut()
                    self.trap.sprung.set()
                    return
        except OSError:
            pass
        self.cut()

    def _downstream(self) -> None:
        try:
            while not self.ended.is_set():
                data = self.server.recv(65536)
                if self.proxy.partitioned:
                    if not data:
                        return
                    continue
                if not data:
                    break
                self.client.sendall(data)
        except OSError:
            pass
        self.cut()

    def _cut_point(self, data: bytes) -> int | None:
        """How much of data to forward before cutting, or None to go on."""
        offset = len(self.sent)
        self.sent += data
        if self.trap is None:
            self.trap = self.proxy.take_trap(bytes(self.sent))
            if self.trap is not None:
                found = [self.sent.find(m) for m in self.trap.markers]
                self.trap_at = min(at for at in found if at >= 0)
        if self.trap is not None and not self.trap.forward:
            # Up to the end of the exchange before the statement's, if that
            # much is still here to send; nothing more.
            before = self.sent.rfind(SYNC, 0, self.trap_at)
            return max(0, before + len(SYNC) - offset) if before >= 0 else 0
        if self.trap is not None:
            sync = self.sent.find(SYNC, self.trap_at)
            if sync >= 0:
                return max(0, sync + len(SYNC) - offset)
            return None
        if len(self.sent) > KEEP:
            del self.sent[: len(self.sent) - KEEP]
        return None
