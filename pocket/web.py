"""The HTTP API: a thin Flask layer over the Pocket service.

Requests are authenticated in one place (before every view), parsed strictly at
the edge, and every error, whoever raised it, leaves as the same JSON body.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from http import HTTPStatus
from typing import Any, TypeVar

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
)
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pocket.application import (
    HISTORY_PAGE_MAX,
    Transaction,
    TransferInfo,
    WalletInfo,
)
from pocket.config import Settings
from pocket.domainmodel import (
    Cause,
    InvalidAmount,
    InvalidText,
    PocketError,
    check_amount,
    check_text,
    correlation_id,
)
from pocket.openapi import openapi_document
from pocket.service import Account, PocketService, Principal
from pocket.system import WalletRecord
from pocket.users import MAX_USER_ID, User, UserNotFound

MAX_BODY_BYTES = 1024 * 1024
MAX_KEY_LENGTH = 255
MAX_REQUEST_ID_LENGTH = 128
MAX_POSITION = 2**63 - 1  # The databases' bigint
DEFAULT_PAGE = 50
# Header values a client chooses are visible ASCII: letters, digits and
# punctuation, no spaces (a repeated header arrives joined by ", ", so it is
# refused rather than half read). One character is one byte, whatever decodes it.
IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")
REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")
VISIBLE_ASCII = "visible ASCII characters (letters, digits, punctuation; no spaces)"

log = logging.getLogger(__name__)
bp = Blueprint("pocket", __name__)
View = TypeVar("View", bound=Callable[..., Any])


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
    app.after_request(add_request_id)
    return app


def service() -> PocketService:
    """The service this app was built over."""
    pocket_service: PocketService = current_app.extensions["pocket"]
    return pocket_service


# Who may call what: each view declares it, one hook enforces it.


class Access(Enum):
    """Who may call a view."""

    PUBLIC = "anyone"
    SIGNUP = "anyone while sign-up is open, else the admin"
    ADMIN = "the admin"
    OWNER = "the user named in the path, or the admin"


def access(level: Access, query: tuple[str, ...] = ()) -> Callable[[View], View]:
    """Declares who may call a view, and the query parameters it reads."""

    def declare(view: View) -> View:
        view.access = level  # type: ignore[attr-defined]
        view.query = frozenset(query)  # type: ignore[attr-defined]
        return view

    return declare


@bp.before_request
def authorize() -> None:
    """Authenticates the caller and checks the view's access level, for every view;
    then refuses query parameters the view does not read."""
    g.request_id = correlation_id()
    g.request_id = request_id()
    g.principal = None
    view = current_app.view_functions.get(request.endpoint or "")
    # A view that declares nothing is the admin's alone.
    level = getattr(view, "access", Access.ADMIN)
    if level is not Access.PUBLIC:
        service().gate.check()
        g.principal = check_access(level)
    check_query(getattr(view, "query", frozenset()))


def check_access(level: Access) -> Principal | None:
    """The caller, if they may use a view of this level (None: anonymous sign-up)."""
    header = request.headers.get("Authorization")
    open_signup = level is Access.SIGNUP and service().settings.open_signup
    if open_signup and header is None:
        return None
    principal = authenticate(header)
    if level is Access.OWNER:
        user_id = (request.view_args or {}).get("user_id")
        if not (isinstance(user_id, int) and principal.may_act_for(user_id)):
            # Another user's wallet: as if it did not exist.
            raise UserNotFound(user_id)
    elif not (principal.is_admin or open_signup):
        # An endpoint this caller may not use is, to them, not there.
        raise ApiError(HTTPStatus.NOT_FOUND, "not_found", NOT_FOUND_MESSAGE)
    return principal


def check_query(known: frozenset[str]) -> None:
    """Refuses query parameters the view does not read, or given twice."""
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise invalid(unknown[0], "Unknown query parameter.")
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise invalid(name, GIVEN_TWICE)


def authenticate(header: str | None) -> Principal:
    """The principal a bearer token stands for; 401 when there is none."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        # Reads may trust a token checked a moment ago; a change (money, closing,
        # a new token) asks the database, so a revoked token changes nothing.
        fresh = request.method not in ("GET", "HEAD")
        principal = service().authenticate(token, fresh=fresh)
        if principal is not None:
            return principal
        message = "The bearer token is not valid."
    else:
        message = "Send a bearer token: Authorization: Bearer <token>."
    raise ApiError(HTTPStatus.UNAUTHORIZED, "unauthorized", message)


