"""What is about the API itself rather than a resource: health, the document."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

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
