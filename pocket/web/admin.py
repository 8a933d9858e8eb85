"""The operator's routes: the state of the service in one answer (what the
operator console reads), and a wallet's limits."""

from __future__ import annotations

import psycopg
from eventsourcing.persistence import OperationalError
from flask import Blueprint, Response, jsonify

from pocket.application import WalletInfo
from pocket.commands import SetAlertThreshold, SetCreditLimit, SetDailyLimit
from pocket.errors import InvalidLimit
from pocket.operations import last_verification, status
from pocket.service import Account
from pocket.web.auth import Access, access
from pocket.web.body import Body, Choice
from pocket.web.context import cause, service
from pocket.web.fields import ALERT_BELOW, CREDIT_LIMIT, DAILY_LIMIT
from pocket.web.json_views import account_json
from pocket.web.spec import Operation, documented

bp = Blueprint("admin", __name__)
LIMITS = Body(
    "Limits",
    choices=(
        Choice(
            ("credit_limit", "daily_limit", "alert_below"),
            exclusive=False,
            kind=InvalidLimit,
        ),
    ),
    credit_limit=CREDIT_LIMIT.optional(),
    daily_limit=DAILY_LIMIT.optional(),
    alert_below=ALERT_BELOW.optional(),
)


@bp.get("/admin/status")
@access(Access.ADMIN)
@documented(
    Operation(
        "The projections, the 503 gate and the last verify (admin)",
        "admin",
        ("200", "The service's state.", "AdminStatus"),
        ("401", "404", "503"),
        description=(
            "What the operator console shows. While the database is unreachable "
            "the 503 gate is closed, and this answers 503 `service_unavailable` "
            "as every endpoint that needs the database does."
        ),
    )
)
def admin_status() -> Response:
    """The projections as `pocket status --json` reports them, the 503 gate,
    whether writes are being confirmed, and the last `pocket verify` (admin)."""
    pocket_service = service()
    try:
        report = status(pocket_service.pocket)
    except psycopg.Error as error:
        # The lock holders are read on connections of their own, whose errors
        # are psycopg's: the database went away meanwhile, like any other 503.
        raise OperationalError(str(error)) from error
    verification = last_verification(pocket_service.pocket)
    return jsonify(
        database=pocket_service.settings.description,
        # Read last: a gate that tripped while the rest was read says so.
        gate={"open": not pocket_service.gate.down.is_set()},
        projections=report["projections"],
        followers=report["followers"],
        reads=pocket_service.reads.state(),
        writes=pocket_service.writes(),
        verify=None if verification is None else verification.as_json(),
    )


@bp.put("/admin/users/<int:user_id>/limits")
@access(Access.ADMIN)
@documented(
    Operation(
        "Set a wallet's credit limit, daily limit, or both (admin)",
        "admin",
        ("200", "The user and the wallet with its new limits.", "Account"),
        ("400", "401", "404", "409", "413", "415", "422", "503"),
        body=LIMITS,
        description=(
            "credit_limit: how far below zero what the wallet may spend "
            "(available) may go (0.00: not at all). daily_limit: what it may "
            "spend in a UTC day, open holds included; null lifts it. Each given "
            "is recorded as an event of its own, the admin its actor; one left "
            "out is left as it is. alert_below: a balance.low event of the "
            "change feed when the available amount goes below it (a "
            "subscription's own threshold wins); null: none."
        ),
    )
)
def set_limits(user_id: int) -> Response:
    """Sets the limits given of the user's wallet (admin)."""
    body = LIMITS.read()
    user = service().user(user_id)
    wallet: WalletInfo | None = None
    if "credit_limit" in body:
        wallet = service().pocket.set_credit_limit(
            SetCreditLimit(
                wallet_id=user.wallet_id,
                credit_limit=body["credit_limit"],
                cause=cause(),
            )
        )
    if "daily_limit" in body:
        wallet = service().pocket.set_daily_limit(
            SetDailyLimit(
                wallet_id=user.wallet_id,
                daily_limit=body["daily_limit"],
                cause=cause(),
            )
        )
    if "alert_below" in body:
        wallet = service().pocket.set_alert_threshold(
            SetAlertThreshold(
                wallet_id=user.wallet_id,
                alert_below=body["alert_below"],
                cause=cause(),
            )
        )
    assert wallet is not None  # The body gives one limit at least.
    return jsonify(account_json(Account(user, wallet)))
