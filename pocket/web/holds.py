"""Holds on a user's wallet: money reserved for a destination or another user
until it is captured (all or less), voided or expired. Placing, capturing and
voiding take an Idempotency-Key, and answer with the hold and the wallet it
left behind; the owner's wallet only, never the receiver's."""

from __future__ import annotations

from http import HTTPStatus
from uuid import UUID

from flask import Blueprint, Response, jsonify

from pocket.commands import CaptureHold, PlaceHold, VoidHold
from pocket.errors import InvalidExpiry
from pocket.results import HoldInfo
from pocket.web.auth import Access, access, command_id
from pocket.web.body import NO_FIELDS, Body, Choice, read_optional_body
from pocket.web.context import cause, guard, service, target
from pocket.web.fields import AMOUNT, EXPIRES_AT, EXPIRES_IN, TEXT, USER_ID
from pocket.web.json_views import hold_json
from pocket.web.money import MONEY_ERRORS, replayed
from pocket.web.spec import Operation, documented

bp = Blueprint("holds", __name__)
NEW_HOLD = Body(
    "NewHold",
    choices=(
        Choice(("destination", "to_user_id")),
        Choice(("expires_in", "expires_at"), kind=InvalidExpiry),
    ),
    amount=AMOUNT,
    destination=TEXT.optional(),
    to_user_id=USER_ID.optional(),
    description=TEXT.optional(),
    expires_in=EXPIRES_IN.optional(),
    expires_at=EXPIRES_AT.optional(),
)
CAPTURE = Body("Capture", amount=AMOUNT.optional())
READ_ERRORS = ("401", "404", "503")


@bp.post("/users/<int:user_id>/holds")
@access(Access.OWNER)
@documented(
    Operation(
        "Reserve money until it is captured, voided or expires",
        "holds",
        ("201", "The hold, with the wallet it left.", "HoldResult"),
        MONEY_ERRORS,
        body=NEW_HOLD,
        keyed=True,
        description=(
            "For a destination outside Pocket or for another user "
            "(to_user_id), until expires_in seconds from now or expires_at: "
            "one of each. Refused as a draw would be: a hold counts against "
            "what the wallet may spend (available) and its daily limit."
        ),
    )
)
def place_hold(user_id: int) -> tuple[Response, int]:
    """Reserves money in the user's wallet, for a destination or another user."""
    body = NEW_HOLD.read()
    owner = service().user(target(user_id))
    receiver_id = None
    if "to_user_id" in body:
        receiver_id = service().recipient(body["to_user_id"]).wallet_id
    hold = service().pocket.place_hold(
        PlaceHold(
            wallet_id=owner.wallet_id,
            amount=body["amount"],
            destination=body.get("destination"),
            receiver_id=receiver_id,
            description=body.get("description", ""),
            expires_in=body.get("expires_in"),
            expires_at=body.get("expires_at"),
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(hold), HTTPStatus.CREATED


@bp.get("/users/<int:user_id>/holds")
@access(Access.OWNER)
@documented(
    Operation(
        "The wallet's open holds, soonest to expire first",
        "holds",
        ("200", "The open holds.", "HoldList"),
        READ_ERRORS,
    )
)
def open_holds(user_id: int) -> Response:
    """The user's open holds (not past their expiry)."""
    holds = service().open_holds(target(user_id))
    return jsonify(holds=[hold_json(hold) for hold in holds])


@bp.get("/users/<int:user_id>/holds/<uuid:hold_id>")
@access(Access.OWNER)
@documented(
    Operation(
        "One hold, open or ended",
        "holds",
        ("200", "The hold.", "Hold"),
        READ_ERRORS,
    )
)
def get_hold(user_id: int, hold_id: UUID) -> Response:
    """One of the user's holds, open or ended, and how it ended."""
    return jsonify(hold_json(service().hold(target(user_id), hold_id)))


@bp.post("/users/<int:user_id>/holds/<uuid:hold_id>/capture")
@access(Access.OWNER)
@documented(
    Operation(
        "Capture a hold: move all it holds, or less, to its destination",
        "holds",
        ("200", "The captured hold, with the wallet it left.", "HoldResult"),
        MONEY_ERRORS,
        body=CAPTURE,
        body_required=False,
        keyed=True,
        description=(
            "Without an amount, the whole hold; with one, at most the amount "
            "held (the rest is released). A hold for another user is paid into "
            "their wallet as a transfer. A hold ends once: a second capture or "
            "void is 409 `hold_ended`, with the hold as it really ended."
        ),
    )
)
def capture_hold(user_id: int, hold_id: UUID) -> Response:
    """Ends an open hold by moving all it holds, or less, to its destination."""
    body = CAPTURE.read_optional()
    owner = service().user(target(user_id))
    hold = service().pocket.capture_hold(
        CaptureHold(
            wallet_id=owner.wallet_id,
            hold_id=hold_id,
            amount=body.get("amount"),
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(hold)


@bp.post("/users/<int:user_id>/holds/<uuid:hold_id>/void")
@access(Access.OWNER)
@documented(
    Operation(
        "Void a hold: release it all, nothing taken",
        "holds",
        ("200", "The voided hold, with the wallet it left.", "HoldResult"),
        MONEY_ERRORS,
        body=NO_FIELDS,
        body_required=False,
        keyed=True,
    )
)
def void_hold(user_id: int, hold_id: UUID) -> Response:
    """Ends an open hold with nothing taken."""
    read_optional_body()
    owner = service().user(target(user_id))
    hold = service().pocket.void_hold(
        VoidHold(
            wallet_id=owner.wallet_id,
            hold_id=hold_id,
            cause=cause(),
            command_id=command_id(),
            guard=guard(),
        )
    )
    return answer(hold)


def answer(hold: HoldInfo) -> Response:
    """The hold and the owner's wallet, as the command left them."""
    return replayed(jsonify(hold_json(hold)), hold.replayed)
