"""End to end: the faster deployment (docs/deployment.md, "Behind nginx, on
granian (faster)"): deploy/nginx.conf in front of granian on a unix socket, with
`pocket follow` beside it, on a scratch PostgreSQL database; real processes
started by tools/front.py."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pocket.config import Settings
from tests.conftest import require_nginx
from tests.e2e.processes import Api, PocketProcess, balance, follow, records, wait_for
from tests.e2e.trickle import Trickler
from tools.front import granian_on_socket, nginx_front
from tools.scratch import free_port

pytestmark = pytest.mark.e2e
# Generous for a loaded 2-core machine; a front that let slow clients take
# granian's 16 threads would not answer at all.
ANSWER_WITHIN = 3.0
TRICKLERS = 20
TRICKLE_SECONDS = 6.0


@dataclass
class Front:
    """nginx on a port, granian behind it, `pocket follow` beside them."""

    url: str
    socket: Path
    port: int
    stack: contextlib.ExitStack
    granian: subprocess.Popen[bytes]
    follower: PocketProcess
    api: Api = field(init=False)

    def __post_init__(self) -> None:
        self.api = Api(f"http://127.0.0.1:{self.port}")

    def kill_granian(self) -> None:
        """kill -9 of granian and its workers: no clean-up of any kind."""
        os.killpg(self.granian.pid, signal.SIGKILL)
        self.granian.wait(10)

    def start_granian(self) -> None:
        self.granian = self.stack.enter_context(
            granian_on_socket(self.url, self.socket)
        )


@pytest.fixture
def front(postgres_url: str, tmp_path: Path) -> Iterator[Front]:
    require_nginx()
    # A short path of its own: a unix socket's path must fit in 108 bytes, and
    # pytest's folders are named after the test. 0700, as mkdtemp makes it.
    private = Path(tempfile.mkdtemp(prefix="pocket-front-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, private, ignore_errors=True)
        app = private / "app.sock"
        granian = stack.enter_context(granian_on_socket(postgres_url, app))
        port = free_port()
        stack.enter_context(nginx_front(app, port, private / "nginx"))
        follower = follow(tmp_path, {"POCKET_DATABASE_URL": postgres_url})
        stack.callback(follower.close)
        yield Front(postgres_url, app, port, stack, granian, follower)


def sign_up(api: Api, name: str) -> tuple[int, Api]:
    status, body = api.post("/users", {"name": name})
    assert status == 201, body
    return body["user"]["id"], api.as_user(body["token"])


def test_the_readme_session_works_through_the_front_and_the_projection_follows(
    front: Front,
) -> None:
    ann_id, ann = sign_up(front.api, "Ann")
    bob_id, _ = sign_up(front.api, "Bob")
    status, body = ann.post(f"/users/{ann_id}/add_money", {"amount": 20, "source": "A"})
    assert (status, body["wallet"]["balance"]) == (200, "20.00"), body
    status, body = ann.post(
        f"/users/{ann_id}/draw_money", {"amount": "5", "destination": "B"}
    )
    assert (status, body["wallet"]["balance"]) == (200, "15.00"), body
    transfer = {"to_user_id": bob_id, "amount": 3, "description": "lunch"}
    status, body = ann.post(f"/users/{ann_id}/transfers", transfer)
    assert (status, body["wallet"]["balance"]) == (201, "12.00"), body
    status, body = ann.get(f"/users/{ann_id}/wallet")
    assert (status, body["wallet"]["balance"]) == (200, "12.00"), body

    def caught_up() -> bool:
        held = records(Settings.from_url(front.url))
        return sorted(balance(r.balance) for r in held.values()) == [3, 12]

    wait_for(caught_up, what="wallet_records, from pocket follow")


def test_a_resent_idempotency_key_gets_the_same_answer_and_moves_money_once(
    front: Front,
) -> None:
    ann_id, ann = sign_up(front.api, "Ann")
    key = {"Idempotency-Key": "front-0001"}
    path = f"/users/{ann_id}/add_money"
    first = ann.post(path, {"amount": 7, "source": "A"}, key)
    again = ann.post(path, {"amount": 7, "source": "A"}, key)
    assert first == again
    assert first[0] == 200, first
    assert ann.get(f"/users/{ann_id}/wallet")[1]["wallet"]["balance"] == "7.00"


SLOW_BODY = (
    b"POST /users HTTP/1.1\r\nHost: pocket\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n"
)
SLOW_HEADERS = b"GET /health HTTP/1.1\r\nHost: pocket\r\nX-Slow: "


@pytest.mark.parametrize(
    ("opening", "trickled"),
    [(SLOW_BODY, b'{"name": "'), (b"", SLOW_HEADERS)],
    ids=["bodies", "headers"],
)
def test_twenty_connections_trickling_do_not_stop_a_normal_request(
    front: Front, opening: bytes, trickled: bytes
) -> None:
    # More than granian's 16 threads: held by granian, they would starve it.
    attacker = Trickler(front.port, TRICKLERS, opening, trickled)
    user_id, user = sign_up(front.api, "Ann")
    attacker.start()
    try:
        attacker.connected.wait(30)
        assert attacker.error is None, attacker.error
        latencies: list[float] = []
        deadline = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < deadline:
            start = time.monotonic()
            status, body = user.post(
                f"/users/{user_id}/add_money", {"amount": 1, "source": "A"}
            )
            assert status == 200, body
            latencies.append(time.monotonic() - start)
            time.sleep(0.2)
        assert attacker.error is None, attacker.error
        assert max(latencies) < ANSWER_WITHIN, sorted(latencies)[-5:]
    finally:
        attacker.stopping.set()
        attacker.join(10)


def assert_json_error(
    status: int, headers: http.client.HTTPMessage, raw: bytes, want: tuple[int, str]
) -> dict[str, Any]:
    """The API's error shape, ending with a newline, as JSON, never sniffed."""
    assert status == want[0], raw
    assert headers.get("Content-Type") == "application/json"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert raw.endswith(b"}\n"), raw
    body: dict[str, Any] = json.loads(raw)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == want[1], body
    return body


