"""End to end: the sign-up limit per client address holds against a real `pocket
serve` when one client sends many sign-ups at once, from many threads."""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.processes import Api, serve

pytestmark = pytest.mark.e2e
ADMIN_TOKEN = "operator-secret-0123456789"
ALLOWED = 5
CLIENTS = 40


def sign_up(port: int, start: threading.Barrier) -> tuple[int, str | None]:
    """One sign-up on a connection of its own, sent when every thread is ready:
    the status and the Retry-After header."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.connect()
        start.wait(30)
        body = json.dumps({"name": "Ann"})
        connection.request("POST", "/users", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Retry-After")
    finally:
        connection.close()


def test_many_sign_ups_at_once_from_one_address_create_only_the_allowed_number(
    tmp_path: Path,
) -> None:
    env = {"POCKET_SIGNUP_RATE": f"{ALLOWED}/hour", "POCKET_ADMIN_TOKEN": ADMIN_TOKEN}
    server, api = serve(tmp_path, env, "--threads", "16")
    try:
        port = int(api.base_url.rsplit(":", 1)[1])
        start = threading.Barrier(CLIENTS)
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(lambda _: sign_up(port, start), range(CLIENTS)))
        statuses = sorted(status for status, _ in answers)
        assert statuses == [201] * ALLOWED + [429] * (CLIENTS - ALLOWED)
        waits = [int(wait) for status, wait in answers if status == 429 and wait]
        assert len(waits) == CLIENTS - ALLOWED
        assert all(1 <= wait <= 3600 // ALLOWED for wait in waits), waits
        status, page = Api(api.base_url, ADMIN_TOKEN).get("/users?limit=500")
        assert status == 200
        assert len(page["users"]) == ALLOWED
    finally:
        server.close()
