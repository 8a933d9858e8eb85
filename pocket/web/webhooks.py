"""The admin's webhook routes: subscribe a receiver, list and read subscriptions
with where their deliveries stand, read a subscription's deliveries (the parked
ones, say), replay from a position of the log, and unsubscribe."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Blueprint, Response, jsonify, request

from pocket.errors import InvalidWebhook
from pocket.feed import ALL_TYPES, EVENT_TYPES
from pocket.web.auth import Access, access
from pocket.web.body import Body, Field, JSONNumber
from pocket.web.context import service
from pocket.web.fields import CREDIT_LIMIT, DIGITS, USER_ID
from pocket.web.query import LIMIT, choice_arg, page_limit
from pocket.web.spec import Operation, Param, documented
from pocket.webhook_admin import MAX_DESCRIPTION_LENGTH, MAX_URL_LENGTH, Webhooks
from pocket.webhook_store import STATUSES

bp = Blueprint("webhooks", __name__)


def url_value(name: str, value: Any) -> str:
    """A receiver's URL: a string (its form is checked by Webhooks.subscribe)."""
    if not isinstance(value, str):
        raise InvalidWebhook(name, "A URL, as a string.")
    return value


def events_value(name: str, value: Any) -> list[str]:
    """The event types wanted: a list of their names."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidWebhook(name, 'A list of event types, or ["*"].')
    return value


def description_value(name: str, value: Any) -> str:
    """A note for the operator (may be empty)."""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        msg = f"A string of at most {MAX_DESCRIPTION_LENGTH} characters."
        raise InvalidWebhook(name, msg)
    return value


def position_value(name: str, value: Any) -> int:
    """A position of Pocket's log: a positive integer."""
    text = value.text if isinstance(value, JSONNumber) else None
    if text is None or not DIGITS.fullmatch(text) or int(text) < 1:
        raise InvalidWebhook(name, "A position of the log: an integer from 1.")
    return int(text)


SUBSCRIBE = Body(
    "WebhookRequest",
    url=Field(
        url_value,
        {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
    ),
    events=Field(
        events_value,
        {
            "type": "array",
            "items": {"enum": [*EVENT_TYPES, ALL_TYPES]},
            "minItems": 1,
            "description": 'The event types to deliver; ["*"] (the default): all.',
        },
    ).optional(),
    user_id=USER_ID.optional(),
    alert_below=CREDIT_LIMIT.optional(),
    description=Field(
        description_value, {"type": "string", "maxLength": MAX_DESCRIPTION_LENGTH}
    ).optional(),
)
REPLAY = Body(
    "ReplayRequest",
    from_position=Field(position_value, {"type": "integer", "minimum": 1}),
)
STATUS = Param(
    "status",
    "query",
    {"enum": list(STATUSES)},
    "Only the deliveries in this state (parked: given up on; replay them).",
)
ADMIN_ERRORS = ("401", "404", "503")
BODY_ERRORS = ("400", "401", "404", "413", "415", "422", "503")


def webhooks() -> Webhooks:
    """The admin's webhook operations on this service's database."""
    pocket_service = service()
    return Webhooks(pocket_service.pocket, pocket_service.users.db)


@bp.post("/admin/webhooks")
@access(Access.ADMIN)
@documented(
    Operation(
        "Subscribe a receiver to the change feed (admin)",
        "webhooks",
        ("201", "The subscription, with its secret (shown only here).", "NewWebhook"),
        BODY_ERRORS,
        body=SUBSCRIBE,
        description=(
            "Events after the log's head now are delivered to url as POSTs, "
            "signed with the secret (docs/webhooks.md). alert_below: a "
            "balance.low event when a wallet's available amount goes below it."
        ),
    )
)
def subscribe() -> tuple[Response, int]:
    """A new subscription (admin)."""
    body = SUBSCRIBE.read()
    if body.get("user_id") is not None:
        service().user(body["user_id"])  # 404 for no such user.
    status = webhooks().subscribe(
        body["url"],
        body.get("events"),
        user_id=body.get("user_id"),
        alert_below=body.get("alert_below"),
        description=body.get("description", ""),
    )
    return jsonify(webhook=status.as_json(secret=True)), 201


@bp.get("/admin/webhooks")
@access(Access.ADMIN)
@documented(
    Operation(
        "Every subscription and where its deliveries stand (admin)",
        "webhooks",
        ("200", "The subscriptions, oldest first.", "WebhookList"),
        ADMIN_ERRORS,
    )
)
def list_webhooks() -> Response:
    """Every subscription (admin)."""
    return jsonify(webhooks=[status.as_json() for status in webhooks().all()])


@bp.get("/admin/webhooks/<uuid:webhook_id>")
@access(Access.ADMIN)
@documented(
    Operation(
        "One subscription and where its deliveries stand (admin)",
        "webhooks",
        ("200", "The subscription.", "WebhookResult"),
        ADMIN_ERRORS,
    )
)
def get_webhook(webhook_id: UUID) -> Response:
    """One subscription (admin)."""
    return jsonify(webhook=webhooks().status(webhook_id).as_json())


@bp.delete("/admin/webhooks/<uuid:webhook_id>")
@access(Access.ADMIN)
@documented(
    Operation(
        "Unsubscribe: nothing more is sent (admin)",
        "webhooks",
        ("204", "Deleted, with its queue.", {}),
        ADMIN_ERRORS,
    )
)
def delete_webhook(webhook_id: UUID) -> tuple[str, int]:
    """Deletes a subscription and its queue (admin)."""
    webhooks().unsubscribe(webhook_id)
    return "", 204


@bp.get("/admin/webhooks/<uuid:webhook_id>/deliveries")
@access(Access.ADMIN, query=(STATUS, LIMIT))
@documented(
    Operation(
        "A subscription's deliveries, newest first (admin)",
        "webhooks",
        ("200", "The deliveries.", "DeliveryList"),
        ("401", "404", "422", "503"),
    )
)
def list_deliveries(webhook_id: UUID) -> Response:
    """A subscription's latest deliveries (admin)."""
    status = choice_arg(STATUS.name, STATUSES) if STATUS.name in request.args else None
    found = webhooks().deliveries_of(webhook_id, status, page_limit())
    return jsonify(deliveries=[delivery.as_json() for delivery in found])


@bp.post("/admin/webhooks/<uuid:webhook_id>/replay")
@access(Access.ADMIN)
@documented(
    Operation(
        "Send a subscription's events again from a position of the log (admin)",
        "webhooks",
        ("202", "The replay asked for: the range it covers.", "WebhookReplayResult"),
        BODY_ERRORS,
        body=REPLAY,
        description=(
            "Every event the subscription wants after from_position - 1, up to "
            "where the follower has queued, is sent again (delivered, parked or "
            "from before the subscription), and so are its balance alerts there; "
            "later events come as usual. Receivers deduplicate by event id."
        ),
    )
)
def replay(webhook_id: UUID) -> tuple[Response, int]:
    """Queues a subscription's events again (admin)."""
    body = REPLAY.read()
    after, until = webhooks().replay(webhook_id, body["from_position"])
    return jsonify(replay={"after": after, "until": until}), 202
