"""What is about the API itself rather than a resource: health, readiness, the
metrics, the document, and the document rendered for people at /docs."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from pocket.web.auth import Access, access
from pocket.web.context import service
from pocket.web.errors import ServiceUnavailable
from pocket.web.openapi import openapi_document
from pocket.web.spec import Operation, documented

bp = Blueprint("meta", __name__)


@bp.get("/health")
@access(Access.PUBLIC)
@documented(
    Operation(
        "The server is up (the database is not asked)",
        "meta",
        ("200", "Up.", "Health"),
        secured=False,
    )
)
def health() -> Response:
    """A trivial endpoint: the server is up (it does not touch the database)."""
    return jsonify(status="ok")


@bp.get("/health/ready")
@access(Access.PUBLIC)
@documented(
    Operation(
        "Ready to serve: the database answers and confirms writes",
        "meta",
        ("200", "Ready.", "Ready"),
        ("503",),
        secured=False,
        description=(
            "503 while the database cannot be reached, and while it does not "
            "confirm writes (a synchronous standby gone): the message says why. "
            "Reads are still served then."
        ),
    )
)
def ready() -> Response:
    """Ready to serve: the database answers (else 503, as any request would get)
    and confirms writes (else 503, saying why: reads are still served)."""
    service().check_database()
    writes = service().writes()
    if not writes["confirmed"]:
        since = writes["stuck_since"]
        raise ServiceUnavailable(
            f"Writes are not being confirmed: {writes['why']}"
            + (f", since {since}" if since else "")
            + ". Reads are served; writes are answered 503 until this clears."
        )
    return jsonify(status="ready")


@bp.get("/metrics")
@access(Access.PUBLIC)
@documented(
    Operation(
        "This process's metrics, for Prometheus",
        "meta",
        ("200", "The metrics.", {"type": "string"}),
        secured=False,
        media_type="text/plain",
        description=(
            "Prometheus' text format (version 0.0.4): requests, latency and "
            "refusals by route, group commits, the 503 gate, the projection's lag "
            "and this process's followers. Public, like /health: no user, wallet "
            "or amount appears in it."
        ),
    )
)
def metrics() -> Response:
    """This process's metrics, in Prometheus' text format.

    Public, like /health: they name routes and error codes, never a user, a
    wallet or an amount; a scraper needs no token (the admin's moves money, and
    would otherwise sit in the monitoring's configuration); and they must answer
    while the database is down, when the admin's routes answer 503.
    """
    body = generate_latest(current_app.extensions["pocket.metrics"])
    return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


@bp.get("/openapi.json")
@access(Access.PUBLIC)
@documented(
    Operation(
        "This document",
        "meta",
        ("200", "The OpenAPI document.", {"type": "object"}),
        secured=False,
    )
)
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document(current_app))


# The vendored Swagger UI needs its own styles inline; nothing comes from elsewhere.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)


@bp.get("/docs")
@access(Access.PUBLIC)
@documented(
    Operation("This document, rendered for people (Swagger UI)", "meta", page=True)
)
def docs() -> Response:
    """The OpenAPI document rendered for people (Swagger UI, served from here)."""
    page = current_app.send_static_file("docs.html")
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page
