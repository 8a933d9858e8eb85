"""Users: sign-up (limited per client address), the admin's list, one user and
their wallet, a new token."""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

from pocket.config import DEFAULT_SIGNUP_RATE
from pocket.ratelimit import RateLimiter
from pocket.service import Principal
from pocket.web.auth import Access, access
from pocket.web.body import NO_FIELDS, Body, read_optional_body
from pocket.web.context import service, target
from pocket.web.errors import TooManySignups
from pocket.web.fields import TEXT
from pocket.web.json_views import account_json, record_json, user_json
from pocket.web.query import AFTER, LIMIT, cursor, cursor_arg, page_limit
from pocket.web.spec import Operation, documented

bp = Blueprint("users", __name__)
NEW_USER = Body("NewUser", name=TEXT)
SIGNUPS = "pocket.signups"


def init_app(app: Flask) -> None:
    """Limits this app's sign-ups per client address, as the settings say."""
    rate = app.extensions["pocket"].settings.signup_rate
    app.extensions[SIGNUPS] = None if rate is None else RateLimiter(rate)


@bp.post("/users")
@access(Access.SIGNUP)
@documented(
    Operation(
        "Sign up a user (opens their wallet; returns their token)",
        "users",
        ("201", "Created.", "NewAccount"),
        ("400", "401", "404", "413", "415", "422", "429", "503"),
        body=NEW_USER,
        also_anonymous=True,
        description=(
            "Without the admin token, each client address may sign up so often "
            f"(POCKET_SIGNUP_RATE, by default {DEFAULT_SIGNUP_RATE}); past that, "
            "429 `too_many_signups` with Retry-After, and nobody is created."
        ),
    )
)
def create_user() -> tuple[Response, int]:
    """Signs up a user, which opens their wallet; the token is shown this once."""
    body = NEW_USER.read()
    principal: Principal | None = g.principal
    by_admin = principal is not None and principal.is_admin
    if not by_admin:
        check_signup_rate()
    account, token = service().create_user(
        body["name"], correlation_id=g.request_id, by_admin=by_admin
    )
    return jsonify(**account_json(account), token=token), HTTPStatus.CREATED


def check_signup_rate() -> None:
    """Counts a sign-up against the client's address; TooManySignups when over.

    The address is the connection's: behind a proxy, the proxy's (a header
    such as X-Forwarded-For is the client's to forge), so every client shares
    one limit there; see docs/api.md ("Who may touch a wallet").
    """
    limiter: RateLimiter | None = current_app.extensions[SIGNUPS]
    if limiter is None:
        return
    wait = limiter.take(request.remote_addr or "")
    if wait:
        raise TooManySignups(wait)


@bp.get("/users")
@access(Access.ADMIN, query=(LIMIT, AFTER))
@documented(
    Operation(
        "List users with their projected wallets (admin)",
        "admin",
        ("200", "A page of users.", "AccountPage"),
        ("401", "404", "422", "503"),
    )
)
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
@documented(
    Operation(
        "A user and their wallet",
        "users",
        ("200", "The user and wallet.", "Account"),
        ("401", "404", "503"),
    )
)
def get_user(user_id: int) -> Response:
    """A user and their wallet."""
    return jsonify(account_json(service().get_account(target(user_id))))


@bp.post("/users/<int:user_id>/token")
@access(Access.OWNER)
@documented(
    Operation(
        "Issue a new API token (the old one stops working)",
        "users",
        ("200", "The new token.", "Token"),
        ("400", "401", "404", "413", "415", "422", "503"),
        body=NO_FIELDS,
        body_required=False,
    )
)
def rotate_token(user_id: int) -> Response:
    """Issues the user a new API token; the old one stops working."""
    read_optional_body()
    principal: Principal = g.principal
    token = service().issue_token(user_id, replacing=principal.token_hash)
    return jsonify(token=token)
