"""Every error, whoever raised it (a view, Pocket's rules, the database, Flask
itself), leaves as the same JSON body: `{"error": {"code", "message", "fields"}}`,
with the status, code and message its class declares."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pocket.deadlines import RESEND, WriteNotConfirmed, WritesStalled
from pocket.errors import HoldEnded, PocketError
from pocket.postgres_pool import refused_as_read_only
from pocket.results import HoldInfo
from pocket.web.context import service
from pocket.web.errors import (
    BY_STATUS,
    INVALID,
    ApiError,
    InternalError,
    MethodNotAllowed,
    ServiceUnavailable,
    answer_for,
    error_body,
    http_code,
)
from pocket.web.json_views import hold_json

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Answers every error as JSON."""
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ApiError, api_error)
    app.register_error_handler(PocketError, domain_error)
    app.register_error_handler(PersistenceError, persistence_error)
    app.register_error_handler(Exception, unexpected_error)


def answer(
    status: HTTPStatus,
    code: str,
    message: str,
    fields: dict[str, str] | None = None,
    **details: Any,
) -> tuple[Response, int]:
    """The one JSON shape of every error (details: what more an error tells)."""
    g.error_code = code  # For the refusals counted by code (pocket.web.observe).
    body = error_body(code, message, fields)
    body["error"].update(details)
    response = jsonify(body)
    if status == HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pocket"'
    return response, status


def api_error(error: ApiError) -> tuple[Response, int]:
    """Errors raised by the HTTP layer itself."""
    response, status = answer(
        error.status, error.answer_code(), str(error), error.fields
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response, status


def domain_error(error: PocketError) -> tuple[Response, int]:
    """Pocket's rules refusing a request: answered as the catalogue's table says."""
    known = answer_for(error)
    if known is None:
        return unexpected_error(error)
    problem = known.message or str(error)
    field = known.field or error.field
    if field is not None:
        return answer(known.status, known.code, INVALID, {field: problem})
    if isinstance(error, HoldEnded) and isinstance(error.hold, HoldInfo):
        # A capture or void that lost a race hears how the hold really ended.
        return answer(known.status, known.code, problem, hold=hold_json(error.hold))
    return answer(known.status, known.code, problem)


def http_error(error: HTTPException) -> tuple[Response, int]:
    """The framework's own errors (404, 405, 413, ...), as JSON."""
    status = HTTPStatus(error.code or 500)
    kind = BY_STATUS.get(status)
    fixed = kind.message if kind is not None else None
    message = fixed or error.description or status.phrase
    if kind is MethodNotAllowed:
        message = f"{request.method} is not allowed here."
    response, status_code = answer(status, http_code(status), message)
    if kind is MethodNotAllowed and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response, status_code


def persistence_error(error: PersistenceError) -> tuple[Response, int]:
    """The database could not be reached, refused a write as read-only (a
    failover under way), or did not confirm a write in time: 503, the client may
    retry."""
    if isinstance(error, WriteNotConfirmed | WritesStalled):
        # The database answers, but does not confirm writes (its synchronous
        # standby is gone, say): reads go on, so the gate stays open.
        return unavailable(str(error))
    if refused_as_read_only(error):
        # Nothing was written. The pool leaves that server: the next requests
        # connect to the primary, or meet the gate while there is none.
        service().users.db.leave_server()
    elif not isinstance(error, OperationalError | InterfaceError):
        return unexpected_error(error)
    elif lost_connection(error):
        service().gate.trip()
    message = "The database is unavailable; try again shortly."
    if request.method == "POST":
        message += f" {RESEND}"
    return unavailable(message)


def unavailable(message: str) -> tuple[Response, int]:
    """A 503 the client may retry a second later."""
    response, status = api_error(ServiceUnavailable(message))
    response.headers["Retry-After"] = "1"
    return response, status


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
    return api_error(InternalError())
