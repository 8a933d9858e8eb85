"""The HTTP API: a thin Flask layer over the Pocket service.

Requests are authenticated in one place (before every view), parsed strictly at
the edge, and every error, whoever raised it, leaves as the same JSON body. The
factory is here; each job has a module: `auth` (who may call what), `context`
(what a view knows of its request), `body`, `fields` and `query` (parsing),
`json_views` (what resources look like), `errors` (the catalogue of errors),
`handlers` (every error in the one JSON shape), `observe` (each request
counted, timed and logged), and a blueprint per resource: `users`, `money`,
`holds`, `history`, `meta`, `admin` (the console's data, a wallet's limits);
`pages` serves the wallet page and the operator console.
"""

from __future__ import annotations

from flask import Flask

from pocket.metrics import registry_for
from pocket.service import PocketService
from pocket.web import (
    admin,
    auth,
    handlers,
    history,
    holds,
    meta,
    money,
    observe,
    pages,
    users,
    webhooks,
)
from pocket.web.auth import Access, access
from pocket.web.errors import MAX_BODY_BYTES


def create_app(service: PocketService) -> Flask:
    """Builds the Flask app over a service its caller built (and will close)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["pocket"] = service
    # A registry per app: two apps in one process (tests) count apart.
    registry = registry_for(service.runner, service.catalog, gate=service.gate)
    observe.init_app(app, registry)  # First: its clock starts before the others.
    auth.init_app(app)
    handlers.init_app(app)
    pages.init_app(app)
    users.init_app(app)
    for blueprint in (
        users.bp,
        money.bp,
        holds.bp,
        history.bp,
        meta.bp,
        admin.bp,
        webhooks.bp,
        pages.bp,
    ):
        app.register_blueprint(blueprint)
    # Static files (the pages' scripts and styles, vendored libraries) are public.
    access(Access.PUBLIC)(app.view_functions["static"])
    return app
