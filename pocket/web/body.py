"""Request bodies, read strictly: JSON objects only, each key once, numbers kept
as written (so an amount's form can be checked), unknown fields refused."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import request

from pocket.domainmodel import InvalidAmount, InvalidText
from pocket.web.errors import (
    GIVEN_TWICE,
    MalformedJSON,
    NotAnObject,
    UnsupportedMediaType,
    ValidationFailed,
    invalid,
)


@dataclass(frozen=True)
class JSONNumber:
    """A number as written in the request, kept as text so its form can be checked."""

    text: str


Field = Callable[[Any], Any]


def read_body(
    fields: Mapping[str, Field], optional: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The request's JSON object, every field checked, or ValidationFailed."""
    body = read_json_object()
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in body.keys() - fields.keys():
        problems[name] = "Unknown field: the server decides it, or it does not exist."
    for name, check in fields.items():
        if name not in body:
            if name not in optional:
                problems[name] = "This field is required."
            continue
        try:
            values[name] = check(body[name])
        except (InvalidAmount, InvalidText) as error:
            problems[name] = str(error)
    if problems:
        raise ValidationFailed(dict(sorted(problems.items())))
    return values


def read_optional_body() -> None:
    """For commands without fields: no body at all, or an empty JSON object."""
    if request.content_length or request.headers.get("Transfer-Encoding"):
        read_body({})


def read_json_object() -> dict[str, Any]:
    """The body as a JSON object whose numbers are kept as written."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    raw = request.get_data(cache=False)
    try:
        body = json.loads(
            raw,
            parse_float=JSONNumber,
            parse_int=JSONNumber,
            parse_constant=JSONNumber,
            object_pairs_hook=unique_keys,
        )
    except RepeatedKey as repeated:
        raise invalid(repeated.key, GIVEN_TWICE) from None
    except (ValueError, RecursionError):
        raise MalformedJSON() from None
    if not isinstance(body, dict):
        raise NotAnObject()
    return body


class RepeatedKey(Exception):
    """A JSON object names a key twice (which one counts depends on the reader)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing keys given twice."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKey(key)
        obj[key] = value
    return obj
