"""What the operator console reads: the state of the service, in one answer."""

from __future__ import annotations

import psycopg
from eventsourcing.persistence import OperationalError
from flask import Blueprint, Response, jsonify

from pocket.operations import last_verification, status
from pocket.web.auth import Access, access
from pocket.web.context import service
from pocket.web.spec import Operation, documented

bp = Blueprint("admin", __name__)


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
        reads=pocket_service.reads.state(),
        writes=pocket_service.writes(),
        verify=None if verification is None else verification.as_json(),
    )
