"""Throwaway resources for whatever runs Pocket beside a real server: the
benchmark, the profiler and the tests. A TCP port nobody listens on, and a
PostgreSQL database created for a block and dropped after it.

It lives here, not in the benchmark nor under tests/, because all three use it
and neither of them should import the other's infrastructure.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql

# The machine's PostgreSQL, where scratch databases go unless told otherwise.
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    """A TCP port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
