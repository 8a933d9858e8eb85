"""Reads of a wallet's past: its transactions, page by page, and the wallet as it
was at a version or a moment. Both read the event store, never the projection."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from pocket.web.auth import Access, access
from pocket.web.context import service, target
from pocket.web.errors import invalid
from pocket.web.json_views import money, transaction_json, user_json, wallet_json
from pocket.web.query import (
    AFTER,
    AT,
    LIMIT,
    MAX_VERSION,
    ORDER,
    ORDER_CHOICES,
    VERSION,
    choice_arg,
    cursor,
    cursor_arg,
    int_arg,
    moment_arg,
    page_limit,
)
from pocket.web.spec import Operation, documented

bp = Blueprint("history", __name__)


# The cursors' kind for each order a history may be read in (?order=): one
# order's cursor is refused by the other.
ORDERS = dict(zip(ORDER_CHOICES, ("t", "tn"), strict=True))


@bp.get("/users/<int:user_id>/transactions")
@access(Access.OWNER, query=(LIMIT, AFTER, ORDER))
@documented(
    Operation(
        "The wallet's money movements, paged: oldest or newest first",
        "history",
        ("200", "A page of transactions.", "TransactionPage"),
        ("401", "404", "422", "503"),
    )
)
def transactions(user_id: int) -> Response:
    """A page of the user's money movements, with running balances: oldest first,
    or newest first with ?order=newest."""
    limit = page_limit()
    order = choice_arg(ORDER.name, ORDER_CHOICES)
    kind = ORDERS[order]
    page = service().history(
        target(user_id),
        after=cursor_arg(kind),
        limit=limit,
        newest_first=order == "newest",
    )
    last = page.transactions[-1].id if page.transactions else None
    return jsonify(
        balance=money(page.wallet.balance),
        transactions=[transaction_json(t) for t in page.transactions],
        next=cursor(kind, last) if page.has_more and last is not None else None,
    )


@bp.get("/users/<int:user_id>/wallet")
@access(Access.OWNER, query=(VERSION, AT))
@documented(
    Operation(
        "The wallet now, at a version, or at a moment",
        "history",
        ("200", "The wallet as it was.", "AccountAsOf"),
        ("401", "404", "422", "503"),
    )
)
def wallet_as_of(user_id: int) -> Response:
    """The wallet now, at a version (?version=n) or at a moment (?at=ISO 8601)."""
    if AT.name in request.args and VERSION.name in request.args:
        raise invalid(AT.name, "Give at or version, not both.")
    given = VERSION.name in request.args
    version = int_arg(VERSION.name, 1, MAX_VERSION) if given else None
    at = moment_arg(AT.name) if AT.name in request.args else None
    account = service().wallet_as_of(target(user_id), version=version, at=at)
    wallet = wallet_json(account.wallet)
    wallet["as_of"] = account.wallet.modified_on.isoformat()
    return jsonify(user=user_json(account.user), wallet=wallet)
