"""The HTTP API: a thin Flask layer over the Pocket service.

Requests are parsed strictly here, at the edge; every error, whoever raised it,
leaves as the same JSON body.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
)
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from pocket.application import (
    ConcurrencyConflict,
    Transaction,
    WalletInfo,
    WalletNotFound,
)
from pocket.config import Settings
from pocket.domainmodel import (
    InsufficientFunds,
    InvalidAmount,
    InvalidText,
    PocketError,
    check_amount,
    check_text,
)
from pocket.service import Account, PocketService
from pocket.users import User, UserNotFound

MAX_BODY_BYTES = 1024 * 1024

log = logging.getLogger(__name__)
bp = Blueprint("pocket", __name__)


def create_app(service: PocketService | None = None) -> Flask:
    """Builds the Flask app over a service (by default, one from the environment)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["pocket"] = service or PocketService(Settings.from_environ())
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(PocketError, domain_error)
    app.register_error_handler(PersistenceError, persistence_error)
    app.register_error_handler(Exception, unexpected_error)
    return app


def service() -> PocketService:
    """The service this app was built over."""
    pocket_service: PocketService = current_app.extensions["pocket"]
    return pocket_service


# Routes


@bp.get("/health")
def health() -> Response:
    """A trivial endpoint: the server is up (it does not touch the database)."""
    return jsonify(status="ok")


@bp.post("/users")
def create_user() -> tuple[Response, int]:
    """Signs up a user, which opens their wallet."""
    body = read_body({"name": text_field("name")})
    return account_json(service().create_user(body["name"])), HTTPStatus.CREATED


@bp.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    """A user and their wallet."""
    return account_json(service().get_account(user_id))


@bp.post("/users/<int:user_id>/add_money")
def add_money(user_id: int) -> Response:
    """Puts money into the user's wallet."""
    body = read_body({"amount": amount_field, "source": text_field("source")})
    return account_json(service().add_money(user_id, body["amount"], body["source"]))


@bp.post("/users/<int:user_id>/draw_money")
def draw_money(user_id: int) -> Response:
    """Takes money out of the user's wallet, never below zero."""
    body = read_body({"amount": amount_field, "destination": text_field("destination")})
    account = service().draw_money(user_id, body["amount"], body["destination"])
    return account_json(account)


@bp.get("/users/<int:user_id>/transactions")
def transactions(user_id: int) -> Response:
    """The user's balance and every movement of money that explains it."""
    wallet, history = service().transactions(user_id)
    return jsonify(
        balance=money(wallet.balance),
        transactions=[transaction_json(t) for t in history],
    )


# Request parsing


@dataclass(frozen=True)
class JSONNumber:
    """A number as written in the request, kept as text so its form can be checked."""

    text: str


Field = Callable[[Any], Any]
AMOUNT_SHAPE = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


def read_body(fields: Mapping[str, Field]) -> dict[str, Any]:
    """The request's JSON object, every field checked, or an ApiError."""
    if request.mimetype != "application/json":
        raise ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON, with Content-Type: application/json.",
        )
    raw = request.get_data(cache=False)
    try:
        body = json.loads(
            raw, parse_float=JSONNumber, parse_int=JSONNumber, parse_constant=JSONNumber
        )
    except (ValueError, RecursionError):
        msg = "The body is not valid JSON."
        raise ApiError(HTTPStatus.BAD_REQUEST, "malformed_json", msg) from None
    if not isinstance(body, dict):
        msg = "The body must be a JSON object."
        raise ApiError(HTTPStatus.BAD_REQUEST, "not_an_object", msg)
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in body.keys() - fields.keys():
        problems[name] = "Unknown field: the server decides it, or it does not exist."
    for name, check in fields.items():
        if name not in body:
            problems[name] = "This field is required."
            continue
        try:
            values[name] = check(body[name])
        except (InvalidAmount, InvalidText) as error:
            problems[name] = str(error)
    if problems:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "validation_failed",
            "Some fields are missing or invalid.",
            fields=dict(sorted(problems.items())),
        )
    return values


def amount_field(value: Any) -> Decimal:
    """An amount: a JSON number or decimal string, digits and up to 2 places."""
    if isinstance(value, JSONNumber):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        msg = "Amount must be a number, or a string holding one, like 12.34."
        raise InvalidAmount(msg)
    if text.lstrip("+-").lower() in ("nan", "infinity", "inf", "snan"):
        raise InvalidAmount("Amount must be a finite number.")
    if not AMOUNT_SHAPE.fullmatch(text):
        msg = "Amount must be plain digits with an optional decimal point, like 12.34."
        raise InvalidAmount(msg)
    if text.startswith("-"):
        raise InvalidAmount("Amount must be greater than zero.")
    _, _, places = text.partition(".")
    if len(places) > 2:
        raise InvalidAmount("Amount must have at most 2 decimal places.")
    return check_amount(Decimal(text))


