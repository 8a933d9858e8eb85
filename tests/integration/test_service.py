"""Users and their wallets: no user is left without a wallet for good."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from uuid import uuid4

import pytest

from pocket.application import WalletNotFound
from pocket.config import Settings
from pocket.domainmodel import InvalidText
from pocket.service import PocketService
from pocket.users import UserNotFound


@pytest.fixture
def service(sql_settings: Settings) -> Iterator[PocketService]:
    pocket_service = PocketService(sql_settings)
    yield pocket_service
    pocket_service.close()


def test_creating_a_user_opens_their_wallet(service: PocketService) -> None:
    account = service.create_user("Gabriela")
    assert account.user.name == "Gabriela"
    assert account.user.wallet_id == account.wallet.aggregate_id
    assert account.wallet.user_id == str(account.user.id)
    assert account.wallet.balance == Decimal("0.00")
    assert service.users.pending_wallets() == []


def test_user_ids_count_up_from_one(service: PocketService) -> None:
    first = service.create_user("a").user.id
    second = service.create_user("b").user.id
    assert (first, second) == (1, 2)


def test_a_name_that_breaks_the_text_rules_creates_nobody(
    service: PocketService,
) -> None:
    with pytest.raises(InvalidText):
        service.create_user("\x00")
    assert service.create_user("ok").user.id == 1


@pytest.mark.parametrize("user_id", [0, -1, 2**63, 10**30])
def test_impossible_user_ids_are_simply_not_found(
    service: PocketService, user_id: int
) -> None:
    with pytest.raises(UserNotFound):
        service.get_account(user_id)


def crash_between_user_and_wallet(service: PocketService) -> int:
    """What a crash right after inserting the user row leaves behind."""
    return service.users.create("Interrupted", wallet_id=uuid4()).id


def test_a_wallet_left_unopened_is_opened_when_the_user_is_next_used(
    service: PocketService,
) -> None:
    user_id = crash_between_user_and_wallet(service)
    with pytest.raises(WalletNotFound):
        service.pocket.get_wallet(service.users.get(user_id).wallet_id)
    account = service.add_money(user_id, Decimal("5"), "API")
    assert account.wallet.balance == Decimal("5.00")
    assert service.users.get(user_id).wallet_opened


def test_a_wallet_left_unopened_is_opened_at_the_next_start(
    sql_settings: Settings,
) -> None:
    first = PocketService(sql_settings)
    user_id = crash_between_user_and_wallet(first)
    first.close()
    second = PocketService(sql_settings)
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
    service.pocket.create_wallet(str(user_id), wallet_id=user.wallet_id)
    assert service.open_pending_wallets() == 1
    assert service.get_account(user_id).wallet.aggregate_id == user.wallet_id
