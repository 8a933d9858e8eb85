"""The benchmark's baselines from the database alone: single-row commits and
batched upserts, with no Pocket in between."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import psycopg

from pocket.config import Settings
from tools.bench.figures import Results, Sizes, rate


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
