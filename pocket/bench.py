"""`pocket bench`: Pocket's speed, each figure beside a baseline from the same run.

Runs against the embedded SQLite and against PostgreSQL, on databases it creates
and removes. Sizes are parameters; the defaults finish in a few minutes on two
cores. A figure is only meaningful beside its baseline: machines differ, and a
shared machine differs from minute to minute.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql

from pocket.application import Pocket
from pocket.bootstrap import bootstrap, open_catalog, open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.migration import open_builder

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CALLERS = 16
# HTTP: wrk's threads (CALLERS connections), the seconds after which it calls an
# answer an error, the users add_money picks from (few, then many), its body.
WRK_THREADS = 2
WRK_TIMEOUT = 30
FEW_USERS = 64
MANY_USERS = 2000
AMOUNT = Decimal("1.00")
ADD_MONEY_BODY = json.dumps({"amount": str(AMOUNT), "source": "bench"})
WRK_MISSING = "wrk not installed: apt-get install wrk (no HTTP figures)"
GRANIAN_MISSING = "granian not installed: pip install granian (no comparison figures)"
MILLISECONDS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    commands: int = 4000
    http_seconds: int = 8  # each wrk run (wrk takes whole seconds)
    events: int = 200_000
    per_event_events: int = 2_000
    history_events: int = 100_000
    raw_inserts: int = 3_000
    raw_upserts: int = 200_000
    repeats: int = 5


TINY = Sizes(
    commands=64,
    http_seconds=1,
    events=600,
    per_event_events=40,
    history_events=250,
    raw_inserts=50,
    raw_upserts=2_000,
    repeats=2,
)


@dataclass
class Results:
    """One backend's figures (None where a figure could not be measured), and
    what they alone do not say: a figure left out and why, the money checked."""

    backend: str
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        """Records a figure."""
        self.figures[name] = value

    def note(self, line: str) -> None:
        """Records a line for under the table."""
        self.notes.append(line)


# The HTTP figures, printed together: wrk measures them, when it is installed.
HTTP_ROWS: list[tuple[str, str, str]] = [
    ("http_trivial", f"baseline: GET /health, {CALLERS} connections, 1 server", "/s"),
    ("http_trivial_p99", "  latency p99", "ms"),
    ("http_add_money", f"POST add_money, {FEW_USERS} users, 1 server", "/s"),
    ("http_add_money_p50", "  latency p50", "ms"),
    ("http_add_money_p99", "  latency p99", "ms"),
    ("http_add_money_vs_raw", "  ratio to raw single-row INSERT commits", "x"),
    ("http_ratio", "  ratio to GET /health", "x"),
    ("http_add_money_2000", f"POST add_money, {MANY_USERS:,} users, 1 server", "/s"),
    ("http_add_money_2000_p99", "  latency p99", "ms"),
    ("http_two_processes", f"POST add_money, {MANY_USERS:,} users, 2 servers", "/s"),
    ("http_two_processes_p99", "  latency p99, the slower server's", "ms"),
    ("http_two_processes_ratio", "  ratio two servers / one", "x"),
    (
        "http_two_routed",
        f"POST add_money, {MANY_USERS:,} users, 2 servers, routed by user",
        "/s",
    ),
    ("http_two_routed_p99", "  latency p99, the slower server's", "ms"),
    ("http_two_routed_ratio", "  ratio to one server", "x"),
    # Another server for the same app (pocket.wsgi), for comparison only: it
    # does not keep the slow-client limits that pocket serve's waitress does.
    ("http_granian_trivial", "comparison: GET /health, granian WSGI, 1 server", "/s"),
    ("http_granian_trivial_p99", "  latency p99", "ms"),
    ("http_granian", f"comparison: POST add_money, {FEW_USERS} users, granian", "/s"),
    ("http_granian_p99", "  latency p99", "ms"),
    ("http_granian_ratio", "  ratio to pocket serve (waitress)", "x"),
]

# What is printed, in order: (key, label, unit); a ratio row follows its figure.
ROWS: list[tuple[str, str, str]] = [
    (
        "raw_insert_commits",
        "baseline: raw single-row INSERT commits, 1 connection",
        "/s",
    ),
    ("raw_batched_upserts", "baseline: raw upserts, 1,000 per transaction", "/s"),
    ("commands_1", "commands, Python API, 1 caller", "/s"),
    ("commands_16", f"commands, Python API, {CALLERS} callers", "/s"),
    ("commands_16_vs_raw", "  ratio to raw single-row INSERT commits", "x"),
    ("group_size", "  commands per transaction (group commit)", ""),
    *HTTP_ROWS,
    ("catchup_per_event", "baseline: catch-up, one transaction per event", "ev/s"),
    ("catchup", "projection catch-up, batched", "ev/s"),
    ("catchup_ratio", "  ratio to one transaction per event", "x"),
    ("rebuild", "pocket migrate rebuild", "ev/s"),
    ("rebuild_peak_mb", "  peak memory of the pocket migrate process", "MB"),
    ("latency_small", "one command, 10-event wallet, new process", "ms"),
    ("latency_large", "one command, long-history wallet, new process", "ms"),
    ("latency_ratio", "  ratio long / new", "x"),
    ("page_start", "transactions page at the start of the history", "ms"),
    ("page_end", "transactions page at the end of the history", "ms"),
    ("page_ratio", "  ratio end / start", "x"),
]


def run(
    sizes: Sizes,
    backends: list[str],
    admin_url: str = DEFAULT_ADMIN_URL,
    out: Callable[[str], None] = print,
) -> list[Results]:
    """Runs every measurement on every backend; returns the figures."""
    results = []
    for backend in backends:
        out(f"Measuring {backend}...")
        with database(backend, admin_url) as url:
            results.append(measure(backend, url, sizes, out))
    return results


@contextlib.contextmanager
def database(backend: str, admin_url: str) -> Iterator[str]:
    """A new, empty database for one backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pocket-bench-") as directory:
            yield f"sqlite:///{Path(directory) / 'bench.db'}"
        return
    with scratch_postgres(admin_url, "pocket_bench") as url:
        yield url


