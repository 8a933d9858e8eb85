"""What the insert function checks before it writes, on real PostgreSQL: that new
events follow the very event they were decided on (its SHA-256, not just its
number), that an answer read from a stored record is read from this server, and
that such an answer, with nothing to insert, still waits for the synchronous
standby (on a throwaway primary whose standby is stopped)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Collection, Iterator
from decimal import Decimal
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from pocket.application import Pocket
from pocket.bootstrap import open_pocket
from pocket.commands import AddMoney, DrawMoney, OpenWallet
from pocket.config import Settings
from pocket.database import Database
from pocket.deadlines import WriteNotConfirmed, WritesStalled
from pocket.domainmodel import Cause
from pocket.errors import InsufficientFunds
from pocket.postgres_events import PocketEventsRecorder
from pocket.walletstore import Loaded
from tests.pgserver import ReplicatedPair


@pytest.fixture
def pocket(postgres_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(postgres_settings)
    yield app
    app.close()


def recorder_of(pocket: Pocket) -> PocketEventsRecorder:
    recorder = pocket.recorder
    assert isinstance(recorder, PocketEventsRecorder)
    return recorder


def next_event(pocket: Pocket, wallet_id: UUID, amount: str) -> StoredEvent:
    """The stored form of the wallet's next event (adding amount), unsaved."""
    wallet = pocket._get(wallet_id)
    wallet.add_money(Decimal(amount), "check", Cause())
    (event,) = wallet.collect_events()
    return pocket.mapper.to_stored_event(event)


def head_of(pocket: Pocket, wallet_id: UUID) -> bytes:
    """The SHA-256 of the wallet's last stored event."""
    version = pocket._get(wallet_id).version
    (last,) = pocket.recorder.select_events(wallet_id, gt=version - 1)
    return hashlib.sha256(last.state).digest()


def test_new_events_must_follow_the_very_event_they_were_decided_on(
    pocket: Pocket,
) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="ann"))
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(10), source="pay"))
    recorder = recorder_of(pocket)
    event = next_event(pocket, wallet_id, "1")
    # Decided on another event of the same number (one a failover lost, say):
    # refused, as a conflict.
    with pytest.raises(IntegrityError):
        recorder.insert_events([event], priors={wallet_id: b"\0" * 32})
    assert pocket.get_wallet(wallet_id).version == 2
    # Decided on the stored one: written.
    recorder.insert_events([event], priors={wallet_id: head_of(pocket, wallet_id)})
    assert pocket.get_wallet(wallet_id).balance == Decimal("11.00")
    # With no head known, a stored predecessor is enough, as before.
    recorder.insert_events([next_event(pocket, wallet_id, "2")])
    assert pocket.get_wallet(wallet_id).balance == Decimal("13.00")


def test_an_answer_read_from_a_record_this_server_does_not_hold_is_refused(
    pocket: Pocket,
) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="ann"))
    recorder = recorder_of(pocket)
    with pytest.raises(IntegrityError):
        recorder.insert_events([], answered=[uuid4()])
    # A record it holds (here: the wallet's own first event) passes.
    assert recorder.insert_events([], answered=[wallet_id]) == []


def test_an_answer_alone_waits_for_the_synchronous_standby(
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    url = primary.create_database("pocket")
    settings = Settings.from_environ(
        {"POCKET_DATABASE_URL": url, "POCKET_COMMIT_TIMEOUT_SECONDS": "1"}
    )
    app = open_pocket(settings)
    try:
        wallet_id = app.open_wallet(OpenWallet(user_id="ann"))
        standby.stop()
        # Nothing to insert, but the answer read from wallet_id counts only
        # once the standby has it: it does not, in time.
        with pytest.raises(WriteNotConfirmed):
            recorder_of(app).insert_events([], answered=[wallet_id])
        # Reading alone waits for nothing.
        assert app.get_wallet(wallet_id).version == 1
    finally:
        app.close()


def test_a_cached_wallet_whose_history_was_lost_is_read_again_not_refreshed(
    postgres_settings: Settings,
) -> None:
    a, b = open_pocket(postgres_settings), open_pocket(postgres_settings)
    try:
        wallet_id = a.open_wallet(OpenWallet(user_id="ann"))
        a.add_money(  # A caches version 2: 10.00
            AddMoney(wallet_id=wallet_id, amount=Decimal(10), source="pay")
        )
        # A failover loses version 2; another process writes a different
        # version 2 and a version 3 on the new primary (balance 2.00).
        with psycopg.connect(postgres_settings_url(postgres_settings)) as conn:
            conn.execute(
                "DELETE FROM pocket_events WHERE originator_id = %s "
                "AND originator_version = 2",
                [wallet_id],
            )
        b.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(1), source="other"))
        b.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal(1), source="other"))
        # A meets other writers (a conflict elsewhere): it refreshes its cached
        # wallets before deciding. Version 3 must not be applied on top of
        # the version 2 it holds, which the database no longer has: the wallet
        # is read again, whole. (Today's events carry the balance they leave,
        # so the draw would be refused either way; an event that carries a
        # change, not a result, would not be.)
        read_whole: list[set[UUID]] = []
        store = a.work.store
        load_many = store.load_many

        def spied(ids: Collection[UUID]) -> Loaded:
            read_whole.append(set(ids))
            return load_many(ids)

        store.load_many = spied  # type: ignore[method-assign,assignment]
        a.work.contended_until = time.monotonic() + 10
        with pytest.raises(InsufficientFunds):
            a.draw_money(
                DrawMoney(wallet_id=wallet_id, amount=Decimal(10), destination="atm")
            )
        assert read_whole == [{wallet_id}]
        assert a.work.cache.entries[wallet_id].head == head_of(b, wallet_id)
        assert a.get_wallet(wallet_id).balance == Decimal("2.00")
    finally:
        a.close()
        b.close()


def test_a_write_whose_deadline_has_passed_is_not_sent(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="ann"))
    recorder = recorder_of(pocket)
    event = next_event(pocket, wallet_id, "1")
    with recorder.watchdog.deadline(0), pytest.raises(WritesStalled):
        recorder.insert_events([event])
    assert pocket.get_wallet(wallet_id).version == 1


def test_a_bounded_transaction_past_its_deadline_is_rolled_back_and_says_so(
    postgres_settings: Settings,
) -> None:
    settings = Settings.from_environ(
        {
            "POCKET_DATABASE_URL": postgres_settings_url(postgres_settings),
            "POCKET_COMMIT_TIMEOUT_SECONDS": "0.5",
        }
    )
    app = open_pocket(settings)
    try:
        db = Database.of(app)
        db.execute("CREATE TABLE slow (n int)")

        def slow_write() -> None:
            with db.transaction(bounded=True) as tx:
                tx.execute("INSERT INTO slow VALUES (1)")
                tx.execute("SELECT pg_sleep(3)")

        with pytest.raises(WritesStalled):
            slow_write()
        assert db.query("SELECT count(*) AS n FROM slow") == [{"n": 0}]
    finally:
        app.close()


def postgres_settings_url(settings: Settings) -> str:
    """The URL of the database the settings name (a single server)."""
    env = settings.env
    return (
        f"postgresql://{env['POSTGRES_USER']}@{env['POSTGRES_HOST']}:"
        f"{env['POSTGRES_PORT']}/{env['POSTGRES_DBNAME']}"
    )
