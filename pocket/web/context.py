"""What a view knows of its request: the service, the caller, the cause."""

from __future__ import annotations

from flask import current_app, g

from pocket.domainmodel import Cause
from pocket.guards import TokenGuard
from pocket.service import PocketService, Principal
from pocket.users import User


def service() -> PocketService:
    """The service this app was built over."""
    pocket_service: PocketService = current_app.extensions["pocket"]
    return pocket_service


def target(user_id: int) -> User | int:
    """The user a request is about: the caller's own row (read with the token)
    when it is theirs, so the request does not read it again."""
    caller: Principal | None = g.principal
    if caller is not None and caller.user is not None and caller.user.id == user_id:
        return caller.user
    return user_id


def guard() -> TokenGuard | None:
    """What must still hold when the request's command commits: the caller's token."""
    caller: Principal | None = g.principal
    return caller.guard if caller is not None else None


def cause() -> Cause:
    """Who is changing things, under which request: recorded in every event."""
    caller: Principal | None = g.principal
    actor = caller.actor if caller is not None else "anonymous"
    return Cause(actor=actor, correlation_id=g.request_id)
