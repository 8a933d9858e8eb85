"""Who may call what: each view declares its access level, one hook enforces it
before every view; and the headers that say who is asking (the bearer token, the
request id, the Idempotency-Key)."""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from pocket.domainmodel import correlation_id
from pocket.errors import UserNotFound
from pocket.service import Principal
from pocket.web.context import service
from pocket.web.errors import NotFound, Unauthorized, invalid
from pocket.web.query import check_query
from pocket.web.spec import Param

MAX_KEY_LENGTH = 255
MAX_REQUEST_ID_LENGTH = 128
VISIBLE_ASCII = "visible ASCII characters (letters, digits, punctuation; no spaces)"
# Header values a client chooses are visible ASCII: letters, digits and
# punctuation, no spaces (a repeated header arrives joined by ", ", so it is
# refused rather than half read). One character is one byte, whatever decodes it.
# Declared once: read below, documented from here.
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "pattern": f"^[!-~]{{1,{MAX_KEY_LENGTH}}}$"},
    f"1 to {MAX_KEY_LENGTH} {VISIBLE_ASCII}, scoped to the caller; anything else "
    "is refused with 422. The same key with the same body returns the first "
    "response and changes nothing; with a different body, 422; while the first "
    "request runs, 409.",
)
REQUEST_ID = Param(
    "X-Request-Id",
    "header",
    {"type": "string", "pattern": f"^[!-~]{{1,{MAX_REQUEST_ID_LENGTH}}}$"},
    "Your correlation id for the request, recorded with every event it causes "
    f"and returned in the answer: 1 to {MAX_REQUEST_ID_LENGTH} {VISIBLE_ASCII}; "
    "anything else is refused with 422. Without it, Pocket makes one up.",
)


def header_matches(param: Param, value: str) -> bool:
    """Whether a header's value is what its declaration's pattern allows."""
    return re.fullmatch(param.schema["pattern"], value) is not None


# The 401 of an admin's route on a server started without POCKET_ADMIN_TOKEN,
# where "not valid" would send the operator looking for a typo.
NO_ADMIN_ACCESS = (
    "This server has no admin token: set POCKET_ADMIN_TOKEN and restart it."
)

View = TypeVar("View", bound=Callable[..., Any])
NO_QUERY: frozenset[str] = frozenset()


class Access(Enum):
    """Who may call a view."""

    PUBLIC = "anyone"
    SIGNUP = "anyone while sign-up is open, else the admin"
    ADMIN = "the admin"
    OWNER = "the user named in the path, or the admin"


def access(level: Access, query: tuple[Param, ...] = ()) -> Callable[[View], View]:
    """Declares who may call a view, and the query parameters it reads."""

    def declare(view: View) -> View:
        view.access = level  # type: ignore[attr-defined]
        view.query = query  # type: ignore[attr-defined]
        # What authorize checks each request against, made once.
        view.query_names = frozenset(param.name for param in query)  # type: ignore[attr-defined]
        return view

    return declare


def init_app(app: Flask) -> None:
    """Checks every request to a view, and names the request in every answer."""
    app.before_request(authorize)
    app.after_request(add_request_id)


def authorize() -> None:
    """Authenticates the caller and checks the view's access level, for every view;
    then refuses query parameters the view does not read."""
    endpoint = request.endpoint
    if endpoint is None:
        g.request_id = correlation_id()
        return  # No view: the 404 or 405 answers itself, to anyone.
    g.request_id = request_id()
    g.principal = None
    view = current_app.view_functions.get(endpoint)
    # A view that declares nothing is the admin's alone.
    level = getattr(view, "access", Access.ADMIN)
    if level is not Access.PUBLIC:
        service().gate.check()
        g.principal = check_access(level)
    if request.query_string:  # Most requests have none: nothing to refuse.
        check_query(getattr(view, "query_names", NO_QUERY))


def check_access(level: Access) -> Principal | None:
    """The caller, if they may use a view of this level (None: anonymous sign-up)."""
    header = request.headers.get("Authorization")
    open_signup = level is Access.SIGNUP and service().settings.open_signup
    if open_signup and header is None:
        return None
    try:
        principal = authenticate(header)
    except Unauthorized:
        if level is Access.ADMIN and service().settings.admin_token is None:
            # Whoever sends a token here means it for the admin's: say that no
            # token can be (it tells nobody more than that there is no admin).
            raise Unauthorized(NO_ADMIN_ACCESS) from None
        raise
    if level is Access.OWNER:
        user_id = (request.view_args or {}).get("user_id")
        if not (isinstance(user_id, int) and principal.may_act_for(user_id)):
            # Another user's wallet: as if it did not exist.
            raise UserNotFound(user_id)
    elif not (principal.is_admin or open_signup):
        # An endpoint this caller may not use is, to them, not there.
        raise NotFound()
    return principal


def authenticate(header: str | None) -> Principal:
    """The principal a bearer token stands for; 401 when there is none."""
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        # Perhaps a token checked a while ago: a change is made only if it is
        # still the user's when it commits (see PocketService.authenticate).
        for_change = request.method not in ("GET", "HEAD")
        principal = service().authenticate(token, for_change=for_change)
        if principal is not None:
            return principal
        message = "The bearer token is not valid."
    else:
        message = "Send a bearer token: Authorization: Bearer <token>."
    raise Unauthorized(message)


def request_id() -> str:
    """The request's correlation id: the client's X-Request-Id, or a new one."""
    given = request.headers.get(REQUEST_ID.name)
    if given is None:
        return correlation_id()
    if not header_matches(REQUEST_ID, given):
        problem = f"Must be 1 to {MAX_REQUEST_ID_LENGTH} {VISIBLE_ASCII}."
        raise invalid(REQUEST_ID.name, problem)
    return given


def add_request_id(response: Response) -> Response:
    """Every answer names the request it answers."""
    response.headers["X-Request-Id"] = g.get("request_id") or correlation_id()
    return response


def command_id() -> str | None:
    """The Idempotency-Key, scoped to the caller, or None when none was sent."""
    key = request.headers.get(IDEMPOTENCY_KEY.name)
    if key is None:
        return None
    if not header_matches(IDEMPOTENCY_KEY, key):
        problem = f"Must be 1 to {MAX_KEY_LENGTH} {VISIBLE_ASCII}."
        raise invalid(IDEMPOTENCY_KEY.name, problem)
    principal: Principal = g.principal
    return f"{principal.actor}:{key}"
