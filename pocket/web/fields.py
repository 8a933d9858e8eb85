"""The fields request bodies are made of: each checker beside the JSON schema that
documents it. A checker takes the value as the strict reader left it (numbers as
JSONNumber text) and returns it parsed, or raises the domain's error."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pocket.domainmodel import (
    BLANK_LETTERS,
    MAX_AMOUNT,
    MAX_TEXT_LENGTH,
    REFUSED_CATEGORIES,
    check_amount,
    check_text,
    refused_character,
)
from pocket.errors import InvalidAmount, InvalidText
from pocket.users import MAX_USER_ID
from pocket.web.body import Field, JSONNumber, Schema

AMOUNT_SHAPE = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


def amount_value(name: str, value: Any) -> Decimal:
    """An amount: a JSON number or decimal string, digits and up to 2 places.

    Checked against the text as written: Decimal() alone would take " 5", "1e3"
    and non-ASCII digits."""
    if isinstance(value, JSONNumber):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        msg = "Amount must be a number, or a string holding one, like 12.34."
        raise InvalidAmount(msg)
    if text.lstrip("+-").lower() in ("nan", "infinity", "inf", "snan"):
        raise InvalidAmount("Amount must be a finite number.")
    if not AMOUNT_SHAPE.fullmatch(text):
        msg = "Amount must be plain digits with an optional decimal point, like 12.34."
        raise InvalidAmount(msg)
    if text.startswith("-"):
        raise InvalidAmount("Amount must be greater than zero.")
    _, _, places = text.partition(".")
    if len(places) > 2:
        raise InvalidAmount("Amount must have at most 2 decimal places.")
    return check_amount(Decimal(text))


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
