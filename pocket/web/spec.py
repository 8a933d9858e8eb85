"""What each route says of itself, for the API's document (pocket.web.openapi):
its parameters, declared once where the views read them, and its operation (a
summary, the answer, the errors, the body), declared on the view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pocket.web.body import Body, Schema

JSON = "application/json"
View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter: its name, where it goes, its schema."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Schema
    description: str = ""

    def spec(self) -> Schema:
        """The parameter as OpenAPI declares one."""
        spec: Schema = {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path",
        }
        if self.description:
            spec["description"] = self.description
        spec["schema"] = self.schema
        return spec


# The user a route is about, in its path.
USER_ID = Param("user_id", "path", {"type": "integer", "minimum": 1})
# One of their holds (a path whose id is no UUID is no route: 404 not_found).
HOLD_ID = Param("hold_id", "path", {"type": "string", "format": "uuid"})
WEBHOOK_ID = Param("webhook_id", "path", {"type": "string", "format": "uuid"})


@dataclass(frozen=True)
class Operation:
    """One route's operation, as the document shows it.

    success is (status, description, schema): a component's name or a schema.
    errors are the statuses of the catalogue's error responses it may answer
    (422 always: a bad header). keyed: it takes an Idempotency-Key. page: an
    HTML page for people, public, which calls the API for its data.
    """

    summary: str
    tag: str
    success: tuple[str, str, str | Schema] = ("200", "", {})
    errors: tuple[str, ...] = ()
    body: Body | None = None
    body_required: bool = True
    keyed: bool = False
    secured: bool = True
    # Who else may call it, beside the secured (a sign-up open to anyone).
    also_anonymous: bool = False
    media_type: str = JSON
    description: str = ""
    page: bool = False


def documented(operation: Operation) -> Callable[[View], View]:
    """Declares how the API's document shows a view's operation."""

    def declare(view: View) -> View:
        view.operation = operation  # type: ignore[attr-defined]
        return view

    return declare
