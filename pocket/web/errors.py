"""The catalogue of errors the API answers with, each with its status, code and
message: the HTTP layer's own, declared here as classes, and Pocket's (plain
exceptions in pocket.errors), answered as the one table ANSWERS says. The
handlers, the OpenAPI document and the errors table in docs/api.md (by a test)
all follow the catalogue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, TypeVar

from pocket import errors

MAX_BODY_BYTES = 1024 * 1024
INVALID = "Some fields are missing or invalid."
GIVEN_TWICE = "Given more than once: say it once, so that it means one thing."
TOO_LARGE_MESSAGE = f"The body must be at most {MAX_BODY_BYTES} bytes."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."
VALIDATION_FAILED = "validation_failed"


class ApiError(Exception):
    """An error the HTTP layer answers with; each subclass is one kind of answer."""

    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    code: ClassVar[str | None] = None
    message: ClassVar[str | None] = None  # None: each error brings its own
    # Whole seconds for a Retry-After header, when the error has one.
    retry_after: int | None = None

    def __init__(
        self, message: str | None = None, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or self.message or self.status.phrase)
        self.fields = fields

    def answer_code(self) -> str:
        """The code it is answered with."""
        return self.code or http_code(self.status)


class BadRequest(ApiError):
    """The request is not valid HTTP."""

    status = HTTPStatus.BAD_REQUEST
    code = "bad_request"


class MalformedJSON(ApiError):
    """The body is not JSON."""

    status = HTTPStatus.BAD_REQUEST
    code = "malformed_json"
    message = "The body is not valid JSON."


class NotAnObject(ApiError):
    """The body is JSON, but not a JSON object."""

    status = HTTPStatus.BAD_REQUEST
    code = "not_an_object"
    message = "The body must be a JSON object."


class Unauthorized(ApiError):
    """No bearer token, or one that is not valid."""

    status = HTTPStatus.UNAUTHORIZED
    code = "unauthorized"


class NotFound(ApiError):
    """Nothing at this address (or nothing this caller may use)."""

    status = HTTPStatus.NOT_FOUND
    code = "not_found"
    message = "There is nothing at this address."


class MethodNotAllowed(ApiError):
    """The address does not take this method."""

    status = HTTPStatus.METHOD_NOT_ALLOWED
    code = "method_not_allowed"


class PayloadTooLarge(ApiError):
    """The body is over 1 MiB."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"
    message = TOO_LARGE_MESSAGE


class UnsupportedMediaType(ApiError):
    """The body is not sent as application/json."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    code = "unsupported_media_type"
    message = "Send the body as JSON, with Content-Type: application/json."


class ValidationFailed(ApiError):
    """Fields or parameters are missing, invalid, unknown or given twice."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = VALIDATION_FAILED
    message = INVALID

    def __init__(self, fields: dict[str, str], code: str | None = None) -> None:
        super().__init__(fields=fields)
        # A more specific 422 code (invalid_expiry, invalid_limit), when every
        # field named is wrong in that one way.
        self.specific_code = code

    def answer_code(self) -> str:
        """The code it is answered with."""
        return self.specific_code or super().answer_code()


class TooManySignups(ApiError):
    """Too many sign-ups from this client address (POCKET_SIGNUP_RATE); retry
    after `Retry-After` seconds."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "too_many_signups"

    def __init__(self, seconds: float) -> None:
        self.retry_after = max(1, math.ceil(seconds))
        unit = "second" if self.retry_after == 1 else "seconds"
        super().__init__(f"Too many sign-ups; try again in {self.retry_after} {unit}.")


class HeadersTooLarge(ApiError):
    """The request line and headers are over 64 KiB (the server answers it)."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    code = "request_header_fields_too_large"


class InternalError(ApiError):
    """A fault of ours, never the caller's: it is logged."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "internal_error"
    message = INTERNAL_ERROR_MESSAGE


class TransferEncodingNotImplemented(ApiError):
    """A Transfer-Encoding other than chunked (the server answers it)."""

    status = HTTPStatus.NOT_IMPLEMENTED
    code = "not_implemented"


class ServiceUnavailable(ApiError):
    """The database cannot be reached; retry."""

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "service_unavailable"


def error_body(
    code: str, message: str, fields: dict[str, str] | None = None
) -> dict[str, Any]:
    """The one JSON shape of every error answer, the server's own included."""
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def invalid(field: str, problem: str) -> ValidationFailed:
    """A 422 naming one offending field or parameter."""
    return ValidationFailed({field: problem})


@dataclass(frozen=True)
class Answer:
    """How the API answers one kind of error."""

    kind: type[Exception]
    status: HTTPStatus
    code: str
    # A fixed message, or None for the error's own words.
    message: str | None = None
    # The request field it is about (a 422's `fields`), or None for the one the
    # error names itself, if any.
    field: str | None = None

    @property
    def when(self) -> str:
        """When it is given: the first line of its class's docstring."""
        return (self.kind.__doc__ or "").strip().splitlines()[0]


