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
import multiprocessing
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
from psycopg import sql

from pocket.application import Pocket
from pocket.bootstrap import open_catalog, open_pocket
from pocket.config import Settings
from pocket.domainmodel import Cause, Wallet
from pocket.operations import open_builder

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CALLERS = 16


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    commands: int = 4000
    http_seconds: float = 5.0
    events: int = 200_000
    per_event_events: int = 2_000
    history_events: int = 100_000
    raw_inserts: int = 3_000
    raw_upserts: int = 200_000
    repeats: int = 5


TINY = Sizes(
    commands=64,
    http_seconds=0.5,
    events=600,
    per_event_events=40,
    history_events=250,
    raw_inserts=50,
    raw_upserts=2_000,
    repeats=2,
)


@dataclass
class Results:
    """One backend's figures (None where a figure could not be measured)."""

    backend: str
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        """Records a figure."""
        self.figures[name] = value


# What is printed, in order: (key, label, unit, the baseline it is judged by).
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
    ("http_trivial", f"baseline: GET /health, {CALLERS} clients, same server", "/s"),
    ("http_add_money", f"POST add_money, {CALLERS} clients", "/s"),
    ("http_ratio", "  ratio to GET /health", "x"),
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
        http_api(url, sizes, results)
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
    return results


def ratios(results: Results) -> None:
    """The ratios each target is stated in."""
    f = results.figures
    pairs = {
        "commands_16_vs_raw": ("commands_16", "raw_insert_commits"),
        "http_ratio": ("http_add_money", "http_trivial"),
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


# HTTP


def http_api(url: str, sizes: Sizes, results: Results) -> None:
    """add_money through `pocket serve`, beside a trivial endpoint of that server."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pocket.cli",
            "serve",
            "--no-follower",
            "--port",
            str(port),
            "--threads",
            str(CALLERS),
        ],
        env={**os.environ, "POCKET_DATABASE_URL": url, "POCKET_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port)
        users = [sign_up(port) for _ in range(CALLERS)]
        results.add("http_trivial", http_load(port, users, None, sizes.http_seconds))
        body = json.dumps({"amount": "1.00", "source": "bench"})
        results.add("http_add_money", http_load(port, users, body, sizes.http_seconds))
    finally:
        server.terminate()
        server.wait(30)


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(port: int, timeout: float = 60.0) -> None:
    """Waits for the server to answer GET /health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.1)
    msg = "pocket serve did not start"
    raise RuntimeError(msg)


def sign_up(port: int) -> tuple[int, str]:
    """A new user's id and token."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/users",
        body=json.dumps({"name": "bench"}),
        headers={"Content-Type": "application/json"},
    )
    answer = json.loads(conn.getresponse().read())
    return int(answer["user"]["id"]), str(answer["token"])


def http_load(
    port: int, users: list[tuple[int, str]], body: str | None, seconds: float
) -> float:
    """Requests per second from one keep-alive client per user, in a process of
    their own (so the clients do not share the server's interpreter)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        done: int = pool.apply(http_clients, (port, users, body, seconds))
    return done / seconds


def http_clients(
    port: int, users: list[tuple[int, str]], body: str | None, seconds: float
) -> int:
    """Runs the clients (in the pool's process); returns how many answers were 200."""
    counts = [0] * len(users)
    deadline = time.monotonic() + seconds
    start = threading.Barrier(len(users))

    def client(index: int) -> None:
        user_id, token = users[index]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        start.wait()
        while time.monotonic() < deadline:
            if body is None:
                conn.request("GET", "/health", headers=headers)
            else:
                path = f"/users/{user_id}/add_money"
                conn.request("POST", path, body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status == 200:
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(users))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


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
        "",
        " " * width + "".join(f"{b:>14}" for b in backends),
    ]
    for key, label, unit in ROWS:
        cells = [format_figure(r.figures.get(key), unit) for r in results]
        lines.append(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


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