@contextlib.contextmanager
def scratch_postgres(admin_url: str, prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the admin URL's server, dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )


def measure(
    backend: str, url: str, sizes: Sizes, out: Callable[[str], None]
) -> Results:
    """Every figure for one backend, on one database."""
    results = Results(backend)
    settings = Settings.from_url(url)
    raw_baselines(settings, url, sizes, results)
    out("  raw baselines done")
    pocket = open_pocket(settings)
    try:
        python_api(pocket, sizes, results)
        out("  Python API done")
        http_api(pocket, url, sizes, results)
        out("  HTTP done")
        write_events(pocket, sizes.events)
        projection(pocket, sizes, results)
        out("  catch-up done")
        rebuild(url, results)
        out("  rebuild done")
        history(pocket, url, sizes, results)
        out("  history done")
    finally:
        pocket.close()
    ratios(results)
    for line in results.notes:  # Said as well as printed: --json prints no notes.
        out(f"  {line}")
    return results


def ratios(results: Results) -> None:
    """The ratios each target is stated in."""
    f = results.figures
    pairs = {
        "commands_16_vs_raw": ("commands_16", "raw_insert_commits"),
        "http_add_money_vs_raw": ("http_add_money", "raw_insert_commits"),
        "http_ratio": ("http_add_money", "http_trivial"),
        "http_two_processes_ratio": ("http_two_processes", "http_add_money_2000"),
        "http_two_routed_ratio": ("http_two_routed", "http_add_money_2000"),
        "http_granian_ratio": ("http_granian", "http_add_money"),
        "catchup_ratio": ("catchup", "catchup_per_event"),
        "latency_ratio": ("latency_large", "latency_small"),
        "page_ratio": ("page_end", "page_start"),
    }
    for key, (top, bottom) in pairs.items():
        if f.get(top) and f.get(bottom):
            f[key] = f[top] / f[bottom]


# Baselines: the database alone


def raw_baselines(settings: Settings, url: str, sizes: Sizes, results: Results) -> None:
    """Single-row commits and batched upserts, with no Pocket in between."""
    if settings.is_postgres:
        commits, upserts = raw_postgres(url, sizes)
    else:
        commits, upserts = raw_sqlite(settings.env["SQLITE_DBNAME"] + ".raw", sizes)
    results.add("raw_insert_commits", commits)
    results.add("raw_batched_upserts", upserts)


def raw_postgres(url: str, sizes: Sizes) -> tuple[float, float]:
    """PostgreSQL alone: single-row INSERT commits/s, batched upserts/s."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_rows (id bigserial PRIMARY KEY, k uuid, v numeric)"
        )
        started = time.perf_counter()
        for n in range(sizes.raw_inserts):
            conn.execute(
                "INSERT INTO raw_rows (k, v) VALUES (%s, %s)", (uuid.uuid4(), n)
            )
        commits = rate(sizes.raw_inserts, started)
        conn.execute("CREATE TABLE raw_upserts (k uuid PRIMARY KEY, v numeric)")
        keys = [uuid.uuid4() for _ in range(1000)]
        rounds = max(1, sizes.raw_upserts // 1000)
        started = time.perf_counter()
        for n in range(rounds):
            conn.execute(
                "INSERT INTO raw_upserts "
                "SELECT * FROM unnest(%s::uuid[], %s::numeric[]) "
                "ON CONFLICT (k) DO UPDATE SET v = raw_upserts.v + excluded.v",
                (keys, [n] * len(keys)),
            )
        upserts = rate(rounds * 1000, started)
        conn.execute("DROP TABLE raw_rows, raw_upserts")
    return commits, upserts


def raw_sqlite(path: str, sizes: Sizes) -> tuple[float, float]:
    """SQLite alone (WAL, as the library opens it): the same two figures."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE raw_rows (id INTEGER PRIMARY KEY, k TEXT, v TEXT)")
        started = time.perf_counter()
        for n in range(sizes.raw_inserts):
            conn.execute(
                "INSERT INTO raw_rows (k, v) VALUES (?, ?)", (str(uuid.uuid4()), str(n))
            )
        commits = rate(sizes.raw_inserts, started)
        conn.execute("CREATE TABLE raw_upserts (k TEXT PRIMARY KEY, v INTEGER)")
        keys = [str(uuid.uuid4()) for _ in range(1000)]
        rounds = max(1, sizes.raw_upserts // 1000)
        started = time.perf_counter()
        for n in range(rounds):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO raw_upserts VALUES (?, ?) "
                "ON CONFLICT (k) DO UPDATE SET v = v + excluded.v",
                [(k, n) for k in keys],
            )
            conn.execute("COMMIT")
        upserts = rate(rounds * 1000, started)
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
    return commits, upserts


