"""Query parameters, read strictly: each view names those it reads, every other
one (or one given twice) is refused; pages are walked with opaque cursors."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from flask import request

from pocket.application import HISTORY_PAGE_MAX
from pocket.web.errors import GIVEN_TWICE, invalid
from pocket.web.fields import DIGITS
from pocket.web.spec import Param

DEFAULT_PAGE = 50
MAX_POSITION = 2**63 - 1  # The databases' bigint
MAX_VERSION = 2**62
# The history's two orders; the first is the default.
ORDER_CHOICES = ("oldest", "newest")

# The query parameters, declared once: read below, documented from here.
LIMIT = Param(
    "limit",
    "query",
    {
        "type": "integer",
        "minimum": 1,
        "maximum": HISTORY_PAGE_MAX,
        "default": DEFAULT_PAGE,
    },
)
AFTER = Param(
    "after",
    "query",
    {"type": "string"},
    "The opaque cursor from the previous page's next.",
)
ORDER = Param(
    "order",
    "query",
    {"enum": list(ORDER_CHOICES), "default": ORDER_CHOICES[0]},
    "oldest: the first movement first (the default); newest: the latest "
    "first, as the wallet page shows them. A cursor (next) is for the order "
    "that gave it: the other order refuses it with 422.",
)
VERSION = Param(
    "version", "query", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
)
AT = Param("at", "query", {"type": "string", "format": "date-time"})


def check_query(known: frozenset[str]) -> None:
    """Refuses query parameters the view does not read, or given twice."""
    unknown = sorted(set(request.args) - known)
    if unknown:
        raise invalid(unknown[0], "Unknown query parameter.")
    for name in request.args:
        if len(request.args.getlist(name)) > 1:
            raise invalid(name, GIVEN_TWICE)


def page_limit() -> int:
    """?limit=: how many entries a page holds."""
    if LIMIT.name not in request.args:
        return DEFAULT_PAGE
    return int_arg(LIMIT.name, 1, HISTORY_PAGE_MAX)


def choice_arg(name: str, choices: tuple[str, ...]) -> str:
    """A query parameter that must be one of choices (the first when absent)."""
    text = request.args.get(name, choices[0])
    if text not in choices:
        raise invalid(name, f"Must be {' or '.join(choices)}.")
    return text


def int_arg(name: str, low: int, high: int) -> int:
    """A query parameter that must be an integer in [low, high]."""
    text = request.args[name]
    if not DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise invalid(name, f"Must be an integer from {low} to {high}.")
    return int(text)


# An offset's "+" sent unencoded in a query string arrives as a space.
SPACED_OFFSET = re.compile(r"(.*T[0-9:.]+) ([0-9]{2}(?::?[0-9]{2})?)", re.ASCII)


def moment_arg(name: str) -> datetime:
    """A query parameter that must be an ISO 8601 date or date and time (UTC when
    it names no offset; a "+" offset sent unencoded, as a space, is taken as +)."""
    text = request.args[name]
    spaced = SPACED_OFFSET.fullmatch(text)
    if spaced:
        text = f"{spaced.group(1)}+{spaced.group(2)}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(name, "Must be an ISO 8601 date and time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def cursor(kind: str, position: int) -> str:
    """An opaque cursor for the page after position."""
    raw = f"{kind}1.{position}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_arg(kind: str) -> int:
    """The position an ?after= cursor names (0 when there is none)."""
    value = request.args.get(AFTER.name)
    if value is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    prefix, _, position = raw.partition(".")
    if (
        prefix != f"{kind}1"
        or not DIGITS.fullmatch(position)
        or int(position) > MAX_POSITION
    ):
        raise invalid(AFTER.name, "Not a cursor this list gave out.")
    return int(position)
