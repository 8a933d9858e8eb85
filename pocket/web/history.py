"""Reads of a wallet's past: its transactions, page by page, and the wallet as it
was at a version or a moment. Both read the event store, never the projection."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from pocket.web.auth import Access, access
from pocket.web.context import service, target
from pocket.web.errors import invalid
from pocket.web.json_views import money, transaction_json, user_json, wallet_json
from pocket.web.query import (
    choice_arg,
    cursor,
    cursor_arg,
    int_arg,
    moment_arg,
    page_limit,
)

bp = Blueprint("history", __name__)


# The orders a history may be read in (?order=), the default first; each has
# cursors of its own kind, so that one order's cursor is refused by the other.
ORDERS = {"oldest": "t", "newest": "tn"}


@bp.get("/users/<int:user_id>/transactions")
@access(Access.OWNER, query=("limit", "after", "order"))
def transactions(user_id: int) -> Response:
    """A page of the user's money movements, with running balances: oldest first,
    or newest first with ?order=newest."""
    limit = page_limit()
    order = choice_arg("order", tuple(ORDERS))
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
