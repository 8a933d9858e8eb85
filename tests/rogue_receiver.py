"""Webhook receivers that misbehave at the level of HTTP itself, as a broken or
hostile endpoint would: a raw TCP server on a free port that reads each request
and answers it with bytes of the test's choosing, as slowly as it likes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# Writes an answer on a connection whose request was read; stopping is set
# when the test ends (an endless answer stops then).
Answer = Callable[[socket.socket, threading.Event], None]


@dataclass
class RogueReceiver:
    """Where it listens, and each request it read (head and body), in order."""

    url: str
    requests: list[bytes] = field(default_factory=list)

    def tries(self) -> list[str]:
        """Each request's Pocket-Delivery-Attempt header."""
        found = []
        for request in list(self.requests):
            for line in request.partition(b"\r\n\r\n")[0].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"pocket-delivery-attempt":
                    found.append(value.strip().decode())
        return found


@contextmanager
def rogue_receiver(answer: Answer) -> Iterator[RogueReceiver]:
    """Serves each connection in a thread: reads the request, then answers as
    answer says. Stopped after."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stopping = threading.Event()
    rogue = RogueReceiver(f"http://127.0.0.1:{server.getsockname()[1]}/hook")

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                rogue.requests.append(read_request(conn))
                answer(conn, stopping)
            except OSError:
                pass  # The sender gave up and closed: what a test may want.

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield rogue
    finally:
        stopping.set()
        acceptor.join(5)
        server.close()


def read_request(conn: socket.socket) -> bytes:
    """The request's head and body (by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def endless_continues(conn: socket.socket, stopping: threading.Event) -> None:
    """ "100 Continue" after "100 Continue", never a final answer: each arrives
    well within any read timeout."""
    while not stopping.wait(0.2):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def trickled_headers(conn: socket.socket, stopping: threading.Event) -> None:
    """A status line, then a header a byte at a time, never its end."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stopping.wait(0.2):
        conn.sendall(b"x")


def answering(*answers: bytes) -> Answer:
    """Answers the first request with the first of these bytes, the next with
    the next, and every one after the last with the last; then closes."""
    given = iter(answers)

    def answer(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(next(given, answers[-1]))

    return answer
