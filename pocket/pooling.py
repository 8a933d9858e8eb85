"""Whether each of Pocket's connections keeps one server process, its own, for life.

Pocket needs that: its follower and migration locks are session advisory locks,
its projector LISTENs, its statements are prepared once per connection, and the
settle of a write whose reply was lost ends the server process of that
connection (pocket.postgres). A connection pooler in transaction or statement
mode (PgBouncer's pool_mode=transaction or statement) breaks all of it: between
two transactions, a client connection's server process goes to another client.
So does a pooler in session mode that hands a server process to the next client
without resetting it (PgBouncer with server_reset_query other than DISCARD ALL):
the last client's locks go along.

check_sessions finds either out with two connections and a few round trips, the
way those poolers behave, not by asking them what they are. A pooler per
transaction is told by its mode's name almost always; the last check, which
finds session state handed on, catches it every time (with less precise words).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import psycopg
from psycopg import pq

# The session advisory lock that marks a server process as one connection's:
# the key's first half (classid) says so ("pkt\x01"; pocket.locks uses
# "pkt\x00"), the second half (objid) is drawn for each connection.
MARKER_CLASS = 0x706B7401
# Takes a marker (objid as its one parameter): true if nobody held it, which
# makes it unique among the sessions of the database while it is held.
TAKE_MARKER = f"pg_try_advisory_lock({MARKER_CLASS}, %s)"
# The server process holding a marker (objid as its one parameter), if any.
MARKER_HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND classid = {MARKER_CLASS} AND objid = %s AND objsubid = 2 "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

# Which session answers: the tag it was given ({tag}: set_config to give it
# one, current_setting to read it) and its server process's pid, told apart from
# another server's.
SESSION = "SELECT {tag} || ' ' || pg_backend_pid() || '@' || pg_postmaster_start_time()"
TAG_SETTING = "pocket.sessions_check"
# What the server sees at the other end of the connection.
PEER = "SELECT host(inet_client_addr()), inet_client_port()"
# What PgBouncer answers a BEGIN in statement mode.
STATEMENT_MODE_REFUSAL = "statement pooling mode"

PoolMode = Literal["transaction", "statement"]


class PoolerProblem(Exception):
    """The connections do not keep a server process of their own; the message
    says why and what to change, in one line."""


class PooledPerTransaction(PoolerProblem):
    """A pooler hands each transaction (or statement) to any server process."""

    def __init__(self, mode: PoolMode) -> None:
        refusal = " refuses transaction blocks" if mode == "statement" else ""
        super().__init__(
            f"goes through a connection pooler in {mode} mode (PgBouncer "
            f"pool_mode={mode}{refusal}): Pocket needs one server process per "
            "connection for the connection's life (session advisory locks, "
            "LISTEN, prepared statements, settling a write whose reply was "
            "lost), so use pool_mode=session or connect to PostgreSQL directly"
        )
        self.mode = mode


class SessionsNotReset(PoolerProblem):
    """A pooler hands a server process to other clients with a client's
    session advisory locks still held."""

    def __init__(self) -> None:
        super().__init__(
            "goes through a connection pooler that hands a server process to "
            "other clients with a client's session advisory locks still held "
            "(PgBouncer: pool_mode=transaction, or server_reset_query other "
            "than DISCARD ALL): Pocket's locks would outlive its processes, so "
            "use pool_mode=session with server_reset_query = DISCARD ALL (the "
            "default), or connect to PostgreSQL directly"
        )


class ProbeTimedOut(Exception):
    """The server took too long to answer (a pooler in session mode whose pool
    is full makes a second connection wait for a server process)."""


def check_sessions(
    connect: Callable[[], psycopg.Connection[Any]], timeout: float = 5.0
) -> None:
    """Raises a PoolerProblem unless connections made by connect each keep one
    server process for life, and a server process that ends with its client
    connection, or is reset before another client gets it; ProbeTimedOut if an
    answer takes longer than timeout; psycopg.Error if the server fails."""
    deadline = time.monotonic() + timeout
    with contextlib.closing(connect()) as first:
        with contextlib.closing(connect()) as second:
            # Both ways round: another client of the pooler taking a server
            # process at the wrong moment may hide it one way.
            keep_server_processes(first, second, deadline)
            keep_server_processes(second, first, deadline)
            if is_direct(first, deadline):
                return
            marker = take_marker(second, deadline)
        # The second connection has closed: its marker must go with it.
        while ask(first, MARKER_HOLDER % marker, deadline):
            if time.monotonic() > deadline - 0.1:
                raise SessionsNotReset
            time.sleep(0.01)


def keep_server_processes(
    first: psycopg.Connection[Any], second: psycopg.Connection[Any], deadline: float
) -> None:
    """Raises PooledPerTransaction unless each connection keeps its session.

    Each connection gives its session a tag of its own, then asks again
    which session it is in. The first holds a transaction open while the
    second gives its tag, so that the two are in different server
    processes, then ends it. A pooler per transaction then gives each
    connection's next transaction a server process from its idle list: one
    reset since (PgBouncer's server_reset_query_always), which has no tag;
    or another, whose tag is not this connection's; or its own again,
    which it put at the front of the list (PgBouncer's default) where the
    second connection's next transaction finds it, with the first's tag. (At
    the back, with server_round_robin, the first's next transaction gets
    another one.)
    """
    try:
        ask(first, "BEGIN", deadline)
    except psycopg.Error as error:
        if STATEMENT_MODE_REFUSAL in str(error):
            raise PooledPerTransaction("statement") from None
        raise
    first_before = ask(first, give_tag(), deadline)
    second_before = ask(second, give_tag(), deadline)
    ask(first, "COMMIT", deadline)
    first_after = ask(first, read_tag(), deadline)
    second_after = ask(second, read_tag(), deadline)
    if first_before != first_after or second_before != second_after:
        raise PooledPerTransaction("transaction")


def give_tag() -> str:
    """Asks which session answers, having given it a new tag."""
    tag = f"set_config('{TAG_SETTING}', '{secrets.token_hex(8)}', false)"
    return SESSION.format(tag=tag)


def read_tag() -> str:
    """Asks which session answers, by the tag it was given."""
    return SESSION.format(tag=f"current_setting('{TAG_SETTING}', true)")


def is_direct(conn: psycopg.Connection[Any], deadline: float) -> bool:
    """Whether the server sees this very connection's end of the socket: no
    pooler or proxy in between."""
    host, port = ask(conn, PEER, deadline)
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as mine:
        if mine.family == socket.AF_UNIX:
            return host is None
        address = mine.getsockname()
    return (host, port) == (address[0], str(address[1]))


def take_marker(conn: psycopg.Connection[Any], deadline: float) -> int:
    """Takes a marker nobody holds on the connection's server process; its objid."""
    while True:
        marker = secrets.randbelow(2**31)
        if ask(conn, f"SELECT {TAKE_MARKER % marker}", deadline) == ("t",):
            return marker


def ask(
    conn: psycopg.Connection[Any], query: str, deadline: float
) -> tuple[str | None, ...]:
    """The first row of a query's answer (as text; () when it has none),
    waited for until the deadline.

    psycopg waits for an answer for as long as it takes, and a pooler keeps a
    client waiting while its pool is full: libpq's own calls, waited on here.
    """
    pgconn = conn.pgconn
    pgconn.send_query(query.encode())
    row: tuple[str | None, ...] = ()
    error: str | None = None
    while True:
        while pgconn.is_busy():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProbeTimedOut
            if select.select([pgconn.socket], [], [], left)[0]:
                pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if result.status == pq.ExecStatus.FATAL_ERROR:
            error = result.get_error_message()
        elif result.ntuples:
            values = (result.get_value(0, i) for i in range(result.nfields))
            row = tuple(None if v is None else v.decode() for v in values)
    if error is not None:
        raise psycopg.OperationalError(" ".join(error.split()))
    return row