def exchange(port: int, data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Sends raw bytes (all it can: nginx may answer and close before the end)
    and reads the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.msg, response.read()


TWO_MB = 2 * 1024 * 1024
POST = b"POST /users HTTP/1.1\r\nHost: pocket\r\nContent-Type: application/json\r\n"
REFUSED_BY_NGINX = {
    "2 MB body by Content-Length": (
        POST + b"Content-Length: %d\r\n\r\n" % TWO_MB + b" " * TWO_MB,
        (413, "payload_too_large"),
    ),
    "2 MB body chunked": (
        POST
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % TWO_MB
        + b" " * TWO_MB
        + b"\r\n0\r\n\r\n",
        (413, "payload_too_large"),
    ),
    "100 KB header": (
        b"GET /health HTTP/1.1\r\nHost: pocket\r\nX-Big: "
        + b"a" * 100_000
        + b"\r\n\r\n",
        (431, "request_header_fields_too_large"),
    ),
    "garbage": (b"\x16\x03\x01 not http at all\r\n\r\n", (400, "bad_request")),
    "two Content-Lengths": (
        POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        (400, "bad_request"),
    ),
    "a bad header line": (
        b"GET /health HTTP/1.1\r\nHost: pocket\r\nNo colon here\r\n\r\n",
        (400, "bad_request"),
    ),
    "a negative Content-Length": (
        POST + b"Content-Length: -1\r\n\r\n",
        (400, "bad_request"),
    ),
    "a bad chunk size": (
        POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        (400, "bad_request"),
    ),
    "Content-Length and Transfer-Encoding": (
        POST
        + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"2\r\n{}\r\n0\r\n\r\n",
        (400, "bad_request"),
    ),
    "a 100 KB request line": (
        b"GET /health?" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: pocket\r\n\r\n",
        (414, "uri_too_long"),
    ),
    "an unknown HTTP version": (
        b"GET /health HTTP/2.7\r\nHost: pocket\r\n\r\n",
        (505, "http_version_not_supported"),
    ),
}


@pytest.mark.parametrize("what", REFUSED_BY_NGINX)
def test_what_nginx_refuses_is_answered_in_the_apis_json_error_shape(
    front: Front, what: str
) -> None:
    data, want = REFUSED_BY_NGINX[what]
    status, headers, raw = exchange(front.port, data)
    assert_json_error(status, headers, raw, want)


def test_pockets_own_errors_pass_through_untouched(front: Front) -> None:
    status, headers, raw = exchange(
        front.port, b"GET /users/1/wallet HTTP/1.1\r\nHost: pocket\r\n\r\n"
    )
    assert_json_error(status, headers, raw, (401, "unauthorized"))


def test_sign_ups_past_the_limit_from_one_address_are_refused_with_json_429(
    front: Front,
) -> None:
    signup = POST + b'Content-Length: 15\r\nConnection: close\r\n\r\n{"name": "Ann"}'
    answers = [exchange(front.port, signup) for _ in range(15)]
    statuses = [status for status, _, _ in answers]
    # Ten at once (the burst), then one every 6 seconds.
    assert statuses[:10] == [201] * 10, statuses
    assert statuses[-1] == 429, statuses
    status, headers, raw = answers[-1]
    assert_json_error(status, headers, raw, (429, "too_many_signups"))
    assert headers.get("Retry-After") == "6"
    # Only sign-ups are counted.
    assert front.api.get("/health")[0] == 200


def test_granian_killed_is_a_json_503_and_the_api_answers_once_it_is_back(
    front: Front,
) -> None:
    user_id, user = sign_up(front.api, "Ann")
    front.kill_granian()
    health = b"GET /health HTTP/1.1\r\nHost: pocket\r\nConnection: close\r\n\r\n"
    status, headers, raw = exchange(front.port, health)
    assert_json_error(status, headers, raw, (503, "service_unavailable"))
    front.start_granian()
    assert front.api.get("/health")[0] == 200
    status, body = user.post(
        f"/users/{user_id}/add_money", {"amount": 1, "source": "A"}
    )
    assert (status, body["wallet"]["balance"]) == (200, "1.00"), body
