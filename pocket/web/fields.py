"""The checkers of body fields: each takes the value as the strict reader left it
(numbers as JSONNumber text) and returns it parsed, or raises the domain's error."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from pocket.domainmodel import InvalidAmount, InvalidText, check_amount, check_text
from pocket.users import MAX_USER_ID
from pocket.web.body import Field, JSONNumber

AMOUNT_SHAPE = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)
DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)


def amount_field(value: Any) -> Decimal:
    """An amount: a JSON number or decimal string, digits and up to 2 places."""
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


def user_id_field(value: Any) -> int:
    """A user id: a positive JSON integer."""
    text = value.text if isinstance(value, JSONNumber) else None
    if text is None or not DIGITS.fullmatch(text) or not 0 < int(text) <= MAX_USER_ID:
        raise InvalidText("to_user_id", "must be a user id (a positive integer).")
    return int(text)


def text_field(name: str) -> Field:
    """A checker for a non-empty text field."""
    return lambda value: check_text(name, value)
