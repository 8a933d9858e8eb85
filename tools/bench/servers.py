"""The processes the benchmark's HTTP figures are measured on, in one place that
knows how each is started: `pocket serve` (with its follower or without), `pocket
follow`, Pocket's app under granian, and the baseline apps (tools.bench.
baseline_apps) on pocket serve's own server; each on a free port and stopped
when its block ends. And the CPU a process has used, read from /proc."""

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
    url: str, python: str = sys.executable, *, follower: bool = False
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A `pocket serve` on the database while the block runs (with its projection
    follower in the process, as `make run` starts it, or --no-follower): its port
    and its process (for its CPU, or a profiler). python may be another
    checkout's interpreter, to measure that one."""
    port = free_port()
    command = [python, "-m", "pocket.cli", "serve"]
    command += [] if follower else ["--no-follower"]
    # Its default threads, as users run it (as many as the baselines' CALLERS).
    command += ["--port", str(port)]
    with running(command, port, pocket_env(url)) as server:
        yield port, server


@contextlib.contextmanager
def follower_process(url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `pocket follow` on the database while the block runs (it answers no
    HTTP: whoever needs it to have caught up waits on the projection's position)."""
    command = [sys.executable, "-m", "pocket.cli", "follow"]
    with started(command, pocket_env(url)) as follower:
        yield follower


@contextlib.contextmanager
def baseline_process(
    app: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """One of the baseline apps ("flask" or "library", see tools.bench.
    baseline_apps) on pocket serve's server, with CALLERS threads, in a process
    of its own while the block runs: its port and its process."""
    port = free_port()
    command = [sys.executable, "-m", "tools.bench.baseline_apps", app]
    command += ["--port", str(port), "--threads", str(CALLERS)]
    with running(command, port, env or {}) as server:
        yield port, server


def pocket_env(url: str) -> dict[str, str]:
    """What a pocket process on the database is started with."""
    return {"POCKET_DATABASE_URL": url, "POCKET_LOG_LEVEL": "WARNING"}


@contextlib.contextmanager
def running(
    command: list[str], port: int, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process while the block runs, once it answers GET /health on
    port; terminated afterwards."""
    with started(command, env) as server:
        wait_until_serving(port, server, " ".join(command[1:4]))
        yield server


@contextlib.contextmanager
def started(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process, with env added to this one's environment (and in cwd, if
    given), while the block runs; terminated afterwards."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


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
    with running(command, port, pocket_env(url)):
        yield port


def wait_until_serving(
    port: int, server: subprocess.Popen[bytes], name: str, timeout: float = 60.0
) -> None:
    """Waits for the server to answer GET /health; raises, naming it, if it
    exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    msg = f"{name} did not start (exit code {server.poll()})"
    raise RuntimeError(msg)


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process (all its threads) has used so far."""
    _, ticks = stat_of(Path(f"/proc/{pid}/stat"))
    return ticks / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(group: int) -> float:
    """User and system CPU the live processes of a process group have used so far
    (a server's master and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pgrp, ticks = stat_of(stat)
        except OSError:
            continue  # Gone meanwhile.
        if pgrp == group:
            total += ticks
    return total / os.sysconf("SC_CLK_TCK")


def stat_of(path: Path) -> tuple[int, int]:
    """A /proc/PID/stat's process group, and its user and system CPU in ticks."""
    fields = path.read_text().rsplit(")", 1)[1].split()
    return int(fields[2]), int(fields[11]) + int(fields[12])  # pgrp; utime, stime
