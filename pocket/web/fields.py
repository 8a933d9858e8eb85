"""The fields request bodies are made of: each checker beside the JSON schema that
documents it. A checker takes the value as the strict reader left it (numbers as
JSONNumber text) and returns it parsed, or raises the domain's error."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pocket.domainmodel import (
    MAX_AMOUNT,
    MAX_TEXT_LENGTH,
    InvalidAmount,
    InvalidText,
    check_amount,
    check_text,
)
from pocket.users import MAX_USER_ID
from pocket.web.body import Field, JSONNumber

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
TEXT = Field(
    check_text,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TEXT_LENGTH,
        "pattern": r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
    },
)
USER_ID = Field(
    user_id_value, {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID}
)
