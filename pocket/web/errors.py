"""The catalogue of errors the API answers with, each class with its status, code
and message: Pocket's rules' own (`PocketError` and its subclasses, declared where
they are raised) and the HTTP layer's, declared here. The handlers, the OpenAPI
document and the errors table in docs/api.md (by a test) all follow the catalogue.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import ClassVar, TypeVar

# pocket.service imports every module that declares a PocketError (application,
# users), so that the catalogue below finds them all.
import pocket.service  # noqa: F401
from pocket.domainmodel import PocketError

MAX_BODY_BYTES = 1024 * 1024
INVALID = "Some fields are missing or invalid."
GIVEN_TWICE = "Given more than once: say it once, so that it means one thing."
TOO_LARGE_MESSAGE = f"The body must be at most {MAX_BODY_BYTES} bytes."
INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."


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
    code = "validation_failed"
    message = INVALID

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields=fields)


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


def invalid(field: str, problem: str) -> ValidationFailed:
    """A 422 naming one offending field or parameter."""
    return ValidationFailed({field: problem})


Kind = type[PocketError] | type[ApiError]
T = TypeVar("T")


def catalogue() -> list[Kind]:
    """Every kind of error the API answers with, by status and code."""
    kinds: list[Kind] = [*subclasses(PocketError), *subclasses(ApiError)]
    answered = [kind for kind in kinds if kind.code is not None]
    return sorted(answered, key=lambda kind: (kind.status, kind.code or ""))


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
