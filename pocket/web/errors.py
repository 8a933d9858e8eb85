"""Every error, whoever raised it (a view, Pocket's rules, the database, Flask
itself), leaves as the same JSON body: `{"error": {"code", "message", "fields"}}`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import psycopg
from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from pocket.domainmodel import PocketError
from pocket.web.context import service

MAX_BODY_BYTES = 1024 * 1024
NOT_FOUND_MESSAGE = "There is nothing at this address."
INVALID = "Some fields are missing or invalid."
GIVEN_TWICE = "Given more than once: say it once, so that it means one thing."
TOO_LARGE_MESSAGE = f"The body must be at most {MAX_BODY_BYTES} bytes."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
}

log = logging.getLogger(__name__)


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


def invalid(field: str, problem: str) -> ApiError:
    """A 422 naming one offending field or parameter."""
    return ApiError(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation_failed",
        INVALID,
        fields={field: problem},
    )


def init_app(app: Flask) -> None:
    """Answers every error as JSON."""
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(PocketError, domain_error)
    app.register_error_handler(PersistenceError, persistence_error)
    app.register_error_handler(Exception, unexpected_error)


def error_response(error: ApiError) -> tuple[Response, int]:
    """The one JSON shape of every error."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.fields:
        body["fields"] = error.fields
    response = jsonify(error=body)
    if error.status == HTTPStatus.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="pocket"'
    return response, error.status


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
