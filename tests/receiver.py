"""A webhook receiver of the tests' own: a real HTTP server on a free port that
records every delivery, and can answer 500 or hang for a while, as a receiver
that is down or slow would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pocket.config import Settings
from pocket.runner import PocketRunner
from pocket.system import system


@dataclass(frozen=True)
class Received:
    """One request the receiver took (answered 2xx or not)."""

    headers: dict[str, str]
    body: bytes
    status: int
    at: float

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Receiver:
    """The server and what it received; set failing/hanging to misbehave."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        # Until this moment (time.time()), answer this status instead of 200.
        self.fail_until = 0.0
        self.fail_status = 500
        # Until this moment, hold each request this long before answering.
        self.hang_until = 0.0
        self.hang_seconds = 0.0
        # Every request waits this long (a slow receiver).
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                now = time.time()
                if receiver.delay:
                    time.sleep(receiver.delay)
                if now < receiver.hang_until:
                    time.sleep(receiver.hang_seconds)
                status = receiver.fail_status if now < receiver.fail_until else 200
                with receiver.lock:
                    receiver.requests.append(
                        Received(dict(self.headers.items()), body, status, now)
                    )
                answer = b'{"ok": true}' if status == 200 else b"down for a while"
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # The sender gave up waiting.

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def delivered(self) -> list[Received]:
        """The requests answered 200, in the order they arrived."""
        with self.lock:
            return [r for r in self.requests if r.status == 200]

    def events(self) -> list[dict[str, Any]]:
        """The events of the deliveries answered 200."""
        return [r.event for r in self.delivered()]

    def wait_for(
        self, count: int, timeout: float = 20.0, *, distinct: bool = True
    ) -> list[dict[str, Any]]:
        """Waits until count distinct events were taken (or count deliveries,
        repeats included); returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            got = len({e["id"] for e in events}) if distinct else len(events)
            if got >= count:
                return events
            if time.monotonic() > deadline:
                msg = f"{got} of {count} events arrived"
                raise AssertionError(msg)
            time.sleep(0.05)


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A receiver serving in a thread, shut down after."""
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


@contextmanager
def running(settings: Settings, **webhook_env: str) -> Iterator[PocketRunner]:
    """Pocket's system running on the settings' store (its webhook follower
    sending as the POCKET_WEBHOOK_* variables given say), stopped after."""
    runner = PocketRunner(system, {**dict(settings.env), **webhook_env})
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