def request_id() -> str:
    """The request's correlation id: the client's X-Request-Id, or a new one."""
    given = request.headers.get("X-Request-Id")
    if given is None:
        return correlation_id()
    if not REQUEST_ID.fullmatch(given):
        problem = f"Must be 1 to {MAX_REQUEST_ID_LENGTH} {VISIBLE_ASCII}."
        raise invalid("X-Request-Id", problem)
    return given


def add_request_id(response: Response) -> Response:
    """Every answer names the request it answers."""
    response.headers["X-Request-Id"] = g.get("request_id") or correlation_id()
    return response


def target(user_id: int) -> User | int:
    """The user a request is about: the caller's own row (read with the token)
    when it is theirs, so the request does not read it again."""
    principal: Principal | None = g.principal
    if (
        principal is not None
        and principal.user is not None
        and (principal.user.id == user_id)
    ):
        return principal.user
    return user_id


def cause() -> Cause:
    """Who is changing things, under which request: recorded in every event."""
    principal: Principal | None = g.principal
    actor = principal.actor if principal is not None else "anonymous"
    return Cause(actor=actor, correlation_id=g.request_id)


def command_id() -> str | None:
    """The Idempotency-Key, scoped to the caller, or None when none was sent."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid(
            "Idempotency-Key", f"Must be 1 to {MAX_KEY_LENGTH} {VISIBLE_ASCII}."
        )
    principal: Principal = g.principal
    return f"{principal.actor}:{key}"


# Routes


@bp.get("/health")
@access(Access.PUBLIC)
def health() -> Response:
    """A trivial endpoint: the server is up (it does not touch the database)."""
    return jsonify(status="ok")


@bp.get("/openapi.json")
@access(Access.PUBLIC)
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document())


@bp.post("/users")
@access(Access.SIGNUP)
def create_user() -> tuple[Response, int]:
    """Signs up a user, which opens their wallet; the token is shown this once."""
    body = read_body({"name": text_field("name")})
    principal: Principal | None = g.principal
    account, token = service().create_user(
        body["name"],
        correlation_id=g.request_id,
        by_admin=principal is not None and principal.is_admin,
    )
    return jsonify(**account_json(account), token=token), HTTPStatus.CREATED


@bp.get("/users")
@access(Access.ADMIN, query=("limit", "after"))
def list_users() -> Response:
    """A page of users with their wallets as the projection has them (admin)."""
    limit = page_limit()
    after = cursor_arg("u")
    page = service().list_accounts(after, limit + 1)
    more = len(page) > limit
    page = page[:limit]
    return jsonify(
        users=[
            {"user": user_json(user), "wallet": record_json(record)}
            for user, record in page
        ],
        next=cursor("u", page[-1][0].id) if more else None,
    )


@bp.get("/users/<int:user_id>")
@access(Access.OWNER)
def get_user(user_id: int) -> Response:
    """A user and their wallet."""
    return jsonify(account_json(service().get_account(target(user_id))))


@bp.post("/users/<int:user_id>/token")
@access(Access.OWNER)
def rotate_token(user_id: int) -> Response:
    """Issues the user a new API token; the old one stops working."""
    read_optional_body()
    principal: Principal = g.principal
    token = service().issue_token(user_id, replacing=principal.token_hash)
    return jsonify(token=token)


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


@bp.get("/users/<int:user_id>/transactions")
@access(Access.OWNER, query=("limit", "after"))
def transactions(user_id: int) -> Response:
    """A page of the user's money movements, oldest first, with running balances."""
    limit = page_limit()
    page = service().history(target(user_id), after=cursor_arg("t"), limit=limit)
    last = page.transactions[-1].id if page.transactions else None
    return jsonify(
        balance=money(page.wallet.balance),
        transactions=[transaction_json(t) for t in page.transactions],
        next=cursor("t", last) if page.has_more and last is not None else None,
    )


@bp.get("/users/<int:user_id>/wallet")
@access(Access.OWNER, query=("at", "version"))
def wallet_as_of(user_id: int) -> Response:
    """The wallet now, at a version (?version=n) or at a moment (?at=ISO 8601)."""
    if "at" in request.args and "version" in request.args:
        raise invalid("at", "Give at or version, not both.")
    version = int_arg("version", 1, 2**62) if "version" in request.args else None
    at = moment_arg("at") if "at" in request.args else None
    account = service().wallet_as_of(target(user_id), version=version, at=at)
    wallet = wallet_json(account.wallet)
    wallet["as_of"] = account.wallet.modified_on.isoformat()
    return jsonify(user=user_json(account.user), wallet=wallet)


