"""The fields request bodies are made of: each checker beside the JSON schema that
documents it. A checker takes the value as the strict reader left it (numbers as
JSONNumber text) and returns it parsed, or raises the domain's error."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from pocket.domainmodel import (
    BLANK_LETTERS,
    MAX_AMOUNT,
    MAX_HOLD,
    MAX_TEXT_LENGTH,
    REFUSED_CATEGORIES,
    check_amount,
    check_limit,
    check_text,
    refused_character,
)
from pocket.errors import InvalidAmount, InvalidExpiry, InvalidLimit, InvalidText
from pocket.users import MAX_USER_ID
from pocket.web.body import Field, JSONNumber, Schema

AMOUNT_SHAPE = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
MAX_HOLD_SECONDS = int(MAX_HOLD.total_seconds())
# RFC 3339's date and time, the profile of ISO 8601 that names its offset.
MOMENT = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
MOMENT_SHAPE = re.compile(MOMENT, re.ASCII)


def amount_value(name: str, value: Any) -> Decimal:
    """An amount: a JSON number or decimal string, digits and up to 2 places.

    Checked against the text as written: Decimal() alone would take " 5", "1e3"
    and non-ASCII digits."""
    text = money_text(value, "Amount", "greater than zero", InvalidAmount)
    return check_amount(Decimal(text))


def limit_value(name: str, value: Any) -> Decimal:
    """A limit: money as an amount is written, but zero is allowed."""

    def refused(problem: str) -> InvalidLimit:
        return InvalidLimit(name, problem)

    text = money_text(value, "A limit", "zero or more", refused)
    return check_limit(name, Decimal(text))


def daily_limit_value(name: str, value: Any) -> Decimal | None:
    """A daily limit, or null: no daily limit."""
    return None if value is None else limit_value(name, value)


def money_text(
    value: Any, label: str, least: str, refused: Callable[[str], Exception]
) -> str:
    """Money as written in the request (a JSON number or a string): plain
    digits with up to 2 places, not below zero; or raises what refused makes."""
    if isinstance(value, JSONNumber):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        raise refused(f"{label} must be a number, or a string holding one, like 12.34.")
    if text.lstrip("+-").lower() in ("nan", "infinity", "inf", "snan"):
        raise refused(f"{label} must be a finite number.")
    if not AMOUNT_SHAPE.fullmatch(text):
        msg = (
            f"{label} must be plain digits with an optional decimal point, like 12.34."
        )
        raise refused(msg)
    if text.startswith("-"):
        raise refused(f"{label} must be {least}.")
    _, _, places = text.partition(".")
    if len(places) > 2:
        raise refused(f"{label} must have at most 2 decimal places.")
    return text


def seconds_value(name: str, value: Any) -> int:
    """A number of seconds: a positive JSON integer (its range is the domain's
    to check, as it checks an expiry's time)."""
    text = value.text if isinstance(value, JSONNumber) else None
    if text is None or not DIGITS.fullmatch(text):
        msg = f"{name} must be a whole number of seconds, 1 to {MAX_HOLD_SECONDS}."
        raise InvalidExpiry(name, msg)
    return int(text)


def moment_value(name: str, value: Any) -> datetime:
    """A time with its UTC offset, as RFC 3339 writes it: 2026-12-03T18:00:00Z,
    2026-12-03T19:00:00+01:00 (whether it is in the future is the domain's to
    check)."""
    if not isinstance(value, str) or not MOMENT_SHAPE.fullmatch(value):
        msg = (
            f"{name} must be a date and time with its UTC offset, "
            "like 2026-12-03T18:00:00Z or 2026-12-03T19:00:00+01:00."
        )
        raise InvalidExpiry(name, msg)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidExpiry(
            name, f"{name} is not a date and time that exists."
        ) from None


def user_id_value(name: str, value: Any) -> int:
    """A user id: a positive JSON integer."""
    text = value.text if isinstance(value, JSONNumber) else None
    if text is None or not DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_USER_ID:
        raise InvalidText(name, "must be a user id (a positive integer).")
    return int(text)


AMOUNT = Field(
    amount_value,
    {
        "description": (
            f"Greater than zero, at most {MAX_AMOUNT}, at most 2 decimal places; "
            "plain digits with an optional decimal point (no sign, exponent or "
            "spaces)."
        ),
        "oneOf": [
            {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$", "maxLength": 20},
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": int(MAX_AMOUNT),
                "multipleOf": 0.01,
            },
        ],
        "examples": [20, "20.50"],
    },
)


def text_schema() -> Schema:
    """TEXT's JSON schema, from the rule check_text applies (refused_character).

    The pattern names the refused characters of the Basic Multilingual Plane as
    \\uXXXX ranges, which ECMA-262 and Python read alike. It cannot name those
    beyond it portably (a pattern without the u flag sees surrogate pairs), nor
    lone surrogates: the description says they are refused all the same.
    """
    refused = "".join(
        f"\\u{first:04x}" if first == last else f"\\u{first:04x}-\\u{last:04x}"
        for first, last in refused_bmp_ranges()
    )
    kinds = dict.fromkeys([*REFUSED_CATEGORIES.values(), *BLANK_LETTERS.values()])
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TEXT_LENGTH,
        "pattern": f"^[^{refused}]*[^{refused}\\s][^{refused}]*$",
        "description": (
            "Not blank, and without any of these: " + "; ".join(kinds) + ". The "
            "pattern names them where it can; they are refused everywhere."
        ),
    }


def refused_bmp_ranges() -> list[tuple[int, int]]:
    """The code points below U+10000 (but the surrogates) that a text may not
    hold, as (first, last) ranges."""
    ranges: list[tuple[int, int]] = []
    for point in (*range(0xD800), *range(0xE000, 0x10000)):
        if refused_character(chr(point)) is None:
            continue
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    return ranges


TEXT = Field(check_text, text_schema())
USER_ID = Field(
    user_id_value, {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID}
)

LIMIT_SCHEMA: Schema = {
    "description": (
        f"Zero or more, at most {MAX_AMOUNT}, at most 2 decimal places; written as "
        "an amount is."
    ),
    "oneOf": [
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]{1,2})?$", "maxLength": 20},
        {
            "type": "number",
            "minimum": 0,
            "maximum": int(MAX_AMOUNT),
            "multipleOf": 0.01,
        },
    ],
    "examples": [100, "250.00"],
}
CREDIT_LIMIT = Field(limit_value, LIMIT_SCHEMA)
DAILY_LIMIT = Field(
    daily_limit_value,
    {
        **LIMIT_SCHEMA,
        "description": f"{LIMIT_SCHEMA['description']} null: no daily limit.",
        "oneOf": [*LIMIT_SCHEMA["oneOf"], {"type": "null"}],
    },
)
ALERT_BELOW = Field(
    daily_limit_value,
    {
        **LIMIT_SCHEMA,
        "description": f"{LIMIT_SCHEMA['description']} null: no balance alert.",
        "oneOf": [*LIMIT_SCHEMA["oneOf"], {"type": "null"}],
    },
)
EXPIRES_IN = Field(
    seconds_value,
    {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_HOLD_SECONDS,
        "description": "Seconds from now until the hold expires.",
    },
)
EXPIRES_AT = Field(
    moment_value,
    {
        "type": "string",
        "format": "date-time",
        "pattern": MOMENT,
        "description": (
            "When the hold expires: an RFC 3339 date and time with its offset, "
            f"at least a second and at most {MAX_HOLD.days} days from now."
        ),
    },
)
