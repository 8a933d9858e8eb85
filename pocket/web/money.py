"""Commands on a user's wallet: money in, money out, a transfer, closing. Each
takes an Idempotency-Key, and answers with the wallet it left behind."""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Response, jsonify

from pocket.web.auth import Access, access, command_id
from pocket.web.body import read_body, read_optional_body
from pocket.web.context import cause, service, target
from pocket.web.fields import amount_field, text_field, user_id_field
from pocket.web.json_views import account_json, transfer_json

bp = Blueprint("money", __name__)


@bp.post("/users/<int:user_id>/add_money")
@access(Access.OWNER)
def add_money(user_id: int) -> Response:
    """Puts money into the user's wallet."""
    body = read_body({"amount": amount_field, "source": text_field("source")})
    account = service().add_money(
        target(user_id),
        body["amount"],
        body["source"],
        cause=cause(),
        command_id=command_id(),
    )
    return jsonify(account_json(account))


@bp.post("/users/<int:user_id>/draw_money")
@access(Access.OWNER)
def draw_money(user_id: int) -> Response:
    """Takes money out of the user's wallet, never below zero."""
    body = read_body({"amount": amount_field, "destination": text_field("destination")})
    account = service().draw_money(
        target(user_id),
        body["amount"],
        body["destination"],
        cause=cause(),
        command_id=command_id(),
    )
    return jsonify(account_json(account))


@bp.post("/users/<int:user_id>/transfers")
@access(Access.OWNER)
def create_transfer(user_id: int) -> tuple[Response, int]:
    """Moves money to another user's wallet: both sides or neither."""
    body = read_body(
        {
            "to_user_id": user_id_field,
            "amount": amount_field,
            "description": text_field("description"),
        },
        optional={"description"},
    )
    account, result = service().transfer(
        target(user_id),
        body["to_user_id"],
        body["amount"],
        body.get("description", ""),
        cause=cause(),
        command_id=command_id(),
    )
    payload = account_json(account)
    payload["transfer"] = transfer_json(result, user_id, body["to_user_id"])
    return jsonify(payload), HTTPStatus.CREATED


@bp.post("/users/<int:user_id>/close")
@access(Access.OWNER)
def close_wallet(user_id: int) -> Response:
    """Closes the user's wallet, which must be empty; its history stays readable."""
    read_optional_body()
    account = service().close_wallet(
        target(user_id), cause=cause(), command_id=command_id()
    )
    return jsonify(account_json(account))
