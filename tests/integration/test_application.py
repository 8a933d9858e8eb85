"""The Pocket application on each store: POPO, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from pocket.application import Pocket
from pocket.bootstrap import bootstrap
from pocket.commands import AddMoney, DrawMoney, OpenWallet
from pocket.config import Settings
from pocket.errors import (
    InsufficientFunds,
    InvalidAmount,
    WalletAlreadyExists,
    WalletNotFound,
)
from pocket.service import PocketService
from pocket.walletstore import Loaded
from tests.money import add_money


@pytest.fixture
def pocket(any_settings: Settings) -> Iterator[Pocket]:
    app = Pocket(env=dict(any_settings.env))
    yield app
    app.close()


def test_the_seed_session_gives_the_seed_balances(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="2"))
    assert pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("20"), source="API")
    ).balance == Decimal("20.00")
    assert pocket.draw_money(
        DrawMoney(wallet_id=wallet_id, amount=Decimal("5"), destination="API")
    ).balance == Decimal("15.00")
    history = pocket.movements(wallet_id)
    assert [(t.type, t.amount, t.source, t.destination) for t in history] == [
        ("IN", Decimal("20.00"), "API", None),
        ("OUT", Decimal("5.00"), None, "API"),
    ]
    assert history[0].date <= history[1].date
    assert pocket.get_wallet(wallet_id).balance == Decimal("15.00")


def test_a_commands_answer_is_the_wallet_it_left(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    after = pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("1.50"), source="API")
    )
    assert after == pocket.get_wallet(wallet_id)
    assert after.version == 2


def test_money_is_exact_to_the_cent_after_a_round_trip(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    for _ in range(10):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("0.10"), source="API")
        )
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("999999999.99"), source="API")
    )
    wallet = pocket.get_wallet(wallet_id)
    assert wallet.balance == Decimal("1000000000.99")
    assert str(wallet.balance) == "1000000000.99"


def test_an_overdraft_is_refused_and_records_nothing(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    pocket.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal("3"), source="API"))
    with pytest.raises(InsufficientFunds):
        pocket.draw_money(
            DrawMoney(wallet_id=wallet_id, amount=Decimal("3.01"), destination="API")
        )
    assert pocket.get_wallet(wallet_id).version == 2
    assert len(pocket.movements(wallet_id)) == 1


def test_an_invalid_amount_records_nothing(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    with pytest.raises(InvalidAmount):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("-1"), source="API")
        )
    assert pocket.get_wallet(wallet_id).version == 1


def test_unknown_wallets_are_not_found(pocket: Pocket) -> None:
    with pytest.raises(WalletNotFound):
        pocket.get_wallet(uuid4())
    with pytest.raises(WalletNotFound):
        pocket.add_money(AddMoney(wallet_id=uuid4(), amount=Decimal("1"), source="API"))
    with pytest.raises(WalletNotFound):
        pocket.movements(uuid4())


def test_a_wallet_id_can_be_chosen_but_only_once(pocket: Pocket) -> None:
    wallet_id = uuid4()
    assert pocket.open_wallet(OpenWallet(user_id="u", wallet_id=wallet_id)) == wallet_id
    with pytest.raises(WalletAlreadyExists):
        pocket.open_wallet(OpenWallet(user_id="v", wallet_id=wallet_id))
    assert pocket.get_wallet(wallet_id).user_id == "u"


def test_a_snapshot_is_taken_every_hundred_events(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    for _ in range(205):
        pocket.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
        )
    assert pocket.snapshots is not None
    snapshots = list(pocket.snapshots.get(wallet_id))
    assert [s.originator_version for s in snapshots] == [100, 200]


def test_a_new_process_loads_a_long_history_from_its_snapshot(
    sql_settings: Settings,
) -> None:
    writer = Pocket(env=dict(sql_settings.env))
    wallet_id = writer.open_wallet(OpenWallet(user_id="u"))
    for _ in range(150):
        writer.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
        )
    writer.close()
    reader = Pocket(env=dict(sql_settings.env))
    assert reader.get_wallet(wallet_id).balance == Decimal("150.00")
    assert len(reader.movements(wallet_id)) == 150
    reader.close()


def test_concurrent_draws_in_threads_never_overdraw(pocket: Pocket) -> None:
    wallet_id = pocket.open_wallet(OpenWallet(user_id="u"))
    pocket.add_money(
        AddMoney(wallet_id=wallet_id, amount=Decimal("10.00"), source="API")
    )
    start = threading.Barrier(8)

    def draw() -> str:
        start.wait()
        outcomes = []
        for _ in range(3):
            try:
                pocket.draw_money(
                    DrawMoney(
                        wallet_id=wallet_id, amount=Decimal("1.00"), destination="ATM"
                    )
                )
                outcomes.append("ok")
            except InsufficientFunds:
                outcomes.append("refused")
        return ",".join(outcomes)

    with ThreadPoolExecutor(8) as pool:
        results = ",".join(pool.map(lambda _: draw(), range(8))).split(",")
    assert results.count("ok") == 10
    assert results.count("refused") == 14
    assert pocket.get_wallet(wallet_id).balance == Decimal("0.00")
    assert sum(t.type == "OUT" for t in pocket.movements(wallet_id)) == 10


def test_two_application_instances_on_one_database_retry_conflicts(
    sql_settings: Settings,
) -> None:
    first = Pocket(env=dict(sql_settings.env))
    second = Pocket(env=dict(sql_settings.env))
    wallet_id = first.open_wallet(OpenWallet(user_id="u"))
    first.add_money(AddMoney(wallet_id=wallet_id, amount=Decimal("100"), source="API"))
    start = threading.Barrier(2)

    def add(app: Pocket) -> None:
        start.wait()
        for _ in range(25):
            app.add_money(
                AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
            )

    threads = [threading.Thread(target=add, args=(app,)) for app in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wallet = first.get_wallet(wallet_id)
    assert wallet.balance == Decimal("150.00")
    assert wallet.version == 52
    first.close()
    second.close()


def test_a_batch_reads_its_uncached_wallets_in_one_read(
    postgres_settings: Settings,
) -> None:
    writer = Pocket(env=dict(postgres_settings.env))
    short = writer.open_wallet(OpenWallet(user_id="short"))
    long = writer.open_wallet(  # snapshots at 100 and 200, events after
        OpenWallet(user_id="long")
    )
    snapped = writer.open_wallet(  # a snapshot at 100, nothing after
        OpenWallet(user_id="snapped")
    )
    writer.add_money(AddMoney(wallet_id=short, amount=Decimal("1.10"), source="API"))
    for _ in range(230):
        writer.add_money(AddMoney(wallet_id=long, amount=Decimal("0.01"), source="API"))
    writer.draw_money(
        DrawMoney(wallet_id=long, amount=Decimal("0.05"), destination="ATM")
    )
    for _ in range(99):
        writer.add_money(
            AddMoney(wallet_id=snapped, amount=Decimal("0.01"), source="API")
        )
    writer.close()
    cold = Pocket(env=dict(postgres_settings.env))  # a new process: nothing cached
    try:
        missing = uuid4()
        read = cold.work.store.load_many({short, long, snapped, missing})
        assert set(read) == {short, long, snapped}  # what does not exist is left out
        for wallet_id, (wallet, head) in read.items():
            loaded = cold._get(wallet_id)
            assert (wallet.balance, wallet.version) == (loaded.balance, loaded.version)
            # Each comes with its head: the SHA-256 of its last stored event,
            # read even when a snapshot stands for it.
            (last,) = cold.recorder.select_events(wallet_id, gt=wallet.version - 1)
            assert head == hashlib.sha256(last.state).digest()
        assert (read[long][0].balance, read[long][0].version) == (Decimal("2.25"), 232)
        assert read[snapped][0].version == 100
    finally:
        cold.close()


def test_commands_on_wallets_new_to_a_process_load_no_wallet_one_by_one(
    postgres_settings: Settings,
) -> None:
    writer = Pocket(env=dict(postgres_settings.env))
    wallets = [writer.open_wallet(OpenWallet(user_id=f"u{n}")) for n in range(16)]
    writer.close()
    cold = Pocket(env=dict(postgres_settings.env))
    store = cold.work.store
    singles: list[UUID] = []
    load = store.load

    def load_one(wallet_ids: Collection[UUID]) -> Loaded:
        singles.extend(wallet_ids)
        return load(wallet_ids)

    store.load = load_one  # type: ignore[method-assign]
    start = threading.Barrier(16)

    def add(wallet_id: UUID) -> Decimal:
        start.wait()
        return cold.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("2.50"), source="API")
        ).balance

    try:
        with ThreadPoolExecutor(16) as pool:
            balances = list(pool.map(add, wallets))
        assert balances == [Decimal("2.50")] * 16
        assert singles == []  # every uncached wallet came with its batch's one read
        assert cold.commit_counts[0] < 16  # and the commands did share batches
    finally:
        cold.close()


def test_after_a_conflict_a_process_reads_newer_events_before_deciding(
    postgres_settings: Settings,
) -> None:
    here = Pocket(env=dict(postgres_settings.env))
    there = Pocket(env=dict(postgres_settings.env))
    try:
        wallet_id = here.open_wallet(OpenWallet(user_id="shared"))
        here.add_money(  # cached here
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="here")
        )
        there.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("2"), source="there")
        )
        here.add_money(  # meets it: a conflict
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="here")
        )
        assert here.commit_stats.retries == 1
        there.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("2"), source="there")
        )
        there.draw_money(
            DrawMoney(wallet_id=wallet_id, amount=Decimal("1"), destination="there")
        )
        # Now a batch here reads what was written there first: no conflict.
        assert here.add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="here")
        ).balance == Decimal("6")
        assert here.commit_stats.retries == 1
        assert there.get_wallet(wallet_id).version == 7
    finally:
        here.close()
        there.close()


def test_two_processes_on_the_same_wallets_lose_no_money(
    postgres_settings: Settings,
) -> None:
    apps = [Pocket(env=dict(postgres_settings.env)) for _ in range(2)]
    wallets = [apps[0].open_wallet(OpenWallet(user_id=f"u{n}")) for n in range(4)]
    start = threading.Barrier(16)

    def pay(n: int) -> int:
        app = apps[n % 2]
        start.wait()
        for k in range(30):
            app.add_money(
                AddMoney(
                    wallet_id=wallets[(n + k) % 4], amount=Decimal("0.01"), source="API"
                )
            )
        return 30

    try:
        with ThreadPoolExecutor(16) as pool:
            paid = sum(pool.map(pay, range(16)))
        total = sum(apps[1].get_wallet(w).balance for w in wallets)
        assert total == Decimal("0.01") * paid
        versions = sum(apps[0].get_wallet(w).version for w in wallets)
        assert versions == 4 + paid  # one event per command, none lost or doubled
    finally:
        for app in apps:
            app.close()


def test_processes_starting_together_on_a_new_database_all_start(
    postgres_settings: Settings,
) -> None:
    start = threading.Barrier(6)

    def open_pocket(_: int) -> Pocket:
        start.wait()
        return Pocket(env=dict(postgres_settings.env))

    with ThreadPoolExecutor(6) as pool:
        apps = list(pool.map(open_pocket, range(6)))
    try:
        wallet_id = apps[0].open_wallet(OpenWallet(user_id="u"))
        apps[1].add_money(
            AddMoney(wallet_id=wallet_id, amount=Decimal("1"), source="API")
        )
        assert apps[5].get_wallet(wallet_id).balance == Decimal("1.00")
    finally:
        for app in apps:
            app.close()


def test_servers_and_followers_starting_together_on_a_new_database_all_start(
    postgres_settings: Settings,
) -> None:
    start = threading.Barrier(4)

    def open_service(n: int) -> PocketService:
        start.wait()
        return bootstrap(postgres_settings, follow=n % 2 == 0)

    with ThreadPoolExecutor(4) as pool:
        services = list(pool.map(open_service, range(4)))
    try:
        account, _ = services[1].create_user("u")
        add_money(services[3], account.user.id, Decimal("2"), "API")
        assert services[0].get_account(account.user.id).wallet.balance == Decimal("2")
    finally:
        for service in services:
            service.close()