def text_field(name: str) -> Field:
    """A checker for a required, non-empty text field."""
    return lambda value: check_text(name, value)


# Responses


def money(amount: Decimal) -> str:
    """Money as it leaves the API: a string with two places."""
    return f"{amount:.2f}"


def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it."""
    return {
        "id": user.id,
        "name": user.name,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def wallet_json(wallet: WalletInfo) -> dict[str, Any]:
    """A wallet as the API shows it."""
    return {
        "aggregate_id": str(wallet.aggregate_id),
        "user_id": wallet.user_id,
        "balance": money(wallet.balance),
    }


def account_json(account: Account) -> Response:
    """The seed's response shape: the user and their wallet."""
    return jsonify(user=user_json(account.user), wallet=wallet_json(account.wallet))


def transaction_json(transaction: Transaction) -> dict[str, Any]:
    """One entry of the transactions list."""
    entry: dict[str, Any] = {
        "id": transaction.id,
        "type": transaction.type,
        "amount": money(transaction.amount),
        "date": transaction.date.isoformat(),
    }
    if transaction.source is not None:
        entry["source"] = transaction.source
    if transaction.destination is not None:
        entry["destination"] = transaction.destination
    return entry


# Errors


class ApiError(Exception):
    """An error the API answers with its own status and code."""

    def __init__(
        self,
        status: HTTPStatus,
        code: str,
        message: str,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def error_response(error: ApiError) -> tuple[Response, int]:
    """The one JSON shape of every error."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    return jsonify(error=body), error.status


def api_error(error: ApiError) -> tuple[Response, int]:
    """Errors raised by the API layer itself."""
    return error_response(error)


HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def http_error(error: HTTPException) -> tuple[Response, int]:
    """The framework's own errors (404, 405, 413, ...), as JSON."""
    status = HTTPStatus(error.code or 500)
    code = HTTP_CODES.get(status, status.phrase.lower().replace(" ", "_"))
    message = {
        404: "There is nothing at this address.",
        405: f"{request.method} is not allowed here.",
        413: f"The body must be at most {MAX_BODY_BYTES} bytes.",
    }.get(status, error.description or status.phrase)
    response, status_code = error_response(ApiError(status, code, message))
    if status == HTTPStatus.METHOD_NOT_ALLOWED and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response, status_code


DOMAIN_ERRORS: dict[type[PocketError], tuple[HTTPStatus, str]] = {
    UserNotFound: (HTTPStatus.NOT_FOUND, "user_not_found"),
    WalletNotFound: (HTTPStatus.NOT_FOUND, "wallet_not_found"),
    InsufficientFunds: (HTTPStatus.CONFLICT, "insufficient_funds"),
    ConcurrencyConflict: (HTTPStatus.CONFLICT, "concurrent_update"),
    InvalidAmount: (HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed"),
    InvalidText: (HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed"),
}

DOMAIN_MESSAGES: dict[type[PocketError], str] = {
    UserNotFound: "There is no such user.",
    WalletNotFound: "There is no such wallet.",
    ConcurrencyConflict: "The wallet kept changing under this request; try again.",
}


def domain_error(error: PocketError) -> tuple[Response, int]:
    """Pocket's rules refusing a request, mapped to statuses in one place."""
    for cls, (status, code) in DOMAIN_ERRORS.items():
        if isinstance(error, cls):
            message = DOMAIN_MESSAGES.get(cls, str(error))
            return error_response(ApiError(status, code, message))
    return unexpected_error(error)


def persistence_error(error: PersistenceError) -> tuple[Response, int]:
    """The database could not be reached: 503, the client may retry."""
    if isinstance(error, OperationalError | InterfaceError):
        log.warning("Database unavailable: %s", error)
        return error_response(
            ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The database is unavailable; try again shortly.",
            )
        )
    return unexpected_error(error)


def unexpected_error(error: Exception) -> tuple[Response, int]:
    """A fault of ours, not the client's: logged, and still JSON."""
    if isinstance(error, HTTPException):
        return http_error(error)
    log.exception("Unexpected error", exc_info=error)
    return error_response(
        ApiError(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; it has been logged.",
        )
    )
