"""A token revoked anywhere moves no money, even where it is still cached: each
command's token is checked in the transaction that commits it (pocket.guards)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal

import pytest

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.errors import TokenRevoked
from pocket.service import PocketService, Principal
from pocket.tokens import hash_token
from tests.money import add_money, close_wallet, draw_money, transfer


@pytest.fixture
def two(sql_settings: Settings) -> Iterator[tuple[PocketService, PocketService]]:
    """Two services (two processes, as far as caches go) on one database, with
    tokens cached for a minute."""
    settings = replace(sql_settings, token_cache_seconds=60)
    here, elsewhere = bootstrap(settings), bootstrap(settings)
    yield here, elsewhere
    here.close()
    elsewhere.close()


def signed_in(service: PocketService, token: str) -> Principal:
    principal = service.authenticate(token)
    assert principal is not None
    return principal


def test_a_token_revoked_elsewhere_moves_no_money_where_it_is_cached(
    two: tuple[PocketService, PocketService],
) -> None:
    here, elsewhere = two
    account, token = here.create_user("a")
    friend, _ = here.create_user("b")
    user_id = account.user.id
    add_money(here, user_id, Decimal("10.00"), "salary")
    stolen = signed_in(here, token)  # now in this process's cache
    elsewhere.issue_token(user_id, replacing=hash_token(token))
    assert here.authenticate(token) is not None  # a read may still trust it...
    guard = stolen.guard
    attempts: list[Callable[[], object]] = [  # ...but no change is made with it
        lambda: add_money(here, user_id, Decimal("1"), "x", guard=guard),
        lambda: draw_money(here, user_id, Decimal("1"), "x", guard=guard),
        lambda: transfer(here, user_id, friend.user.id, Decimal("1"), guard=guard),
        lambda: draw_money(here, user_id, Decimal("99"), "refused", guard=guard),
        lambda: close_wallet(here, user_id, guard=guard),
    ]
    for attempt in attempts:
        with pytest.raises(TokenRevoked):
            attempt()
    after = here.get_account(user_id).wallet
    assert (after.balance, after.version) == (Decimal("10.00"), 2)
    assert here.get_account(friend.user.id).wallet.balance == Decimal("0.00")


def test_a_replay_is_not_given_to_a_revoked_token(
    two: tuple[PocketService, PocketService],
) -> None:
    here, elsewhere = two
    account, token = here.create_user("a")
    principal = signed_in(here, token)
    first = add_money(
        here, account.user.id, Decimal("5"), "x", command_id="k1", guard=principal.guard
    )
    assert first.wallet.balance == Decimal("5.00")
    elsewhere.issue_token(account.user.id, replacing=hash_token(token))
    with pytest.raises(TokenRevoked):
        add_money(
            here,
            account.user.id,
            Decimal("5"),
            "x",
            command_id="k1",
            guard=principal.guard,
        )


def test_commands_of_valid_tokens_commit_beside_those_of_a_revoked_one(
    two: tuple[PocketService, PocketService],
) -> None:
    here, elsewhere = two
    users = [here.create_user(f"u{n}") for n in range(8)]
    principals = [signed_in(here, token) for _, token in users]
    revoked = users[0][0].user.id
    elsewhere.issue_token(revoked, replacing=hash_token(users[0][1]))
    start = threading.Barrier(16)

    def add(n: int) -> bool:
        account, principal = users[n % 8][0], principals[n % 8]
        start.wait()
        try:
            add_money(here, account.user.id, Decimal("1"), "x", guard=principal.guard)
        except TokenRevoked:
            return False
        return True

    with ThreadPoolExecutor(16) as pool:
        done = list(pool.map(add, range(16)))
    assert done == [n % 8 != 0 for n in range(16)]
    balances = [here.get_account(a.user.id).wallet.balance for a, _ in users]
    assert balances == [Decimal("0.00")] + [Decimal("2.00")] * 7


def test_once_a_revocation_returns_no_command_with_the_old_token_commits(
    two: tuple[PocketService, PocketService],
) -> None:
    here, elsewhere = two
    account, token = here.create_user("a")
    user_id = account.user.id
    guard = signed_in(here, token).guard
    revoked = threading.Event()
    answered: list[bool] = []  # per command: was it answered OK?
    late: list[int] = []  # commands begun after the revocation returned, then OK
    lock = threading.Lock()

    def payer() -> None:
        while True:
            begun_after = revoked.is_set()
            try:
                add_money(here, user_id, Decimal("0.01"), "x", guard=guard)
                ok = True
            except TokenRevoked:
                ok = False
            with lock:
                answered.append(ok)
                if ok and begun_after:
                    late.append(1)
            if begun_after:
                return

    threads = [threading.Thread(target=payer) for _ in range(6)]
    for thread in threads:
        thread.start()
    while len(answered) < 30:
        threading.Event().wait(0.005)
    elsewhere.issue_token(user_id, replacing=hash_token(token))
    revoked.set()
    for thread in threads:
        thread.join()
    assert late == []
    assert answered.count(False) >= 6  # each payer met the revocation
    # Exactly the commands answered OK are in the wallet: none lost, none extra.
    wallet = elsewhere.get_account(user_id).wallet
    assert wallet.balance == Decimal("0.01") * answered.count(True)
    assert wallet.version == 1 + answered.count(True)
