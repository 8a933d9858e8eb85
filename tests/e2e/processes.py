"""Helpers for end-to-end tests: real `pocket` processes and an HTTP client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from pocket.application import Pocket
from pocket.config import Settings
from pocket.database import Database
from pocket.walletrecords import LATEST_VERSION, WalletRecord, record_from_row
from tests.replay import replayed_records
from tools.scratch import free_port

POCKET = Path(sys.executable).with_name("pocket")


def wait_for(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    msg = f"Timed out after {timeout}s waiting for {what or check}"
    raise AssertionError(msg)


class PocketProcess:
    """A `pocket` command running in its own process, its output in a file."""

    def __init__(
        self,
        args: list[str],
        cwd: Path,
        env: Mapping[str, str],
        name: str,
    ) -> None:
        self.log_path = cwd / f"{name}-{time.monotonic_ns()}.log"
        self.log_file = self.log_path.open("wb")
        # Only what the test says decides where the data goes.
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k not in ("POCKET_DATABASE_URL", "PERSISTENCE_MODULE")
        }
        full_env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [str(POCKET), *args],
            cwd=cwd,
            env=full_env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, and the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.log_file.close()


class Api:
    """A small JSON-over-HTTP client for the real server."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token

    def as_user(self, token: str) -> Api:
        """The same server, with a user's (or the admin's) token."""
        return Api(self.base_url, token)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        status, answer, _ = self.exchange(method, path, body, headers)
        return status, answer

    def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """A request's status, JSON body and headers."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL is our own server
            self.base_url + path, data=data, method=method, headers=dict(headers or {})
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                answer = json.loads(response.read())
                return response.status, answer, dict(response.headers.items())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read()), dict(error.headers.items())

    def post(
        self, path: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        return self.request("POST", path, body, headers)

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        return self.request("GET", path)

    def is_up(self) -> bool:
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False


def serve(cwd: Path, env: Mapping[str, str], *extra: str) -> tuple[PocketProcess, Api]:
    """Starts `pocket serve` on a free port and waits until it answers."""
    port = free_port()
    process = PocketProcess(["serve", "--port", str(port), *extra], cwd, env, "serve")
    api = Api(f"http://127.0.0.1:{port}")
    wait_for(
        lambda: api.is_up() or process.process.poll() is not None, what="pocket serve"
    )
    assert process.process.poll() is None, process.output
    return process, api


def follow(cwd: Path, env: Mapping[str, str], *extra: str) -> PocketProcess:
    """Starts `pocket follow` and waits until it has started following."""
    process = PocketProcess(["follow", *extra], cwd, env, "follow")
    wait_for(
        lambda: "Following" in process.output or process.process.poll() is not None,
        what="pocket follow",
    )
    assert process.process.poll() is None, process.output
    return process


def replay(
    settings: Settings, version: int = LATEST_VERSION
) -> dict[UUID, WalletRecord]:
    """Every wallet as the event store says it is (as a row of that version)."""
    pocket = Pocket(env=dict(settings.env))
    try:
        return replayed_records(pocket, version)
    finally:
        pocket.close()


def run_pocket(
    cwd: Path, env: Mapping[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs a `pocket` command to completion."""
    return subprocess.run(
        [str(POCKET), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def balance(value: Any) -> Decimal:
    return Decimal(str(value))


def records(settings: Settings) -> dict[UUID, WalletRecord]:
    """What the wallet_records view holds now."""
    pocket = Pocket(env=dict(settings.env))
    try:
        rows = Database.of(pocket).query("SELECT * FROM wallet_records")
        return {record.aggregate_id: record for record in map(record_from_row, rows)}
    finally:
        pocket.close()


def leads(process: PocketProcess) -> bool:
    """Whether a process runs every follower of the system now (the live
    projector's, the hold-expiry one's and the webhook one's), not only the first
    to take its lock."""
    log = process.output
    return (
        "Active: this follower applies wallet_records_v" in log
        and "Active: this follower applies hold_expiry" in log
        and "Active: this follower applies webhook_deliveries" in log
    )
