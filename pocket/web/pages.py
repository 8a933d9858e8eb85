"""Pages for people: the wallet page at / and the operator console at /console.

Both are static files (HTML, plain JavaScript modules, CSS, under static/) that
call the JSON API with fetch; nothing is fetched from anywhere else. The pages
themselves are public: the data they show needs a token, which the person
pastes and the tab keeps.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app

from pocket.web.auth import Access, access
from pocket.web.spec import Operation, documented

# Scripts and styles from files of this server only (no inline script or style,
# so an injected one does not run); requests to this server only; no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

bp = Blueprint("pages", __name__)


def init_app(app: Flask) -> None:
    """Every answer, page, file or JSON, is taken as the type it says it is."""
    app.after_request(no_sniffing)


def no_sniffing(response: Response) -> Response:
    """Browsers must not guess a type (a JSON answer run as a script, say)."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.get("/")
@access(Access.PUBLIC)
@documented(
    Operation(
        "The wallet page: sign up or in, the balance, the history, moving money "
        "(its data needs the user's token)",
        "pages",
        page=True,
    )
)
def wallet() -> Response:
    """The wallet page: sign up or in, the balance, the history, moving money."""
    return page("wallet.html")


@bp.get("/console")
@access(Access.PUBLIC)
@documented(
    Operation(
        "The operator console (its data needs the admin token)", "pages", page=True
    )
)
def console() -> Response:
    """The operator console (its data needs the admin token)."""
    return page("console.html")


def page(name: str) -> Response:
    """An HTML page under the policy, revalidated on each visit so that a new
    release shows at once."""
    response = current_app.send_static_file(name)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
