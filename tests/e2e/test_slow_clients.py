"""End to end: slow, idle and oversized clients against a real `pocket serve`."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pocket.server import MAX_HEADER_BYTES, file_descriptors_for
from pocket.web.errors import MAX_BODY_BYTES
from tests.e2e.processes import Api, PocketProcess, serve, wait_for
from tests.e2e.trickle import Trickler

pytestmark = pytest.mark.e2e
T = TypeVar("T")

ATTACKERS = 200
ATTACK_SECONDS = 20.0
# Generous for a loaded 2-core machine; a server starved of connections never
# answers at all.
ANSWER_WITHIN = 5.0
# A header block that never ends, sent a byte at a time.
SLOW_HEADER = b"GET /health HTTP/1.1\r\nHost: pocket\r\nX-Slow: "


def port_of(api: Api) -> int:
    return int(api.base_url.rsplit(":", 1)[1])


def timed(latencies: list[float], call: Callable[..., T], *args: Any) -> T:
    start = time.monotonic()
    result = call(*args)
    latencies.append(time.monotonic() - start)
    return result


def normal_client(api: Api, seconds: float) -> list[float]:
    """Signs up, adds money and reads the wallet, again and again; every request
    must succeed. Returns each request's latency."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = timed(latencies, api.post, "/users", {"name": "Ann"})
        assert status == 201, body
        path = f"/users/{body['user']['id']}"
        user = api.as_user(body["token"])
        deposit = {"amount": 5, "source": "API"}
        status, body = timed(latencies, user.post, f"{path}/add_money", deposit)
        assert status == 200, body
        status, body = timed(latencies, user.get, f"{path}/wallet")
        assert (status, body["wallet"]["balance"]) == (200, "5.00"), body
    return latencies


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_two_hundred_slow_clients_for_twenty_seconds_do_not_stop_normal_requests(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    # The test process itself holds ATTACKERS sockets, plus its own files.
    assert file_descriptors_for(ATTACKERS + 100) == ATTACKERS + 100
    url = request.getfixturevalue(f"{backend}_url")
    # The normal client signs up again and again, from one address.
    env = {"POCKET_DATABASE_URL": url, "POCKET_SIGNUP_RATE": "off"}
    server, api = serve(tmp_path, env)
    attacker = Trickler(port_of(api), ATTACKERS, b"", SLOW_HEADER)
    try:
        attacker.start()
        attacker.connected.wait(30)
        assert attacker.error is None, attacker.error
        latencies = normal_client(api, ATTACK_SECONDS)
        assert attacker.error is None, attacker.error
        assert max(latencies) < ANSWER_WITHIN, sorted(latencies)[-5:]
        # The default header limit (10 s) closed every slow connection at least
        # once in 20 s; the attacker reopened each at once.
        assert attacker.closed_by_server >= ATTACKERS, attacker.closed_by_server
        assert "--header-timeout" in server.output, server.output
    finally:
        attacker.stopping.set()
        attacker.join(10)
        server.close()


# Short limits: one server for the tests below, on the embedded SQLite.


@dataclass(frozen=True)
class Server:
    process: PocketProcess
    port: int


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("strict")
    limits = ("--header-timeout", "1", "--body-timeout", "1")
    process, api = serve(cwd, {}, *limits, "--keepalive-timeout", "1")
    try:
        yield Server(process, port_of(api))
    finally:
        process.close()


def seconds_until_closed(sock: socket.socket, since: float) -> float:
    """Waits (15 s at most) for the server to close the connection without an
    answer; returns the seconds from `since`."""
    sock.settimeout(15)
    try:
        data = sock.recv(1024)
    except ConnectionResetError:
        data = b""
    assert data == b"", data
    return time.monotonic() - since


def test_a_connection_that_stops_mid_headers_is_closed_after_the_header_limit(
    strict: Server,
) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: po")
        assert 0.9 < seconds_until_closed(sock, start) < 10
    wait_for(lambda: "--header-timeout" in strict.process.output, 5, "the log line")


def test_a_connection_that_stalls_mid_body_is_closed_after_the_body_limit(
    strict: Server,
) -> None:
    with socket.create_connection(("127.0.0.1", strict.port)) as sock:
        start = time.monotonic()
        sock.sendall(
            b"POST /users HTTP/1.1\r\nHost: pocket\r\n"
            b"Content-Type: application/json\r\nContent-Length: 20\r\n\r\n"
            b'{"name":'
        )
        assert 0.9 < seconds_until_closed(sock, start) < 10
    wait_for(lambda: "--body-timeout" in strict.process.output, 5, "the log line")


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_limit(
    strict: Server,
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", strict.port)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        start = time.monotonic()
        assert response.status == 200
        assert not response.will_close
        assert connection.sock is not None
        assert 0.9 < seconds_until_closed(connection.sock, start) < 10
    finally:
        connection.close()
    wait_for(lambda: "--keepalive-timeout" in strict.process.output, 5, "the log line")


def exchange(port: int, data: bytes) -> tuple[int, str, dict[str, Any]]:
    """Sends raw bytes; the answer's status, content type and JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return (
            response.status,
            response.getheader("Content-Type", ""),
            json.loads(response.read()),
        )


def test_a_body_over_one_mebibyte_is_refused_with_json_413_before_it_is_read(
    strict: Server,
) -> None:
    status, content_type, body = exchange(
        strict.port,
        b"POST /users HTTP/1.1\r\nHost: pocket\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
    )
    assert (status, content_type) == (413, "application/json")
    assert body["error"]["code"] == "payload_too_large"
    assert str(MAX_BODY_BYTES) in body["error"]["message"]


def test_a_body_of_exactly_one_mebibyte_is_accepted(strict: Server) -> None:
    name = b'{"name": "Ann"}'
    padded = name + b" " * (MAX_BODY_BYTES - len(name))
    connection = http.client.HTTPConnection("127.0.0.1", strict.port)
    try:
        connection.request(
            "POST", "/users", padded, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        assert response.status == 201, response.read()
    finally:
        connection.close()


def test_an_oversized_header_block_is_refused_with_json_431(
    strict: Server,
) -> None:
    # Exactly the limit, so that the server has read everything sent when it
    # answers and closes (unread bytes would make it reset the connection).
    start = b"GET /health HTTP/1.1\r\nHost: pocket\r\nX-Big: "
    status, content_type, body = exchange(
        strict.port, start + b"a" * (MAX_HEADER_BYTES - len(start))
    )
    assert (status, content_type) == (431, "application/json")
    assert body["error"]["code"] == "request_header_fields_too_large"


def test_a_request_that_is_not_http_is_refused_with_json_400(
    strict: Server,
) -> None:
    status, content_type, body = exchange(
        strict.port, b"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n"
    )
    assert (status, content_type) == (400, "application/json")
    assert body["error"]["code"] == "bad_request"


# What waitress answers itself, before the app sees a request.
BIG_HEADERS = b"GET /health HTTP/1.1\r\nHost: pocket\r\nX-Big: "
SERVER_ANSWERS = {
    "not HTTP": (
        b"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n",
        (400, "bad_request"),
    ),
    "body too large": (
        b"POST /users HTTP/1.1\r\nHost: pocket\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
        (413, "payload_too_large"),
    ),
    # Exactly the limit: all of it read when the server answers (see above).
    "headers too large": (
        BIG_HEADERS.ljust(MAX_HEADER_BYTES, b"a"),
        (431, "request_header_fields_too_large"),
    ),
    "unknown transfer encoding": (
        b"POST /users HTTP/1.1\r\nHost: pocket\r\nTransfer-Encoding: gzip\r\n\r\n",
        (501, "not_implemented"),
    ),
}


@pytest.mark.parametrize("what", SERVER_ANSWERS)
def test_the_answers_the_server_makes_itself_are_never_sniffed(
    strict: Server, what: str
) -> None:
    data, (status, code) = SERVER_ANSWERS[what]
    with socket.create_connection(("127.0.0.1", strict.port), timeout=10) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == status
        assert response.getheader("Content-Type") == "application/json"
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert json.loads(response.read())["error"]["code"] == code


def test_connections_over_the_limit_wait_for_a_free_one_and_the_limit_is_logged(
    tmp_path: Path,
) -> None:
    server, api = serve(tmp_path, {}, "--connection-limit", "3")
    port = port_of(api)
    held = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(3)]
    try:
        for connection in held:  # each answered, so each accepted, and kept open
            connection.request("GET", "/health")
            assert connection.getresponse().read()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as waiting:
            waiting.sendall(b"GET /health HTTP/1.1\r\nHost: pocket\r\n\r\n")
            with pytest.raises(TimeoutError):
                waiting.recv(1024)
            wait_for(lambda: "connection limit" in server.output, 5, "the log line")
            assert "WARNING" in server.output
            held.pop().close()
            waiting.settimeout(15)
            response = http.client.HTTPResponse(waiting)
            response.begin()
            assert response.status == 200
    finally:
        for connection in held:
            connection.close()
        server.close()
