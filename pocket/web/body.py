"""Request bodies, declared once (a `Body` of named `Field`s) and read strictly
from that declaration: JSON objects only, each key once, numbers kept as written
(so an amount's form can be checked), unknown fields refused. The OpenAPI
document's request schemas are built from the same declarations."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from flask import request

from pocket.errors import InvalidAmount, InvalidText
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


Schema = dict[str, Any]
UNKNOWN_FIELD = "Unknown field: the server decides it, or it does not exist."


@dataclass(frozen=True)
class Field:
    """One field of a body: its checker (given the field's name and its value as
    read, it returns the value parsed or raises InvalidAmount or InvalidText), its
    JSON schema, and whether a body must hold it."""

    check: Callable[[str, Any], Any]
    schema: Schema
    required: bool = True

    def optional(self) -> Field:
        """The same field, which a body may leave out."""
        return replace(self, required=False)


class Body:
    """A request body: its named fields, and nothing else."""

    def __init__(self, name: str, /, **fields: Field) -> None:
        self.name = name  # Its schema's name in the OpenAPI document
        self.fields = fields

    def read(self) -> dict[str, Any]:
        """The request's JSON object, every field checked, or ValidationFailed."""
        body = read_json_object()
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for name in body.keys() - self.fields.keys():
            problems[name] = UNKNOWN_FIELD
        for name, field in self.fields.items():
            if name not in body:
                if field.required:
                    problems[name] = "This field is required."
                continue
            try:
                values[name] = field.check(name, body[name])
            except (InvalidAmount, InvalidText) as error:
                problems[name] = str(error)
        if problems:
            raise ValidationFailed(dict(sorted(problems.items())))
        return values

    def schema(self) -> Schema:
        """Its JSON schema: a closed object, every field but the optional required."""
        return {
            "type": "object",
            "properties": {name: field.schema for name, field in self.fields.items()},
            "required": [name for name, field in self.fields.items() if field.required],
            "additionalProperties": False,
        }


NO_FIELDS = Body("Empty")


def read_optional_body() -> None:
    """For commands without fields: no body at all, or an empty JSON object."""
    if request.content_length or request.headers.get("Transfer-Encoding"):
        NO_FIELDS.read()


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
