"""The benchmark's table: its rows in order, each figure as it is printed, the
machine it ran on, and the notes under it."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime

import psycopg

from tools.bench.figures import CALLERS, Results, Sizes
from tools.bench.http_load import FEW_USERS, MANY_USERS
from tools.bench.live import LIVE_RATE
from tools.bench.wrk import WRK_THREADS
from tools.scratch import DEFAULT_ADMIN_URL

# The HTTP figures, printed together: wrk measures them, when it is installed.
HTTP_ROWS: list[tuple[str, str, str]] = [
    # The baselines: the same server (pocket.server) with a bare Flask app, and
    # with the library's documented shape behind Flask (tools.bench.baseline_apps).
    ("http_flask", "baseline: GET /health, bare Flask app, same server", "/s"),
    ("http_flask_p99", "  latency p99", "ms"),
    ("http_trivial", f"baseline: GET /health, {CALLERS} connections, 1 server", "/s"),
    ("http_trivial_p99", "  latency p99", "ms"),
    ("http_flask_ratio", "  bare Flask / pocket serve (target <= 1.3x)", "x"),
    (
        "http_library",
        f"baseline: POST deposit, eventsourcing app, {FEW_USERS} aggregates",
        "/s",
    ),
    ("http_library_p99", "  latency p99", "ms"),
    ("http_library_cpu_us", "  server CPU per request", "us"),
    ("http_add_money", f"POST add_money, {FEW_USERS} users, 1 server", "/s"),
    ("http_add_money_p50", "  latency p50", "ms"),
    ("http_add_money_p99", "  latency p99", "ms"),
    ("http_add_money_vs_raw", "  ratio to raw single-row INSERT commits", "x"),
    ("http_ratio", "  ratio to GET /health", "x"),
    ("http_add_money_vs_library", "  ratio to the library's shape", "x"),
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
    # What users run: `make run` (the follower in the server), or the server
    # beside a `pocket follow`.
    (
        "http_default",
        f"POST add_money, {FEW_USERS} users, pocket serve with its follower",
        "/s",
    ),
    ("http_default_p99", "  latency p99", "ms"),
    ("http_default_cpu_us", "  server CPU per request", "us"),
    ("http_default_vs_library", "  ratio to the library's shape", "x"),
    ("http_default_cpu_vs_library", "  CPU per request, ratio to the library's", "x"),
    (
        "http_default_webhook",
        f"POST add_money, {FEW_USERS} users, pocket serve, a slow webhook receiver",
        "/s",
    ),
    ("http_default_webhook_p99", "  latency p99", "ms"),
    ("http_webhook_vs_default", "  ratio to no webhook (target >= 0.95x)", "x"),
    (
        "http_split",
        f"POST add_money, {FEW_USERS} users, --no-follower + pocket follow",
        "/s",
    ),
    ("http_split_p99", "  latency p99", "ms"),
    ("http_split_cpu_us", "  server CPU per request", "us"),
    ("http_split_follow_cpu_us", "  pocket follow CPU per event applied", "us"),
    ("http_split_vs_library", "  ratio to the library's shape", "x"),
    ("http_default_vs_split", "  follower in the server / split (target >= 0.9x)", "x"),
    # The faster deployment (docs/deployment.md): nginx, granian, pocket follow.
    (
        "http_front",
        f"POST add_money, {FEW_USERS} users, nginx + granian + pocket follow",
        "/s",
    ),
    ("http_front_p99", "  latency p99", "ms"),
    ("http_front_cpu_us", "  nginx and granian CPU per request", "us"),
    ("http_front_vs_default", "  ratio to pocket serve with its follower", "x"),
    ("http_front_cpu_vs_default", "  CPU per request, ratio to pocket serve's", "x"),
    # Another server for the same app (pocket.wsgi), for comparison only: it
    # does not keep the slow-client limits that pocket serve's waitress does.
    ("http_granian_trivial", "comparison: GET /health, granian WSGI, 1 server", "/s"),
    ("http_granian_trivial_p99", "  latency p99", "ms"),
    ("http_granian", f"comparison: POST add_money, {FEW_USERS} users, granian", "/s"),
    ("http_granian_p99", "  latency p99", "ms"),
    ("http_granian_ratio", "  ratio to pocket serve (waitress)", "x"),
]

# Measured only where nginx and granian are installed (else "-" and a note).
FRONT_ONLY = {
    "http_front",
    "http_front_p99",
    "http_front_cpu_us",
    "http_front_vs_default",
    "http_front_cpu_vs_default",
}

# The library's shape runs on PostgreSQL only: on SQLite these are "-".
POSTGRES_ONLY = {
    "http_library",
    "http_library_p99",
    "http_library_cpu_us",
    "http_add_money_vs_library",
    "http_default_vs_library",
    "http_default_cpu_vs_library",
    "http_split_vs_library",
}

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
    ("commands_hot", f"commands, Python API, {CALLERS} callers, one wallet", "/s"),
    *HTTP_ROWS,
    ("catchup_per_event", "baseline: catch-up, one transaction per event", "ev/s"),
    ("catchup", "projection catch-up, batched", "ev/s"),
    ("catchup_ratio", "  ratio to one transaction per event", "x"),
    ("catchup_cpu_us", "  CPU per event, batched", "us"),
    (
        "followers_catchup_cpu_us",
        "  CPU per event, every follower pocket follow runs, batched",
        "us",
    ),
    (
        "follow_live_cpu_us",
        f"pocket follow live, {LIVE_RATE} commands/s: CPU per event (<= 100)",
        "us",
    ),
    ("follow_live_rate", "  commands a second, achieved", "/s"),
    ("follow_live_lag_events", "  lag, most seen in 50 ms samples: events", "ev"),
    ("follow_live_lag_ms", "  lag, most seen: oldest unapplied event's age", "ms"),
    (
        "follow_live_cpu_ratio",
        "  ratio to the same followers' catch-up (target <= 3)",
        "x",
    ),
    ("follow_live_vs_projection", "  ratio to the projection's catch-up alone", "x"),
    ("rebuild", "pocket migrate rebuild", "ev/s"),
    ("rebuild_peak_mb", "  peak memory of the pocket migrate process", "MB"),
    ("latency_small", "one command, 10-event wallet, new process", "ms"),
    ("latency_large", "one command, long-history wallet, new process", "ms"),
    ("latency_ratio", "  ratio long / new", "x"),
    ("page_start", "transactions page at the start of the history", "ms"),
    ("page_end", "transactions page at the end of the history", "ms"),
    ("page_ratio", "  ratio end / start", "x"),
]


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
        "a random user per request (2 servers: a wrk -t1 -c8 on each, at once); "
        "pocket serve --no-follower where a row does not say",
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
