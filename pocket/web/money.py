"""Commands on a user's wallet: money in, money out, a transfer, closing. Each
takes an Idempotency-Key, and answers with the wallet it left behind."""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Response, jsonify

from pocket.commands import AddMoney, CloseWallet, DrawMoney, Transfer
from pocket.service import Account
from pocket.web.auth import Access, access, command_id
from pocket.web.body import NO_FIELDS, Body, read_optional_body
from pocket.web.context import cause, guard, service, target
from pocket.web.fields import AMOUNT, TEXT, USER_ID
from pocket.web.json_views import account_json, transfer_json
from pocket.web.spec import Operation, documented

bp = Blueprint("money", __name__)
# What a money command may be answered with, beside its success.
MONEY_ERRORS = ("400", "401", "404", "409", "413", "415", "422", "503")
ADD_MONEY = Body("AddMoney", amount=AMOUNT, source=TEXT)
DRAW_MONEY = Body("DrawMoney", amount=AMOUNT, destination=TEXT)
NEW_TRANSFER = Body(
    "NewTransfer", to_user_id=USER_ID, amount=AMOUNT, description=TEXT.optional()
)


@bp.post("/users/<int:user_id>/add_money")
@access(Access.OWNER)
@documented(
    Operation(
        "Put money into the wallet",
        "money",
        ("200", "The wallet after the command.", "Account"),
        MONEY_ERRORS,
        body=ADD_MONEY,
        keyed=True,
    )
)
def add_money(user_id: int) -> Response:
    """Puts money into the user's wallet."""
    body = ADD_MONEY.read()
    user = service().user(target(user_id))
    wallet = service().pocket.add_money(
        AddMoney(
            wallet_id=user.wallet_id,
            amount=body["amount"],
            source=body["source"],
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(Account(user, wallet))


@bp.post("/users/<int:user_id>/draw_money")
@access(Access.OWNER)
@documented(
    Operation(
        "Take money out of the wallet (never below zero)",
        "money",
        ("200", "The wallet after the command.", "Account"),
        MONEY_ERRORS,
        body=DRAW_MONEY,
        keyed=True,
    )
)
def draw_money(user_id: int) -> Response:
    """Takes money out of the user's wallet, never below zero."""
    body = DRAW_MONEY.read()
    user = service().user(target(user_id))
    wallet = service().pocket.draw_money(
        DrawMoney(
            wallet_id=user.wallet_id,
            amount=body["amount"],
            destination=body["destination"],
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(Account(user, wallet))


@bp.post("/users/<int:user_id>/transfers")
@access(Access.OWNER)
@documented(
    Operation(
        "Move money to another user's wallet, atomically",
        "money",
        ("201", "The transfer and the sender's wallet.", "TransferResult"),
        MONEY_ERRORS,
        body=NEW_TRANSFER,
        keyed=True,
    )
)
def create_transfer(user_id: int) -> tuple[Response, int]:
    """Moves money to another user's wallet: both sides or neither."""
    body = NEW_TRANSFER.read()
    sender = service().user(target(user_id))
    receiver = service().recipient(body["to_user_id"])
    result = service().pocket.transfer(
        Transfer(
            sender_id=sender.wallet_id,
            receiver_id=receiver.wallet_id,
            amount=body["amount"],
            description=body.get("description", ""),
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    payload = account_json(Account(sender, result.sender))
    payload["transfer"] = transfer_json(result, user_id, body["to_user_id"])
    return replayed(jsonify(payload), result.replayed), HTTPStatus.CREATED


@bp.post("/users/<int:user_id>/close")
@access(Access.OWNER)
@documented(
    Operation(
        "Close the wallet (it must be empty)",
        "money",
        ("200", "The closed wallet.", "Account"),
        MONEY_ERRORS,
        body=NO_FIELDS,
        body_required=False,
        keyed=True,
    )
)
def close_wallet(user_id: int) -> Response:
    """Closes the user's wallet, which must be empty; its history stays readable."""
    read_optional_body()
    user = service().user(target(user_id))
    wallet = service().pocket.close_wallet(
        CloseWallet(
            wallet_id=user.wallet_id,
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(Account(user, wallet))


def answer(account: Account) -> Response:
    """The user and the wallet a command left behind."""
    return replayed(jsonify(account_json(account)), account.wallet.replayed)


def replayed(response: Response, was_replayed: bool) -> Response:
    """Says so when the answer is an earlier run's, given again for its key."""
    if was_replayed:
        response.headers["Idempotency-Replayed"] = "true"
    return response