def rate(count: int, started: float) -> float:
    """Things per second since started."""
    return count / max(time.perf_counter() - started, 1e-9)


# The Python API


def python_api(pocket: Pocket, sizes: Sizes, results: Results) -> None:
    """Commands per second from 1 caller, then from 16 at once."""
    results.add("commands_1", commands_per_second(pocket, 1, sizes.commands))
    batches, commands = pocket.commit_counts
    results.add("commands_16", commands_per_second(pocket, CALLERS, sizes.commands))
    batches_after, commands_after = pocket.commit_counts
    grouped = (commands_after - commands) / max(1, batches_after - batches)
    results.add("group_size", grouped)


def commands_per_second(pocket: Pocket, callers: int, total: int) -> float:
    """add_money calls per second, from callers threads, each on its own wallet."""
    wallets = [pocket.create_wallet(f"bench-{n}") for n in range(callers)]
    each = max(1, total // callers)
    start = threading.Barrier(callers + 1)

    def work(wallet_id: UUID) -> None:
        start.wait()
        for _ in range(each):
            pocket.add_money(wallet_id, Decimal("1.00"), "bench")

    threads = [threading.Thread(target=work, args=(w,)) for w in wallets]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return rate(each * callers, started)


# HTTP, measured with wrk (a load generator in C, so the clients cost the two
# cores little beside the server they measure)


class BenchUser(NamedTuple):
    """A signed-up user: what a request needs, and the wallet its money goes to."""

    user_id: int
    token: str
    wallet_id: UUID


@dataclass(frozen=True)
class Load:
    """What one wrk process measured against one server."""

    rate: float  # wrk's Requests/sec: every answer, whatever its status
    p50_ms: float
    p99_ms: float
    # Requests the script made: those wrk sent, and one it made to check the
    # script before starting. At most one a connection is unanswered at the end.
    made: int
    answered: int
    statuses: dict[int, int]
    socket_errors: int

    @property
    def ok(self) -> int:
        """Answers with status 200."""
        return self.statuses.get(200, 0)

    @property
    def failures(self) -> int:
        """Answers other than 200, and connect, read, write and timeout errors."""
        return self.answered - self.ok + self.socket_errors


# wrk's script (for str.format). Each wrk thread runs its own copy; setup and
# done run in wrk's main interpreter, which reads the threads' counts at the end.
# The seed comes after `--` on wrk's command line.
WRK_SCRIPT = """\
-- Written by pocket bench.
local users = {{
{users}
}}
local body = {body}
local threads = {{}}
made = 0
answered = 0
statuses = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  math.randomseed(tonumber(args[1]) * 16 + thread_number)
end

function request()
  made = made + 1
  if #users == 0 then
    return wrk.format("GET", "/health")
  end
  local user = users[math.random(#users)]
  local headers = {{
    ["Authorization"] = "Bearer " .. user[2],
    ["Content-Type"] = "application/json",
  }}
  return wrk.format("POST", "/users/" .. user[1] .. "/add_money", headers, body)
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total_made, total_answered, total_statuses = 0, 0, {{}}
  for _, thread in ipairs(threads) do
    total_made = total_made + thread:get("made")
    total_answered = total_answered + thread:get("answered")
    for status, count in pairs(thread:get("statuses")) do
      total_statuses[status] = (total_statuses[status] or 0) + count
    end
  end
  local counts = {{}}
  for status, count in pairs(total_statuses) do
    table.insert(counts, status .. "=" .. count)
  end
  io.write(string.format("pocket-bench: made %d answered %d statuses %s\\n",
    total_made, total_answered, table.concat(counts, " ")))
end
"""


def http_api(pocket: Pocket, url: str, sizes: Sizes, results: Results) -> None:
    """add_money through `pocket serve`, driven by wrk, beside GET /health of the
    same server; then with more users, then on two servers at once. Checks that
    the wallets hold the money the answers say was added."""
    if wrk_command() is None:
        results.note(WRK_MISSING)
        return
    users = sign_up(url, FEW_USERS + MANY_USERS)
    few, many = users[:FEW_USERS], users[FEW_USERS:]
    with tempfile.TemporaryDirectory(prefix="pocket-bench-wrk-") as directory:
        health = write_script(Path(directory, "health.lua"), [])
        few_script = write_script(Path(directory, "few.lua"), few)
        many_script = write_script(Path(directory, "many.lua"), many)
        # Routed by user: each server gets its own half of the users (as a proxy
        # routing on the user id in the path would), so no wallet is written by
        # both and neither server's cached wallets go stale.
        halves = [
            write_script(Path(directory, f"half{n}.lua"), many[n::2]) for n in (0, 1)
        ]
        with serving(url) as port:
            record(results, "http_trivial", drive([port], health, sizes))
            loads = record(
                results, "http_add_money", drive([port], few_script, sizes), p50=True
            )
            loads += record(
                results, "http_add_money_2000", drive([port], many_script, sizes)
            )
            with granian_serving(url) as other:
                if other is None:
                    results.note(GRANIAN_MISSING)
                else:
                    record(
                        results, "http_granian_trivial", drive([other], health, sizes)
                    )
                    loads += record(
                        results, "http_granian", drive([other], few_script, sizes)
                    )
            with serving(url) as second:
                loads += record(
                    results,
                    "http_two_processes",
                    drive([port, second], many_script, sizes),
                )
                loads += record(
                    results,
                    "http_two_routed",
                    drive([port, second], halves, sizes),
                )
                # While both servers run: what wrk left in flight has landed.
                results.note(check_money(pocket, users, loads))


def wrk_command() -> str | None:
    """Where wrk is installed, or None."""
    return shutil.which("wrk")


def sign_up(url: str, count: int) -> list[BenchUser]:
    """New users, signed up through PocketService (what POST /users calls) from
    several threads: quicker than over HTTP, and the same rows and events."""
    service = bootstrap(Settings.from_url(url))

    def one(_: int) -> BenchUser:
        account, token = service.create_user("bench")
        return BenchUser(account.user.id, token, account.user.wallet_id)

    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            return list(pool.map(one, range(count)))
    finally:
        service.close()


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


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def write_script(path: Path, users: list[BenchUser]) -> Path:
    """wrk's Lua script: add_money for a random one of the users per request (or,
    with no users, GET /health), counting what it made and each answer's status."""
    rows = "\n".join(f"  {{{u.user_id}, {lua_string(u.token)}}}," for u in users)
    path.write_text(WRK_SCRIPT.format(users=rows, body=lua_string(ADD_MONEY_BODY)))
    return path


def lua_string(text: str) -> str:
    """A Lua string literal: letters and digits as they are, every other byte as
    a decimal escape."""
    return (
        '"'
        + "".join(
            chr(b) if bytes([b]).isalnum() else f"\\{b:03d}" for b in text.encode()
        )
        + '"'
    )


def drive(ports: list[int], script: Path | list[Path], sizes: Sizes) -> list[Load]:
    """wrk against each port at once (with one script, or a script per port),
    the connections and threads split evenly."""
    connections = CALLERS // len(ports)
    threads = max(1, WRK_THREADS // len(ports))
    scripts = script if isinstance(script, list) else [script] * len(ports)
    running = [
        start_wrk(port, each, sizes.http_seconds, connections, threads)
        for port, each in zip(ports, scripts, strict=True)
    ]
    return [finish_wrk(process, sizes.http_seconds) for process in running]


def start_wrk(
    port: int, script: Path, seconds: int, connections: int, threads: int
) -> subprocess.Popen[str]:
    """One wrk process, started (its script seeded at random)."""
    command = wrk_command()
    assert command is not None
    return subprocess.Popen(
        [
            command,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            # A slow answer is a latency to report, not an error.
            f"--timeout={WRK_TIMEOUT}s",
            "--latency",
            f"--script={script}",
            f"http://127.0.0.1:{port}",
            "--",
            str(random.randrange(1, 2**30)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_wrk(process: subprocess.Popen[str], seconds: int) -> Load:
    """Waits for a wrk process; what it measured."""
    stdout, stderr = process.communicate(timeout=seconds + WRK_TIMEOUT + 30)
    if process.returncode != 0:
        msg = f"wrk failed ({process.returncode}): {stderr.strip() or stdout.strip()}"
        raise RuntimeError(msg)
    return parse_wrk(stdout)


def parse_wrk(output: str) -> Load:
    """A Load from wrk's output (with --latency, and the script's own line)."""
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    counts = re.search(
        r"^pocket-bench: made (\d+) answered (\d+) statuses ?(.*)$",
        output,
        re.MULTILINE,
    )
    percentiles = {
        int(share): float(number) * MILLISECONDS[unit]
        for share, number, unit in re.findall(
            r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE
        )
    }
    if rate is None or counts is None or not {50, 99} <= percentiles.keys():
        msg = f"wrk said what pocket bench cannot read:\n{output}"
        raise RuntimeError(msg)
    errors = re.search(r"Socket errors: ([^\n]*)", output)
    return Load(
        rate=float(rate[1]),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        made=int(counts[1]),
        answered=int(counts[2]),
        statuses={
            int(status): int(count)
            for status, count in (pair.split("=") for pair in counts[3].split())
        },
        socket_errors=sum(map(int, re.findall(r"\d+", errors[1] if errors else ""))),
    )


def record(
    results: Results, key: str, loads: list[Load], *, p50: bool = False
) -> list[Load]:
    """Adds a run's rate (summed over its wrk processes) and p99 (the worse), and
    p50 if asked; or, if any answer was not a 200 or a socket failed, a note
    instead of the figures: failures are never counted as throughput."""
    if any(load.failures for load in loads):
        results.note(f"{key} left out: {describe_failures(loads)}")
        return loads
    results.add(key, sum(load.rate for load in loads))
    results.add(f"{key}_p99", max(load.p99_ms for load in loads))
    if p50:
        (load,) = loads
        results.add(f"{key}_p50", load.p50_ms)
    return loads


def describe_failures(loads: list[Load]) -> str:
    """What went wrong in a run, in words."""
    statuses: Counter[int] = Counter()
    for load in loads:
        statuses.update(load.statuses)
    answers = ", ".join(
        f"{count:,} x {status}" for status, count in sorted(statuses.items())
    )
    sockets = sum(load.socket_errors for load in loads)
    return f"answers {answers}; {sockets:,} socket errors"


def check_money(pocket: Pocket, users: list[BenchUser], loads: list[Load]) -> str:
    """Raises unless the users' wallets hold the amount for every 200 answer to
    add_money, and no more than for every request the scripts made (wrk stops
    with a request in flight on each connection, which the server still
    commits); returns what it found, in words."""
    held = settled_total(pocket, users)
    ok = sum(load.ok for load in loads)
    made = sum(load.made for load in loads)
    found = (
        f"the {len(users):,} users' wallets hold {held:,}; wrk had {ok:,} answers "
        f"200 to add_money {AMOUNT} and its scripts made {made:,} requests"
    )
    if not ok * AMOUNT <= held <= made * AMOUNT:
        msg = f"Money lost or made up: {found}"
        raise RuntimeError(msg)
    in_flight = (held - ok * AMOUNT) / AMOUNT
    return f"money checked: {found} ({in_flight:,.0f} in flight as wrk stopped)"


def settled_total(pocket: Pocket, users: list[BenchUser]) -> Decimal:
    """The sum of the users' balances, once two reads a moment apart agree: the
    requests wrk left in flight are answered after it stops."""
    held = None
    for _ in range(20):
        again = sum(
            (pocket.get_wallet(user.wallet_id).balance for user in users), Decimal(0)
        )
        if again == held:
            break
        held = again
        time.sleep(0.5)
    assert held is not None
    return held


# The projection


def write_events(pocket: Pocket, count: int, wallets: int = 1000) -> None:
    """Writes about count money events across many wallets, a thousand a save."""
    opened = [Wallet.open(f"bulk-{n}", uuid.uuid4(), Cause()) for n in range(wallets)]
    pocket.save(*opened)
    written = 0
    while written < count:
        chunk = opened[: min(wallets, count - written)]
        for wallet in chunk:
            wallet.add_money(Decimal("1.25"), "bench", Cause())
        pocket.save(*chunk)
        written += len(chunk)


def projection(pocket: Pocket, sizes: Sizes, results: Results) -> None:
    """Catch-up rate, batched and one transaction per event, into a spare version."""
    catalog = open_catalog(pocket)
    spare = 1 if catalog.live_version() != 1 else 2
    catalog.drop(spare)
    catalog.create_rows(spare)
    with closing(open_builder(pocket, spare, batch_size=1)) as single:
        started = time.perf_counter()
        for _ in range(sizes.per_event_events):
            single.process_section(pocket.name)
        results.add("catchup_per_event", rate(single.position or 0, started))
    catalog.drop(spare)
    catalog.create_rows(spare)
    with closing(open_builder(pocket, spare, batch_size=2000)) as batched:
        started = time.perf_counter()
        batched.pull_and_process(pocket.name)
        results.add("catchup", rate(batched.position or 0, started))
    catalog.drop(spare)


def rebuild(url: str, results: Results) -> None:
    """`pocket migrate` to the spare version, in a process of its own: rate, memory."""
    settings = Settings.from_url(url)
    pocket = open_pocket(settings)
    catalog = open_catalog(pocket)
    spare = 1 if catalog.live_version() != 1 else 2
    head = pocket.recorder.max_notification_id() or 0
    pocket.close()
    env = {**os.environ, "POCKET_DATABASE_URL": url, "POCKET_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "pocket.cli", "migrate", "--version", str(spare)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip()
            msg = f"pocket migrate failed ({process.returncode}): {said}"
            raise RuntimeError(msg)
    results.add("rebuild", rate(head, started))
    results.add("rebuild_peak_mb", usage.ru_maxrss / 1024)  # kilobytes on Linux


# History length


def history(pocket: Pocket, url: str, sizes: Sizes, results: Results) -> None:
    """A command and a page on a short and on a long history."""
    small = long_wallet(pocket, 10)
    large = long_wallet(pocket, sizes.history_events)
    results.add("latency_small", cold_latency(url, small, sizes.repeats))
    results.add("latency_large", cold_latency(url, large, sizes.repeats))
    last = pocket.get_wallet(large).version
    results.add("page_start", page_latency(pocket, large, 0, sizes.repeats * 4))
    results.add("page_end", page_latency(pocket, large, last - 50, sizes.repeats * 4))


def long_wallet(pocket: Pocket, events: int) -> UUID:
    """A wallet with about that many events, written a thousand at a time."""
    wallet = Wallet.open("history", uuid.uuid4(), Cause())
    for n in range(1, events):
        wallet.add_money(Decimal("0.01"), "bench", Cause())
        if n % 1000 == 0:
            pocket.save(wallet)
    pocket.save(wallet)
    return wallet.id


def cold_latency(url: str, wallet_id: UUID, repeats: int) -> float:
    """Median milliseconds of the first command on a wallet, in a new process."""
    timings = []
    for _ in range(repeats):
        answer = subprocess.run(
            [sys.executable, "-m", "pocket.bench", "--cold", url, str(wallet_id)],
            capture_output=True,
            text=True,
            check=True,
        )
        timings.append(float(answer.stdout.strip().splitlines()[-1]))
    return statistics.median(timings)


def cold_command(url: str, wallet_id: str) -> float:
    """(In a new process.) Milliseconds of one command on a wallet not yet loaded."""
    pocket = open_pocket(Settings.from_url(url))
    warm = pocket.create_wallet("warm-up")
    pocket.add_money(warm, Decimal("1"), "warm-up")  # connections, committer, imports
    started = time.perf_counter()
    pocket.add_money(UUID(wallet_id), Decimal("1"), "cold")
    elapsed = (time.perf_counter() - started) * 1000
    pocket.close()
    return elapsed


def page_latency(pocket: Pocket, wallet_id: UUID, after: int, repeats: int) -> float:
    """Median milliseconds to read one page of 50 transactions."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        page = pocket.history(wallet_id, after=after, limit=50)
        timings.append((time.perf_counter() - started) * 1000)
        assert page.transactions
    return statistics.median(timings)


# Report


def report(results: list[Results], sizes: Sizes) -> str:
    """The table, with the machine it ran on."""
    backends = [r.backend for r in results]
    width = max(len(label) for _, label, _ in ROWS) + 2
    lines = [
        f"Pocket benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {postgres_version(results)}",
        f"Sizes: {json.dumps(asdict(sizes))}",
        f"HTTP: wrk -t{WRK_THREADS} -c{CALLERS}, {sizes.http_seconds} s a run, "
        "a random user per request (2 servers: a wrk -t1 -c8 on each, at once)",
        "",
        " " * width + "".join(f"{b:>14}" for b in backends),
    ]
    for key, label, unit in ROWS:
        cells = [format_figure(r.figures.get(key), unit) for r in results]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    notes = [f"{r.backend}: {line}" for r in results for line in r.notes]
    return "\n".join([*lines, *([""] if notes else []), *notes])


def format_figure(value: float | None, unit: str) -> str:
    """A figure as the table shows it."""
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("ms", "MB", ""):
        return f"{value:,.1f} {unit}".rstrip()
    return f"{value:,.0f} {unit}"


def postgres_version(results: list[Results]) -> str:
    """The PostgreSQL server's version, when PostgreSQL was measured."""
    if not any(r.backend == "postgres" for r in results):
        return "no PostgreSQL"
    url = os.environ.get("POCKET_BENCH_POSTGRES_URL", DEFAULT_ADMIN_URL)
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def main(argv: list[str] | None = None) -> int:
    """`python -m pocket.bench --cold URL WALLET`: one cold command (internal)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "--cold":
        print(f"{cold_command(args[1], args[2]):.3f}")
        return 0
    print("Use `pocket bench`.", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