T = TypeVar("T")
UNPROCESSABLE = HTTPStatus.UNPROCESSABLE_ENTITY
KEY = "Idempotency-Key"
# Pocket's errors, as the API answers them.
ANSWERS = [
    Answer(errors.InvalidAmount, UNPROCESSABLE, "validation_failed"),
    Answer(errors.InvalidText, UNPROCESSABLE, "validation_failed"),
    Answer(
        errors.SameWallet,
        UNPROCESSABLE,
        "validation_failed",
        "A transfer or a hold must go to another user.",
        "to_user_id",
    ),
    Answer(
        errors.RecipientNotFound, UNPROCESSABLE, "validation_failed", None, "to_user_id"
    ),
    Answer(
        errors.IdempotencyKeyReused,
        UNPROCESSABLE,
        "idempotency_key_reused",
        f"This {KEY} was used for a different request.",
        KEY,
    ),
    Answer(errors.InvalidExpiry, UNPROCESSABLE, "invalid_expiry"),
    Answer(errors.InvalidLimit, UNPROCESSABLE, "invalid_limit"),
    Answer(errors.InvalidWebhook, UNPROCESSABLE, "validation_failed"),
    Answer(errors.InsufficientFunds, HTTPStatus.CONFLICT, "insufficient_funds"),
    Answer(errors.DailyLimitExceeded, HTTPStatus.CONFLICT, "daily_limit_exceeded"),
    Answer(errors.HoldEnded, HTTPStatus.CONFLICT, "hold_ended"),
    Answer(errors.CaptureExceedsHold, HTTPStatus.CONFLICT, "capture_exceeds_hold"),
    Answer(errors.HoldNotDue, HTTPStatus.CONFLICT, "hold_not_due"),
    Answer(errors.HoldsOpen, HTTPStatus.CONFLICT, "holds_open"),
    Answer(errors.WalletClosed, HTTPStatus.CONFLICT, "wallet_closed"),
    Answer(errors.WalletNotEmpty, HTTPStatus.CONFLICT, "wallet_not_empty"),
    Answer(
        errors.ConcurrencyConflict,
        HTTPStatus.CONFLICT,
        "concurrent_update",
        "The wallet kept changing under this request; try again.",
    ),
    Answer(
        errors.CommandInFlight,
        HTTPStatus.CONFLICT,
        "idempotency_key_in_flight",
        f"A request with this {KEY} is still running.",
    ),
    Answer(errors.UserNotFound, HTTPStatus.NOT_FOUND, "user_not_found"),
    Answer(errors.WalletNotFound, HTTPStatus.NOT_FOUND, "wallet_not_found"),
    Answer(errors.HoldNotFound, HTTPStatus.NOT_FOUND, "hold_not_found"),
    Answer(errors.WebhookNotFound, HTTPStatus.NOT_FOUND, "webhook_not_found"),
    Answer(
        errors.VersionNotFound,
        HTTPStatus.NOT_FOUND,
        "version_not_found",
        "The wallet had no such version, or did not exist yet then.",
    ),
    Answer(
        errors.TokenRevoked,
        HTTPStatus.UNAUTHORIZED,
        "unauthorized",
        "The bearer token is not valid.",
    ),
]
BY_KIND = {answer.kind: answer for answer in ANSWERS}


def answer_for(error: Exception) -> Answer | None:
    """How the API answers an error of Pocket's (None: a fault of ours)."""
    return answer_for_kind(type(error))


def answer_for_kind(kind: type[Exception]) -> Answer | None:
    """How the API answers a kind of Pocket's errors (None: a fault of ours)."""
    for ancestor in kind.__mro__:
        if ancestor in BY_KIND:
            return BY_KIND[ancestor]
    return None


def field_code(kind: type[Exception]) -> str:
    """The 422 code of a kind of error about a field (validation_failed unless
    the table says a more specific one)."""
    known = answer_for_kind(kind)
    return VALIDATION_FAILED if known is None else known.code


def catalogue() -> list[Answer]:
    """Every kind of error the API answers with, by status and code."""
    http = [
        Answer(kind, kind.status, kind.code, kind.message)
        for kind in subclasses(ApiError)
        if kind.code is not None
    ]
    return sorted([*ANSWERS, *http], key=lambda answer: (answer.status, answer.code))


def subclasses(cls: type[T]) -> list[type[T]]:
    """A class's subclasses, at any depth."""
    return [kind for sub in cls.__subclasses__() for kind in (sub, *subclasses(sub))]


# What the framework and the server raise (with no class of ours) is answered as
# the catalogue's kind for its status.
BY_STATUS: dict[HTTPStatus, type[ApiError]] = {
    kind.status: kind
    for kind in (
        BadRequest,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        HeadersTooLarge,
        InternalError,
        TransferEncodingNotImplemented,
    )
}


def http_code(status: HTTPStatus) -> str:
    """The error code of an HTTP status that has no more specific one."""
    kind = BY_STATUS.get(status)
    if kind is not None and kind.code is not None:
        return kind.code
    # A status the catalogue does not know (the framework may raise any):
    # still a code, from its name.
    return status.phrase.lower().replace(" ", "_")
