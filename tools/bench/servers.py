"""The servers the benchmark's HTTP figures are measured on: `pocket serve`
processes on the benchmark's database, and the same app under granian for
comparison, each on a free port and stopped when its block ends."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tools.bench.figures import CALLERS
from tools.scratch import free_port


@contextlib.contextmanager
def serving(url: str) -> Iterator[int]:
    """A `pocket serve --no-follower` on the database while the block runs; its port."""
    with server_process(url) as (port, _):
        yield port


@contextlib.contextmanager
def server_process(
    url: str, python: str = sys.executable
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A `pocket serve --no-follower` on the database while the block runs: its
    port and its process (for a profiler to sample). python may be another
    checkout's interpreter, to measure that one."""
    port = free_port()
    command = [python, "-m", "pocket.cli", "serve", "--no-follower"]
    command += ["--port", str(port), "--threads", str(CALLERS)]
    with running(command, port, url) as server:
        yield port, server


@contextlib.contextmanager
def running(
    command: list[str], port: int, url: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process on the database while the block runs, once it answers
    GET /health on port; terminated afterwards."""
    server = subprocess.Popen(
        command,
        env={**os.environ, "POCKET_DATABASE_URL": url, "POCKET_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port, server)
        yield server
    finally:
        server.terminate()
        server.wait(30)


def beside_python(name: str) -> str | None:
    """A program installed beside this Python (in its virtual environment), or
    else on the PATH; None if neither."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


@contextlib.contextmanager
def granian_serving(url: str) -> Iterator[int | None]:
    """Pocket's API (pocket.wsgi) under granian while the block runs: its port, or
    None when granian is not installed."""
    granian = beside_python("granian")
    if granian is None:
        yield None
        return
    port = free_port()
    command = [
        granian,
        "--interface=wsgi",
        "--factory",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--blocking-threads={CALLERS}",
        "--no-ws",
        "--log-level=error",
        "pocket.wsgi:app",
    ]
    with running(command, port, url):
        yield port


def wait_until_serving(
    port: int, server: subprocess.Popen[bytes], timeout: float = 60.0
) -> None:
    """Waits for the server to answer GET /health; raises if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    msg = f"pocket serve did not start (exit code {server.poll()})"
    raise RuntimeError(msg)
