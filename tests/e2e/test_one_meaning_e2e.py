"""Over real HTTP, every body and header means one thing or is refused."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.processes import Api, PocketProcess, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, int]]:
    process: PocketProcess
    process, api = serve(tmp_path_factory.mktemp("meaning"), {})
    try:
        status, body = api.post("/users", {"name": "Ann"})
        assert status == 201
        yield api.as_user(body["token"]), body["user"]["id"]
    finally:
        process.close()


def raw_post(
    api: Api, path: str, body: bytes, headers: list[tuple[str, bytes]]
) -> tuple[int, Any]:
    """A POST whose body and header bytes go out exactly as given."""
    where = urlsplit(api.base_url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Authorization", f"Bearer {api.token}")
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def balance(api: Api, user_id: int) -> str:
    status, body = api.get(f"/users/{user_id}")
    assert status == 200
    value: str = body["wallet"]["balance"]
    return value


@pytest.mark.parametrize(
    "key", ["é" * 10, "€" * 10, "é" * 200, "a b"], ids=["é", "€", "200 é", "space"]
)
@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Request-Id"])
def test_a_header_outside_visible_ascii_is_the_same_clear_422(
    server: tuple[Api, int], header: str, key: str
) -> None:
    api, user_id = server
    before = balance(api, user_id)
    status, body = raw_post(
        api,
        f"/users/{user_id}/add_money",
        b'{"amount": "1", "source": "x"}',
        [(header, key.encode())],
    )
    assert status == 422, body
    assert "visible ASCII" in body["error"]["fields"][header]
    assert balance(api, user_id) == before


def test_a_repeated_json_key_is_refused_not_half_read(
    server: tuple[Api, int],
) -> None:
    api, user_id = server
    before = balance(api, user_id)
    status, body = raw_post(
        api,
        f"/users/{user_id}/add_money",
        b'{"amount": 1, "source": "x", "amount": 1000}',
        [],
    )
    assert status == 422
    assert list(body["error"]["fields"]) == ["amount"]
    assert balance(api, user_id) == before


def test_an_idempotency_key_sent_twice_is_refused(server: tuple[Api, int]) -> None:
    api, user_id = server
    status, body = raw_post(
        api,
        f"/users/{user_id}/add_money",
        b'{"amount": "1", "source": "x"}',
        [("Idempotency-Key", b"first"), ("Idempotency-Key", b"second")],
    )
    assert status == 422
    assert "Idempotency-Key" in body["error"]["fields"]
