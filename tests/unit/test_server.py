"""The server's limits: which connection overran which limit, and what is logged.

Real waitress channels over socket pairs, fed bytes by hand, judged at chosen
instants: nothing here waits for a clock.
"""

from __future__ import annotations

import json
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable, Iterator

import pytest
from waitress.adjustments import Adjustments
from waitress.task import ThreadedTaskDispatcher

from pocket.server import Limit, LimitedChannel, LimitedServer, Limits, open_files

LIMITS = Limits(
    connections=10, header_timeout=10, body_timeout=30, keepalive_timeout=60
)
GET = b"GET /health HTTP/1.1\r\nHost: pocket\r\n\r\n"
StartResponse = Callable[[str, list[tuple[str, str]]], object]


def ok(_: object, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def server() -> Iterator[LimitedServer]:
    # No task threads: a test serves a request by calling channel.service().
    server = LimitedServer(
        ok,
        {},
        _start=False,
        adj=Adjustments(host="127.0.0.1", port=0),
        dispatcher=ThreadedTaskDispatcher(),
        limits=LIMITS,
    )
    yield server
    for channel in list(server.active_channels.values()):
        channel.close()
    server.close()


Connect = Callable[..., LimitedChannel]


@pytest.fixture
def connect(server: LimitedServer) -> Iterator[Connect]:
    """Opens client connections to the server, over socket pairs."""
    clients: list[socket.socket] = []

    def connect(host: str = "203.0.113.7") -> LimitedChannel:
        ours, theirs = socket.socketpair()
        clients.append(theirs)
        return LimitedChannel(server, ours, (host, 4242), server.adj, map=server._map)

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def channel(connect: Connect) -> LimitedChannel:
    return connect()


def answer(channel: LimitedChannel) -> float:
    """Serves the request received and sends the answer; returns when done."""
    channel.service()
    channel.handle_write()
    return time.time()


def pocket_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "pocket.server"]


def test_a_connection_that_sends_nothing_overruns_the_header_limit_from_connecting(
    channel: LimitedChannel,
) -> None:
    connected = channel.creation_time
    assert channel.exceeded(LIMITS, connected + 9) is None
    assert channel.exceeded(LIMITS, connected + 11) is Limit.HEADERS


def test_the_first_request_s_header_clock_starts_when_the_connection_opened(
    channel: LimitedChannel,
) -> None:
    channel.creation_time -= 5
    channel.received(b"GET /health HT")
    assert channel.exceeded(LIMITS, time.time() + 6) is Limit.HEADERS


def test_a_later_request_s_header_clock_starts_at_its_first_byte(
    channel: LimitedChannel,
) -> None:
    channel.received(GET)
    answer(channel)
    channel.received(b"GET /health HT")
    assert channel.request is not None
    started = channel.request.started
    assert channel.exceeded(LIMITS, started + 9) is None
    assert channel.exceeded(LIMITS, started + 11) is Limit.HEADERS


def test_a_body_not_complete_within_the_body_limit_after_its_headers_overruns_it(
    channel: LimitedChannel,
) -> None:
    channel.received(b"POST /users HTTP/1.1\r\nContent-Length: 20\r\n\r\n{")
    headers_done = time.time()
    # The header limit no longer applies once the headers are in.
    assert channel.exceeded(LIMITS, headers_done + 29) is None
    assert channel.exceeded(LIMITS, headers_done + 31) is Limit.BODY


def test_a_connection_idle_between_requests_overruns_the_keep_alive_limit(
    channel: LimitedChannel,
) -> None:
    channel.received(GET)
    answered = answer(channel)
    assert channel.exceeded(LIMITS, answered + 59) is None
    assert channel.exceeded(LIMITS, answered + 61) is Limit.KEEPALIVE


def test_blank_lines_between_requests_do_not_restart_the_keep_alive_clock(
    channel: LimitedChannel,
) -> None:
    channel.received(GET)
    answered = answer(channel)
    channel.received(b"\r\n\r\n")  # An empty request, which waitress ignores.
    assert channel.request is None
    assert channel.exceeded(LIMITS, answered + 61) is Limit.KEEPALIVE


def test_a_connection_whose_request_is_being_answered_overruns_nothing(
    channel: LimitedChannel,
) -> None:
    channel.received(GET)
    assert channel.requests
    assert channel.exceeded(LIMITS, time.time() + 1000) is None


def test_maintenance_closes_overrunning_connections_with_one_line_per_limit(
    server: LimitedServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    slow = [connect("203.0.113.7"), connect("203.0.113.8")]
    idle = connect("203.0.113.9")
    idle.received(GET)
    answer(idle)
    fresh = time.time() + 11  # past the header limit, within keep-alive
    with caplog.at_level(logging.INFO, "pocket.server"):
        server.maintenance(fresh)
    assert [channel.will_close for channel in [*slow, idle]] == [True, True, False]
    (line,) = pocket_lines(caplog)
    assert line.levelno == logging.WARNING
    assert "Closed 2 connections" in line.getMessage()
    assert "--header-timeout" in line.getMessage()
    assert "203.0.113.7" in line.getMessage()


def test_the_keep_alive_limit_is_logged_at_info_not_as_a_warning(
    server: LimitedServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    idle = connect()
    idle.received(GET)
    answered = answer(idle)
    with caplog.at_level(logging.INFO, "pocket.server"):
        server.maintenance(answered + 61)
    assert idle.will_close
    (line,) = pocket_lines(caplog)
    assert line.levelno == logging.INFO
    assert "Closed 1 connection " in line.getMessage()
    assert "--keepalive-timeout" in line.getMessage()


def fails(_: object, start_response: StartResponse) -> Iterable[bytes]:
    raise RuntimeError("a fault of the app's")


def test_the_server_s_own_500_for_an_app_that_fails_is_json_and_never_sniffed(
    server: LimitedServer,
) -> None:
    server.application = fails
    ours, theirs = socket.socketpair()
    with theirs:
        channel = LimitedChannel(
            server, ours, ("203.0.113.7", 4242), server.adj, map=server._map
        )
        channel.received(GET)
        answer(channel)
        head, _, body = theirs.recv(65536).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 500 Internal Server Error"
    assert "Content-Type: application/json" in lines
    assert "X-Content-Type-Options: nosniff" in lines
    assert json.loads(body)["error"]["code"] == "internal_error"


INFINITY = resource.RLIM_INFINITY


@pytest.mark.parametrize(
    ("soft", "hard", "expected"),
    [
        (20000, 20000, (20000, 1000)),  # enough already: unchanged
        (1024, 4096, (1100, 1000)),  # raised to what is needed, no more
        (1024, INFINITY, (1100, 1000)),
        (INFINITY, INFINITY, (INFINITY, 1000)),
        (256, 600, (600, 500)),  # the hard limit is short: fewer connections
    ],
)
def test_open_files_are_raised_toward_the_hard_limit_or_the_connections_lowered(
    soft: int, hard: int, expected: tuple[int, int]
) -> None:
    assert open_files(1000, soft, hard) == expected
