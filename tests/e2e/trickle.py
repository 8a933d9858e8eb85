"""Clients that hold connections open by sending a byte a second, for the
slow-client tests of `pocket serve` and of the deployment behind nginx."""

from __future__ import annotations

import socket
import threading


class Trickler(threading.Thread):
    """Holds `count` connections that each send `opening` at once, then one byte
    of `trickled` a second (then "a"s); reopens any the server closes."""

    def __init__(self, port: int, count: int, opening: bytes, trickled: bytes) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.opening = opening
        self.trickled = trickled
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.closed_by_server = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        held: list[tuple[socket.socket, int]] = []
        try:
            held = [(self.connect(), 0) for _ in range(self.count)]
            self.connected.set()
            while not self.stopping.wait(1.0):
                held = [self.trickle(sock, sent) for sock, sent in held]
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.connected.set()
            for sock, _ in held:
                sock.close()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.sendall(self.opening)
        sock.setblocking(False)
        return sock

    def trickle(self, sock: socket.socket, sent: int) -> tuple[socket.socket, int]:
        try:
            if sock.recv(1024) == b"":
                raise ConnectionResetError
        except BlockingIOError:
            pass  # Still open, nothing to read: as expected.
        except OSError:
            return self.reconnect(sock)
        try:
            sock.send(self.trickled[sent : sent + 1] or b"a")
        except OSError:
            return self.reconnect(sock)
        return sock, sent + 1

    def reconnect(self, sock: socket.socket) -> tuple[socket.socket, int]:
        sock.close()
        self.closed_by_server += 1
        return self.connect(), 0
