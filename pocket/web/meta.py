"""What is about the API itself rather than a resource: health, the document, and
the document rendered for people at /docs."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from pocket.web.auth import Access, access
from pocket.web.openapi import openapi_document

bp = Blueprint("meta", __name__)


@bp.get("/health")
@access(Access.PUBLIC)
def health() -> Response:
    """A trivial endpoint: the server is up (it does not touch the database)."""
    return jsonify(status="ok")


@bp.get("/openapi.json")
@access(Access.PUBLIC)
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return jsonify(openapi_document())


# The vendored Swagger UI needs its own styles inline; nothing comes from elsewhere.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'"
)


@bp.get("/docs")
@access(Access.PUBLIC)
def docs() -> Response:
    """The OpenAPI document rendered for people (Swagger UI, served from here)."""
    page = current_app.send_static_file("docs.html")
    page.headers["Content-Security-Policy"] = DOCS_POLICY
    page.headers["X-Content-Type-Options"] = "nosniff"
    return page