# Request parsing


@dataclass(frozen=True)
class JSONNumber:
    """A number as written in the request, kept as text so its form can be checked."""

    text: str


Field = Callable[[Any], Any]
AMOUNT_SHAPE = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


def read_body(
    fields: Mapping[str, Field], optional: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The request's JSON object, every field checked, or an ApiError."""
    body = read_json_object()
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in body.keys() - fields.keys():
        problems[name] = "Unknown field: the server decides it, or it does not exist."
    for name, check in fields.items():
        if name not in body:
            if name not in optional:
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
            INVALID,
            fields=dict(sorted(problems.items())),
        )
    return values


def read_optional_body() -> None:
    """For commands without fields: no body at all, or an empty JSON object."""
    if request.content_length or request.headers.get("Transfer-Encoding"):
        read_body({})


def read_json_object() -> dict[str, Any]:
    """The body as a JSON object whose numbers are kept as written."""
    if request.mimetype != "application/json":
        raise ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON, with Content-Type: application/json.",
        )
    raw = request.get_data(cache=False)
    try:
        body = json.loads(
            raw,
            parse_float=JSONNumber,
            parse_int=JSONNumber,
            parse_constant=JSONNumber,
            object_pairs_hook=unique_keys,
        )
    except RepeatedKey as repeated:
        raise invalid(repeated.key, GIVEN_TWICE) from None
    except (ValueError, RecursionError):
        msg = "The body is not valid JSON."
        raise ApiError(HTTPStatus.BAD_REQUEST, "malformed_json", msg) from None
    if not isinstance(body, dict):
        msg = "The body must be a JSON object."
        raise ApiError(HTTPStatus.BAD_REQUEST, "not_an_object", msg)
    return body


GIVEN_TWICE = "Given more than once: say it once, so that it means one thing."


class RepeatedKey(Exception):
    """A JSON object names a key twice (which one counts depends on the reader)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing keys given twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKey(key)
        obj[key] = value
    return obj


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


def user_id_field(value: Any) -> int:
    """A user id: a positive JSON integer."""
    text = value.text if isinstance(value, JSONNumber) else None
    if text is None or not DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_USER_ID:
        raise InvalidText("to_user_id", "must be a user id (a positive integer).")
    return int(text)


def text_field(name: str) -> Field:
    """A checker for a non-empty text field."""
    return lambda value: check_text(name, value)


def page_limit() -> int:
    """?limit=: how many entries a page holds."""
    if "limit" not in request.args:
        return DEFAULT_PAGE
    return int_arg("limit", 1, HISTORY_PAGE_MAX)


def int_arg(name: str, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high]."""
    text = request.args[name]
    if not DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise invalid(name, f"Must be an integer from {low} to {high}.")
    return int(text)


def moment_arg(name: str) -> datetime:
    """A query parameter that must be an ISO 8601 date or date and time."""
    try:
        moment = datetime.fromisoformat(request.args[name])
    except ValueError:
        raise invalid(name, "Must be an ISO 8601 date and time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cursor(kind: str, position: int) -> str:
    """An opaque cursor for the page after position."""
    raw = f"{kind}1.{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_arg(kind: str) -> int:
    """The position an ?after= cursor names (0 when there is none)."""
    value = request.args.get("after")
    if value is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, _, position = raw.partition(".")
    if (
        prefix != f"{kind}1"
        or not DIGITS.fullmatch(position)
        or int(position) > MAX_POSITION
    ):
        raise invalid("after", "Not a cursor this list gave out.")
    return int(position)


def invalid(field: str, problem: str) -> ApiError:
    """A 422 naming one offending field or parameter."""
    return ApiError(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation_failed",
        INVALID,
        fields={field: problem},
    )


# Responses


def money(amount: Decimal) -> str:
    """Money as it leaves the API: a string with two places."""
    return f"{amount:.2f}"


@functools.lru_cache(maxsize=4096)
def user_json(user: User) -> dict[str, Any]:
    """A user as the API shows it (users seldom change: kept for the next answer)."""
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
        "version": wallet.version,
        "closed": wallet.closed,
    }


def record_json(record: WalletRecord | None) -> dict[str, Any] | None:
    """A wallet as the projection has it (None until the projection reaches it)."""
    if record is None:
        return None
    return {
        "aggregate_id": str(record.aggregate_id),
        "user_id": record.user_id,
        "balance": money(record.balance),
        "version": record.version,
    }


