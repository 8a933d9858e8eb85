"""Users and their wallets: no user is left without a wallet for good."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal
from uuid import uuid4

import pytest

from pocket.bootstrap import bootstrap
from pocket.commands import OpenWallet
from pocket.config import Settings
from pocket.errors import (
    InvalidText,
    RecipientNotFound,
    TokenRevoked,
    UserNotFound,
    VersionNotFound,
    WalletNotFound,
)
from pocket.service import PocketService
from pocket.tokens import hash_token
from tests.money import add_money, transfer


@pytest.fixture
def service(sql_settings: Settings) -> Iterator[PocketService]:
    pocket_service = bootstrap(sql_settings)
    yield pocket_service
    pocket_service.close()


def test_creating_a_user_opens_their_wallet(service: PocketService) -> None:
    account, token = service.create_user("Gabriela")
    assert token.startswith("pkt_")
    assert account.user.name == "Gabriela"
    assert account.user.wallet_id == account.wallet.aggregate_id
    assert account.wallet.user_id == str(account.user.id)
    assert account.wallet.balance == Decimal("0.00")
    assert service.users.pending_wallets() == []


def test_user_ids_count_up_from_one(service: PocketService) -> None:
    first = service.create_user("a")[0].user.id
    second = service.create_user("b")[0].user.id
    assert (first, second) == (1, 2)


def test_a_name_that_breaks_the_text_rules_creates_nobody(
    service: PocketService,
) -> None:
    with pytest.raises(InvalidText):
        service.create_user("\x00")
    assert service.create_user("ok")[0].user.id == 1


@pytest.mark.parametrize("user_id", [0, -1, 2**63, 10**30])
def test_impossible_user_ids_are_simply_not_found(
    service: PocketService, user_id: int
) -> None:
    with pytest.raises(UserNotFound):
        service.get_account(user_id)


def crash_between_user_and_wallet(service: PocketService) -> int:
    """What a crash right after inserting the user row leaves behind."""
    return service.users.create("Interrupted", uuid4(), token_hash="x").id


def test_a_wallet_left_unopened_is_opened_when_the_user_is_next_used(
    service: PocketService,
) -> None:
    user_id = crash_between_user_and_wallet(service)
    with pytest.raises(WalletNotFound):
        service.pocket.get_wallet(service.users.get(user_id).wallet_id)
    account = add_money(service, user_id, Decimal("5"), "API")
    assert account.wallet.balance == Decimal("5.00")
    assert service.users.get(user_id).wallet_opened


def test_a_wallet_left_unopened_is_opened_at_the_next_start(
    sql_settings: Settings,
) -> None:
    first = bootstrap(sql_settings)
    user_id = crash_between_user_and_wallet(first)
    first.close()
    second = bootstrap(sql_settings)
    try:
        user = second.users.get(user_id)
        assert user.wallet_opened
        assert second.pocket.get_wallet(user.wallet_id).user_id == str(user_id)
    finally:
        second.close()


def test_a_crash_after_opening_but_before_marking_is_completed(
    service: PocketService,
) -> None:
    user_id = crash_between_user_and_wallet(service)
    user = service.users.get(user_id)
    service.pocket.open_wallet(
        OpenWallet(user_id=str(user_id), wallet_id=user.wallet_id)
    )
    assert service.open_pending_wallets() == 1
    assert service.get_account(user_id).wallet.aggregate_id == user.wallet_id


def test_a_token_opens_its_own_users_account_only(service: PocketService) -> None:
    first, first_token = service.create_user("a")
    service.create_user("b")
    principal = service.authenticate(first_token)
    assert principal is not None
    assert principal.user_id == first.user.id
    assert principal.may_act_for(first.user.id)
    assert not principal.may_act_for(first.user.id + 1)
    assert service.authenticate(first_token + "x") is None
    assert service.authenticate("") is None


def test_only_a_hash_of_the_token_is_stored(service: PocketService) -> None:
    _, token = service.create_user("a")
    rows = service.users.db.query("SELECT * FROM users")
    assert token not in repr(rows)


def test_a_new_token_replaces_the_old(service: PocketService) -> None:
    account, old = service.create_user("a")
    new = service.issue_token(account.user.id)
    assert service.authenticate(old) is None
    principal = service.authenticate(new)
    assert principal is not None
    assert principal.user_id == account.user.id


def test_a_revoked_token_cannot_replace_its_replacement(
    service: PocketService,
) -> None:
    account, stolen = service.create_user("a")
    user_id = account.user.id
    owners = service.issue_token(user_id, replacing=hash_token(stolen))
    with pytest.raises(TokenRevoked):
        service.issue_token(user_id, replacing=hash_token(stolen))
    assert service.authenticate(stolen) is None
    assert service.authenticate(owners) is not None


def test_of_two_rotations_with_one_token_at_once_exactly_one_wins(
    sql_settings: Settings,
) -> None:
    services = [bootstrap(sql_settings) for _ in range(2)]
    try:
        account, token = services[0].create_user("a")
        start = threading.Barrier(8)

        def rotate(service: PocketService) -> str | None:
            start.wait()
            try:
                return service.issue_token(account.user.id, replacing=hash_token(token))
            except TokenRevoked:
                return None

        with ThreadPoolExecutor(8) as pool:
            issued = list(pool.map(rotate, services * 4))
        (winner,) = [t for t in issued if t is not None]
        assert services[1].authenticate(winner) is not None
    finally:
        for service in services:
            service.close()


def test_the_admin_token_opens_every_account(sql_settings: Settings) -> None:
    settings = replace(sql_settings, admin_token="operator-secret-0123456789")
    admin_service = bootstrap(settings)
    try:
        principal = admin_service.authenticate("operator-secret-0123456789")
        assert principal is not None
        assert principal.is_admin
        assert principal.may_act_for(12345)
        assert admin_service.authenticate("operator-secret-012345678") is None
    finally:
        admin_service.close()


def test_without_an_admin_token_configured_there_is_no_admin(
    service: PocketService,
) -> None:
    assert service.settings.admin_token is None
    assert service.authenticate("admin") is None


def test_a_transfer_between_users_names_both(service: PocketService) -> None:
    alice, _ = service.create_user("alice")
    bob, _ = service.create_user("bob")
    add_money(service, alice.user.id, Decimal("30"), "API")
    sender, result = transfer(
        service, alice.user.id, bob.user.id, Decimal("12.50"), "x"
    )
    assert sender.wallet.balance == Decimal("17.50")
    assert result.receiver.balance == Decimal("12.50")
    (received,) = service.pocket.movements(bob.user.wallet_id)
    assert received.counterparty_user_id == str(alice.user.id)
    assert received.transfer_id == result.id


def test_a_transfer_to_nobody_is_refused(service: PocketService) -> None:
    alice, _ = service.create_user("alice")
    add_money(service, alice.user.id, Decimal("30"), "API")
    with pytest.raises(RecipientNotFound):
        transfer(service, alice.user.id, 999, Decimal("1"))
    assert service.get_account(alice.user.id).wallet.balance == Decimal("30.00")


def test_a_read_of_a_wallet_left_unopened_writes_nothing(
    service: PocketService,
) -> None:
    user_id = crash_between_user_and_wallet(service)
    account = service.get_account(user_id)
    assert (account.wallet.balance, account.wallet.version) == (Decimal("0.00"), 0)
    page = service.history(user_id, after=0, limit=10)
    assert (page.transactions, page.has_more) == ([], False)
    with pytest.raises(VersionNotFound):
        service.wallet_as_of(user_id, version=1, at=None)
    # Nothing was written: the wallet is still unopened, as the crash left it.
    assert not service.users.get(user_id).wallet_opened
    with pytest.raises(WalletNotFound):
        service.pocket.get_wallet(service.users.get(user_id).wallet_id)
