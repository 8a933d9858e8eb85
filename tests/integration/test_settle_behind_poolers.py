"""A write whose reply was lost is settled without ending a server process that
serves another client, behind PgBouncer.

The settle ends the server process that a lost statement may still be running
in. Through a pooler, the process a connection was first given can serve
another client by then: in session mode once the connection is gone (the
pooler resets the process and hands it on), in transaction mode after every
transaction. Here that other client holds a transaction open in it, and must
keep it. Pocket runs embedded (no `pocket` command, so no check at start), with
one pooled connection, behind a proxy that loses the link.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError

from pocket.application import Pocket
from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, OpenWallet
from pocket.config import Settings
from pocket.postgres_events import PocketEventsRecorder
from pocket.postgres_processes import Backend
from tests.conftest import StartPgBouncer
from tests.pgbouncer import PgBouncer, PoolMode
from tests.pgserver import PostgresServer
from tests.proxy import Proxy

pytestmark = pytest.mark.postgres


@dataclass
class Setup:
    bouncer: PgBouncer
    proxy: Proxy
    pocket: Pocket
    url: str  # The database, directly.


@pytest.fixture
def start(pooled_postgres: PostgresServer, pgbouncer: StartPgBouncer) -> Iterator[Any]:
    """Starts Pocket behind a proxy, behind a PgBouncer in the mode given."""
    opened: list[Setup] = []

    def begin(mode: PoolMode, pool_size: int) -> Setup:
        url = pooled_postgres.create_database(f"pocket_{uuid.uuid4().hex[:8]}")
        dbname = url.rsplit("/", 1)[1]
        bouncer = pgbouncer(mode, default_pool_size=str(pool_size))
        proxy = Proxy("127.0.0.1", bouncer.port)
        settings = Settings.from_url(proxy.url(dbname))
        env = {**settings.env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"}
        setup = Setup(bouncer, proxy, open_pocket(replace(settings, env=env)), url)
        opened.append(setup)
        return setup

    yield begin
    for setup in opened:
        setup.pocket.close()
        setup.proxy.close()


def backend_of(pocket: Pocket) -> Backend:
    """The server process Pocket's one pooled connection was first given."""
    recorder = pocket.recorder
    assert isinstance(recorder, PocketEventsRecorder)
    (backend,) = recorder.processes._backends.values()
    return backend


class Client:
    """Another client of the pooler, with a transaction open (in a thread of its
    own, for it may have to wait for a server process)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.pid: int | None = None
        self.began = threading.Event()
        self.thread = threading.Thread(target=self._begin, daemon=True)
        self.thread.start()

    def _begin(self) -> None:
        self.conn.execute("BEGIN")
        # Through a pooler per transaction, Pocket's session settings (the
        # library sets an idle-in-transaction timeout) stay in the server
        # processes other clients are given: not this transaction's.
        self.conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        self.pid = int(row[0])
        self.began.set()

    def still_in_its_transaction(self) -> bool:
        """Its server process is the one it began in, and it can commit."""
        row = self.conn.execute("SELECT pg_backend_pid()").fetchone()
        self.conn.execute("COMMIT")
        return row is not None and row[0] == self.pid

    def close(self) -> None:
        self.conn.close()


def add_money_in_thread(
    pocket: Pocket, wallet_id: uuid.UUID, marker: str
) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(
                pocket.add_money(
                    AddMoney(wallet_id=wallet_id, amount=Decimal("2"), source=marker)
                )
            )
        except Exception as error:  # The test looks at it.
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def recorded(url: str, marker: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pocket_events WHERE position(%s in state) > 0",
            [marker.encode()],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_session_mode_a_process_handed_on_is_not_ended(start: Any) -> None:
    # Four server processes: Pocket's connection has one, three other clients
    # the rest, and a fourth client waits for one.
    setup: Setup = start("session", 4)
    wallet_id = setup.pocket.open_wallet(OpenWallet(user_id="u"))
    setup.pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="first")
    )
    first = backend_of(setup.pocket)
    url = setup.bouncer.url_for(setup.url.rsplit("/", 1)[1])
    holders = [psycopg.connect(url, autocommit=True) for _ in range(3)]
    for holder in holders:
        holder.execute("SELECT 1")
    waiting = Client(url)
    try:
        assert not waiting.began.wait(0.3)  # the pool is full
        marker = f"cut-{uuid.uuid4().hex}"
        # The link is lost before the statement reaches the pooler: its server
        # process is idle, so the pooler resets it and hands it to the client
        # that waits, which begins a transaction in it.
        trap = setup.proxy.arm(marker, forward=False)
        thread, outcome = add_money_in_thread(setup.pocket, wallet_id, marker)
        assert trap.sprung.wait(10)
        assert waiting.began.wait(10)
        assert waiting.pid == first.pid
        for holder in holders:  # Room for Pocket's new connection and its check.
            holder.close()
        thread.join(30)
        assert waiting.still_in_its_transaction()
        (wallet,) = outcome
        assert not isinstance(wallet, Exception), wallet
        assert wallet.balance == Decimal("3.00")
        assert recorded(setup.url, marker) == 1
    finally:
        waiting.close()
        for holder in holders:
            holder.close()


def test_transaction_mode_no_process_is_ended_and_the_outcome_is_unknown(
    start: Any,
) -> None:
    setup: Setup = start("transaction", 3)
    wallet_id = setup.pocket.open_wallet(OpenWallet(user_id="u"))
    setup.pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="first")
    )
    first = backend_of(setup.pocket)
    url = setup.bouncer.url_for(setup.url.rsplit("/", 1)[1])
    # Other clients take every server process, and keep the one Pocket's
    # connection was first given in a transaction.
    clients = [Client(url) for _ in range(3)]
    try:
        for client in clients:
            assert client.began.wait(10)
        (other,) = [c for c in clients if c.pid == first.pid]
        for client in clients:
            if client is not other:
                client.conn.execute("COMMIT")
        marker = f"cut-{uuid.uuid4().hex}"
        trap = setup.proxy.arm(marker)
        thread, outcome = add_money_in_thread(setup.pocket, wallet_id, marker)
        thread.join(30)
        assert trap.sprung.is_set()
        assert other.still_in_its_transaction()
        (error,) = outcome
        assert isinstance(error, OperationalError), error
        assert "transaction mode" in str(error)
    finally:
        for client in clients:
            client.close()