def account_json(account: Account) -> dict[str, Any]:
    """The seed's response shape: the user and their wallet."""
    return {"user": user_json(account.user), "wallet": wallet_json(account.wallet)}


def transfer_json(result: TransferInfo, from_user: int, to_user: int) -> dict[str, Any]:
    """A transfer as its sender sees it."""
    return {
        "id": str(result.id),
        "from_user_id": from_user,
        "to_user_id": to_user,
        "amount": money(result.amount),
        "description": result.description,
        "date": result.sender.modified_on.isoformat(),
    }


def transaction_json(transaction: Transaction) -> dict[str, Any]:
    """One entry of the transactions list."""
    entry: dict[str, Any] = {
        "id": transaction.id,
        "type": transaction.type,
        "amount": money(transaction.amount),
        "balance": money(transaction.balance),
        "date": transaction.date.isoformat(),
    }
    if transaction.source is not None:
        entry["source"] = transaction.source
    if transaction.destination is not None:
        entry["destination"] = transaction.destination
    if transaction.transfer_id is not None:
        entry["transfer_id"] = str(transaction.transfer_id)
        entry["counterparty"] = {
            "user_id": transaction.counterparty_user_id,
            "wallet_id": str(transaction.counterparty_wallet_id),
        }
        entry["description"] = transaction.description
    entry["actor"] = transaction.actor
    entry["correlation_id"] = transaction.correlation_id
    return entry


# Errors

NOT_FOUND_MESSAGE = "There is nothing at this address."
INVALID = "Some fields are missing or invalid."


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
    response = jsonify(error=body)
    if error.status == HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pocket"'
    return response, error.status


def api_error(error: ApiError) -> tuple[Response, int]:
    """Errors raised by the API layer itself."""
    return error_response(error)


HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}
TOO_LARGE_MESSAGE = f"The body must be at most {MAX_BODY_BYTES} bytes."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."


def http_code(status: HTTPStatus) -> str:
    """The error code of an HTTP status that has no more specific one."""
    return HTTP_CODES.get(status, status.phrase.lower().replace(" ", "_"))


def http_error(error: HTTPException) -> tuple[Response, int]:
    """The framework's own errors (404, 405, 413, ...), as JSON."""
    status = HTTPStatus(error.code or 500)
    code = http_code(status)
    message = {
        404: NOT_FOUND_MESSAGE,
        405: f"{request.method} is not allowed here.",
        413: TOO_LARGE_MESSAGE,
    }.get(status, error.description or status.phrase)
    response, status_code = error_response(ApiError(status, code, message))
    if status == HTTPStatus.METHOD_NOT_ALLOWED and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response, status_code


def domain_error(error: PocketError) -> tuple[Response, int]:
    """Pocket's rules refusing a request: each error class says how it is answered."""
    if error.code is None:
        return unexpected_error(error)
    problem = error.message or str(error)
    if error.field is None:
        return error_response(ApiError(error.status, error.code, problem))
    fields = {error.field: problem}
    return error_response(ApiError(error.status, error.code, INVALID, fields))


def persistence_error(error: PersistenceError) -> tuple[Response, int]:
    """The database could not be reached: 503, the client may retry."""
    if isinstance(error, OperationalError | InterfaceError):
        if lost_connection(error):
            service().gate.trip()
        message = "The database is unavailable; try again shortly."
        if request.method == "POST":
            message += (
                " Whether the change was made is not known: send it again with"
                " the same Idempotency-Key, and it is made exactly once."
            )
        response, status = error_response(
            ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "service_unavailable", message)
        )
        response.headers["Retry-After"] = "1"
        return response, status
    return unexpected_error(error)


def lost_connection(error: BaseException) -> bool:
    """Whether an error means the database could not be reached at all.

    Errors the server itself reported (a lock timeout, a cancelled query) carry
    an SQLSTATE; a refused or dropped connection, or a pool with none to give,
    does not.
    """
    cause = error.__cause__
    return not (isinstance(cause, psycopg.Error) and cause.sqlstate is not None)


def unexpected_error(error: Exception) -> tuple[Response, int]:
    """A fault of ours, not the client's: logged, and still JSON."""
    if isinstance(error, HTTPException):
        return http_error(error)
    log.exception("Unexpected error", exc_info=error)
    return error_response(
        ApiError(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            http_code(HTTPStatus.INTERNAL_SERVER_ERROR),
            INTERNAL_ERROR_MESSAGE,
        )
    )
