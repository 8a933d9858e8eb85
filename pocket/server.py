"""The HTTP server under `pocket serve`: waitress, with bounds on what one client
connection may hold, and waitress's own errors in the API's JSON.

All of the server's wiring lives here, so that another server can replace it.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from pocket.web.errors import (
    INTERNAL_ERROR_MESSAGE,
    MAX_BODY_BYTES,
    TOO_LARGE_MESSAGE,
    error_body,
    http_code,
)

MAX_HEADER_BYTES = 64 * 1024
# Open files kept for what is not a client connection: the listening socket,
# database connections, log and lock files.
SPARE_FILES = 100

log = logging.getLogger(__name__)
WSGIApp = Callable[..., Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    """What one client connection may hold: the `pocket serve` options."""

    connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keepalive_timeout: float = 60.0


class Limit(Enum):
    """A time limit a connection overran, and how its closing is logged."""

    HEADERS = ("header_timeout", "did not send a request's headers within", "")
    BODY = ("body_timeout", "did not send a request's body within", " of its headers")
    KEEPALIVE = ("keepalive_timeout", "sent no request within", " of the last answer")

    def __init__(self, setting: str, overran: str, since: str) -> None:
        self.setting = setting
        self.overran = overran
        self.since = since

    @property
    def option(self) -> str:
        return "--" + self.setting.replace("_", "-")

    @property
    def level(self) -> int:
        # Idle keep-alive connections are closed every day for well-behaved
        # clients; only a request too slow to arrive is worth a warning.
        return logging.INFO if self is Limit.KEEPALIVE else logging.WARNING


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own answers (a request too large, or not HTTP) in the API's JSON."""

    def execute(self) -> None:
        error = self.request.error
        status = HTTPStatus(error.code)
        answer = error_body(http_code(status), message(status, error))
        # Ends with a newline, as every JSON answer of the API's does.
        body = (json.dumps(answer) + "\n").encode()
        self.status = f"{status.value} {status.phrase}"
        self.response_headers.append(("Content-Type", "application/json"))
        # As every answer of the app's says (pocket.web.pages): a browser must
        # not guess another type, whoever made the answer.
        self.response_headers.append(("X-Content-Type-Options", "nosniff"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


def message(status: HTTPStatus, error: Any) -> str:
    """The sentence for a person in one of waitress's error answers."""
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        return TOO_LARGE_MESSAGE
    if status == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE:
        return f"The request line and headers must be at most {MAX_HEADER_BYTES} bytes."
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        return INTERNAL_ERROR_MESSAGE
    detail = str(error.body).rstrip(".")
    if status == HTTPStatus.BAD_REQUEST:
        return f"The request is not valid HTTP: {detail}."
    return f"{status.phrase}: {detail}."


class TimedParser(HTTPRequestParser):  # type: ignore[misc]
    """waitress's request parser, remembering when the request began (waitress
    makes one at a request's first byte) and when its headers were complete."""

    headers_done: float | None = None

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.time()

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.headers_finished and self.headers_done is None:
            self.headers_done = time.time()
        return consumed


class LimitedChannel(HTTPChannel):  # type: ignore[misc]
    """A client connection that knows how long each stage of a request is taking."""

    parser_class = TimedParser
    error_task_class = JsonErrorTask
    # When the last answer was done; None before the first.
    answered: float | None = None

    def service(self) -> None:
        super().service()
        self.answered = time.time()

    def exceeded(self, limits: Limits, now: float) -> Limit | None:
        """The time limit this connection has overrun, if any."""
        if self.requests or self.total_outbufs_len or self.will_close:
            return None  # Being answered, or closing anyway.
        request: TimedParser | None = self.request
        if request is not None and request.headers_done is not None:
            late = now - request.headers_done > limits.body_timeout
            return Limit.BODY if late else None
        if request is None and self.answered is not None:
            late = now - self.answered > limits.keepalive_timeout
            return Limit.KEEPALIVE if late else None
        # Headers awaited: the first request's since the connection opened, a
        # later one's since its first byte (the wait before is keep-alive's).
        if request is not None and self.answered is not None:
            started = request.started
        else:
            started = self.creation_time
        return Limit.HEADERS if now - started > limits.header_timeout else None


class LimitedServer(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server, closing connections that overrun a time limit."""

    channel_class = LimitedChannel

    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        super().__init__(*args, **kwargs)

    def maintenance(self, now: float) -> None:
        """Closes the connections that overran a limit, then waitress's idle ones."""
        # waitress alone closes a connection only after channel_timeout without
        # a byte in or out, so one that sends a byte a second holds its place
        # for ever; enough of them and nobody else is served. Hence a deadline
        # for each stage of a request.
        overran: dict[Limit, list[Any]] = {}
        for channel in self.active_channels.values():
            limit = channel.exceeded(self.limits, now)
            if limit is not None:
                channel.will_close = True
                overran.setdefault(limit, []).append(channel.addr)
        for limit, addresses in overran.items():
            log_closed(limit, getattr(self.limits, limit.setting), addresses)
        super().maintenance(now)


def log_closed(limit: Limit, seconds: float, addresses: list[Any]) -> None:
    """One line for all the connections one maintenance pass closed for a limit."""
    count = len(addresses)
    host, port = addresses[0][:2]
    log.log(
        limit.level,
        "Closed %d connection%s that %s %gs%s (%s), e.g. from %s:%s",
        count,
        "" if count == 1 else "s",
        limit.overran,
        seconds,
        limit.since,
        limit.option,
        host,
        port,
    )


@dataclass(frozen=True)
class Server:
    """The listening sockets (one per address the host names) and their loop."""

    listeners: list[LimitedServer]

    @property
    def port(self) -> int:
        return int(self.listeners[0].effective_port)

    def run(self) -> None:
        """Serves until SystemExit or KeyboardInterrupt."""
        self.listeners[0].run()  # One loop serves every listener's sockets.


def build_server(
    app: WSGIApp, host: str, port: int, threads: int, limits: Limits
) -> Server:
    """waitress serving `app` with `limits` on every client connection."""
    connections = file_descriptors_for(limits.connections)
    adj = Adjustments(
        host=host,
        port=port,
        threads=threads,
        connection_limit=connections,
        channel_timeout=math.ceil(limits.keepalive_timeout),
        cleanup_interval=1,  # Limits enforced within about a second.
        asyncore_use_poll=True,  # select() fails past 1024 descriptors.
        max_request_header_size=MAX_HEADER_BYTES,
        # waitress refuses a body of this size or more; the API takes
        # MAX_BODY_BYTES exactly.
        max_request_body_size=MAX_BODY_BYTES + 1,
    )
    dispatcher = ThreadedTaskDispatcher()
    sockets: dict[int, Any] = {}
    listeners = [
        LimitedServer(
            app, sockets, dispatcher=dispatcher, adj=adj, sockinfo=info, limits=limits
        )
        for info in adj.listen
    ]
    # waitress counts its own listening sockets and wake-up pipes as connections.
    adj.connection_limit = connections + len(sockets)
    dispatcher.set_thread_count(threads)
    return Server(listeners)


def open_files(connections: int, soft: int, hard: int) -> tuple[int, int]:
    """The soft open-file limit to set for `connections`, and how many fit then."""
    needed = connections + SPARE_FILES
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, connections
    soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    return soft, max(1, min(connections, soft - SPARE_FILES))


def file_descriptors_for(connections: int) -> int:
    """Raises this process's open-file limit so that `connections` fit, as far
    as the hard limit allows; returns how many fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new_soft, fitting = open_files(connections, soft, hard)
    if new_soft != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    if fitting < connections:
        log.warning(
            "Connection limit lowered from %d to %d: this process may open %d files "
            "at most (ulimit -Hn)",
            connections,
            fitting,
            new_soft,
        )
    return fitting
