"""Failures in awkward places: a reply lost after a commit, a token replaced
during its own lookup. (A handler that breaks after changing a wallet:
tests/integration/test_unitofwork.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
import pytest
from eventsourcing.persistence import OperationalError, ProgrammingError, StoredEvent
from psycopg.conninfo import conninfo_to_dict

from pocket.application import Pocket
from pocket.bootstrap import bootstrap, open_pocket
from pocket.commands import AddMoney, OpenWallet
from pocket.config import Settings
from pocket.postgres_events import PocketEventsRecorder
from pocket.tokens import TokenCache
from pocket.web.handlers import lost_connection
from tests.conftest import ADMIN_URL
from tests.proxy import Proxy


@pytest.fixture
def postgres_pocket(postgres_settings: Settings) -> Iterator[Pocket]:
    app = open_pocket(postgres_settings)
    yield app
    app.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    proxy = Proxy("127.0.0.1", int(conninfo_to_dict(ADMIN_URL).get("port") or 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_pocket(postgres_url: str, proxy: Proxy) -> Iterator[Pocket]:
    """Pocket talking to its database through a proxy that loses replies."""
    app = open_pocket(Settings.from_url(proxy.url(postgres_url.rsplit("/", 1)[1])))
    yield app
    app.close()


def test_a_reply_lost_after_the_commit_is_found_not_inserted_again(
    proxied_pocket: Pocket, proxy: Proxy
) -> None:
    wallet_id = proxied_pocket.open_wallet(OpenWallet(user_id="u"))
    trap = proxy.arm("lost-after-commit")
    wallet = proxied_pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("10"), source="lost-after-commit")
    )
    assert trap.sprung.is_set()
    assert wallet.balance == Decimal("10.00")
    assert proxied_pocket.get_wallet(wallet_id).balance == Decimal("10.00")
    assert len(proxied_pocket.movements(wallet_id)) == 1


def test_a_statement_cut_off_while_waiting_is_ended_then_inserted_again(
    proxied_pocket: Pocket, proxy: Proxy, postgres_url: str
) -> None:
    wallet_id = proxied_pocket.open_wallet(OpenWallet(user_id="u"))
    with psycopg.connect(postgres_url) as conn:
        # A writer ahead in the queue: the cut-off statement waits behind it.
        conn.execute("LOCK TABLE pocket_events IN EXCLUSIVE MODE")
        trap = proxy.arm("waiting")
        threading.Timer(0.5, conn.commit).start()
        wallet = proxied_pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("3"), source="waiting")
        )
    assert trap.sprung.is_set()
    assert wallet.version == 2
    assert proxied_pocket.get_wallet(wallet_id).balance == Decimal("3.00")
    assert len(proxied_pocket.movements(wallet_id)) == 1


def test_a_batch_of_another_writer_is_a_conflict_not_ours(
    postgres_pocket: Pocket,
) -> None:
    wallet_id = postgres_pocket.open_wallet(OpenWallet(user_id="u"))
    recorder = postgres_pocket.recorder
    assert isinstance(recorder, PocketEventsRecorder)
    mine = StoredEvent(wallet_id, 2, "x", b'{"mine": 1}')
    theirs = StoredEvent(wallet_id, 2, "x", b'{"theirs": 1}')
    recorder.insert_events([theirs])
    with pytest.raises(Exception, match="Another writer"):
        recorder._already_written([mine])
    assert recorder._already_written([theirs]) is not None
    assert recorder._already_written([StoredEvent(wallet_id, 3, "x", b"{}")]) is None


def test_a_token_replaced_during_its_lookup_is_not_cached(
    sql_settings: Settings,
) -> None:
    service = bootstrap(sql_settings)
    try:
        account, old = service.create_user("a")
        generation = service.tokens.generation  # a lookup of old begins...
        service.issue_token(account.user.id)  # ...the token is replaced...
        service.tokens.put("old-hash", account.user, generation)  # ...it ends
        assert service.tokens.get("old-hash") is None
        assert service.authenticate(old) is None
    finally:
        service.close()


def test_the_cache_keeps_a_token_that_was_not_replaced() -> None:
    cache = TokenCache(ttl=60)
    user: Any = object()
    cache.put("h", user, cache.generation)
    assert cache.get("h") is user
    assert TokenCache(ttl=0).get("h") is None


@pytest.mark.parametrize(
    ("cause", "lost"),
    [
        (psycopg.OperationalError("connection refused"), True),
        (psycopg_pool.PoolTimeout("no connection"), True),
        (psycopg.errors.LockNotAvailable("lock timeout"), False),
        (psycopg.errors.QueryCanceled("statement timeout"), False),
    ],
)
def test_only_an_unreachable_database_closes_the_gate(
    cause: Exception, lost: bool
) -> None:
    error = OperationalError(str(cause))
    error.__cause__ = cause
    assert lost_connection(error) is lost


def table_exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()
    return bool(row and row[0])


def test_pocket_runs_on_text_originator_ids(postgres_settings: Settings) -> None:
    settings = replace(
        postgres_settings,
        env={**postgres_settings.env, "POSTGRES_ORIGINATOR_ID_TYPE": "text"},
    )
    app = open_pocket(settings)
    try:
        wallet_id = app.open_wallet(OpenWallet(user_id="u"))
        assert app.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("2"), source="x")
        ).balance == Decimal("2.00")
    finally:
        app.close()


def test_without_create_table_a_missing_function_is_a_clear_error_and_no_ddl(
    postgres_settings: Settings, postgres_url: str
) -> None:
    settings = replace(
        postgres_settings, env={**postgres_settings.env, "CREATE_TABLE": "no"}
    )
    app = Pocket(env=dict(settings.env))
    try:
        with pytest.raises(ProgrammingError, match="CREATE_TABLE is off"):
            app.open_wallet(OpenWallet(user_id="u"))
    finally:
        app.close()
    assert not table_exists(postgres_url, "pocket_events")


def test_tables_made_without_the_insert_function_get_it_on_first_insert(
    postgres_pocket: Pocket, postgres_url: str
) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("DROP FUNCTION pocket_events_insert")
    wallet_id = postgres_pocket.open_wallet(OpenWallet(user_id="u"))
    assert postgres_pocket.get_wallet(wallet_id).version == 1


def test_an_undefined_function_that_creating_ours_does_not_cure_is_raised_once(
    postgres_pocket: Pocket, postgres_url: str
) -> None:
    # Any undefined function met while inserting (here a trigger's) looks like
    # our insert function missing; making ours once more must be the end of it.
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM no_such_function(); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER broken BEFORE INSERT ON pocket_events "
            "FOR EACH ROW EXECUTE FUNCTION broken()"
        )
    with pytest.raises(ProgrammingError, match="no_such_function"):
        postgres_pocket.open_wallet(OpenWallet(user_id="u"))


def test_a_change_may_use_a_token_checked_longer_ago_than_a_read_may() -> None:
    cache = TokenCache(ttl=0.05, horizon=60)
    user: Any = object()
    cache.put("h", user, cache.generation)
    time.sleep(0.1)
    assert cache.get("h") is None  # too old for a read...
    assert cache.get("h", for_change=True) is user  # ...not for a guarded change
