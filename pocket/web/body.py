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

from pocket.errors import (
    InvalidAmount,
    InvalidExpiry,
    InvalidLimit,
    InvalidText,
    InvalidWebhook,
    PocketError,
)
from pocket.web.errors import (
    GIVEN_TWICE,
    VALIDATION_FAILED,
    MalformedJSON,
    NotAnObject,
    UnsupportedMediaType,
    ValidationFailed,
    field_code,
    invalid,
)


@dataclass(frozen=True)
class JSONNumber:
    """A number as written in the request, kept as text so its form can be checked."""

    text: str


Schema = dict[str, Any]
UNKNOWN_FIELD = "Unknown field: the server decides it, or it does not exist."
REQUIRED = "This field is required."
# What a field's checker raises for a value it refuses.
FIELD_ERRORS = (InvalidAmount, InvalidText, InvalidExpiry, InvalidLimit, InvalidWebhook)


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


@dataclass(frozen=True)
class Choice:
    """Optional fields of a body of which one must be given: exactly one, or
    (not exclusive) at least one. Refused as its kind of error is (its 422 code)."""

    names: tuple[str, ...]
    exclusive: bool = True
    kind: type[PocketError] = InvalidText

    def problems(self, body: dict[str, Any]) -> dict[str, str]:
        """What is wrong with the body's choice, by field (nothing if it is right)."""
        given = [name for name in self.names if name in body]
        choices = " or ".join(self.names)
        if not given:
            how = "one of them" if self.exclusive else "one or more of them"
            return dict.fromkeys(self.names, f"Give {choices} ({how}).")
        if self.exclusive and len(given) > 1:
            return dict.fromkeys(given, f"Give {choices}, only one of them.")
        return {}

    def schema(self) -> Schema:
        """The choice as JSON Schema says it, of the object's properties."""
        each = [{"required": [name]} for name in self.names]
        return {"oneOf": each} if self.exclusive else {"anyOf": each}


class Body:
    """A request body: its named fields, and nothing else."""

    def __init__(
        self, name: str, /, *, choices: tuple[Choice, ...] = (), **fields: Field
    ) -> None:
        self.name = name  # Its schema's name in the OpenAPI document
        self.fields = fields
        self.choices = choices

    def read(self) -> dict[str, Any]:
        """The request's JSON object, every field checked, or ValidationFailed
        (its code a more specific one when every problem is of that kind)."""
        body = read_json_object()
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        codes: set[str] = set()
        for name in body.keys() - self.fields.keys():
            problems[name] = UNKNOWN_FIELD
            codes.add(VALIDATION_FAILED)
        for name, field in self.fields.items():
            if name not in body:
                if field.required:
                    problems[name] = REQUIRED
                    codes.add(VALIDATION_FAILED)
                continue
            try:
                values[name] = field.check(name, body[name])
            except FIELD_ERRORS as error:
                problems[name] = str(error)
                codes.add(field_code(type(error)))
        for choice in self.choices:
            wrong = {
                n: p for n, p in choice.problems(body).items() if n not in problems
            }
            if wrong:
                problems.update(wrong)
                codes.add(field_code(choice.kind))
        if problems:
            code = codes.pop() if len(codes) == 1 else None
            raise ValidationFailed(dict(sorted(problems.items())), code)
        return values

    def read_optional(self) -> dict[str, Any]:
        """As read, for a body that may be left out (nothing: no fields)."""
        return self.read() if has_body() else {}

    def schema(self) -> Schema:
        """Its JSON schema: a closed object, every field but the optional required,
        and one of each choice's fields."""
        schema: Schema = {
            "type": "object",
            "properties": {name: field.schema for name, field in self.fields.items()},
            "required": [name for name, field in self.fields.items() if field.required],
            "additionalProperties": False,
        }
        if len(self.choices) == 1:
            schema.update(self.choices[0].schema())
        elif self.choices:
            schema["allOf"] = [choice.schema() for choice in self.choices]
        return schema


NO_FIELDS = Body("Empty")


def read_optional_body() -> None:
    """For commands without fields: no body at all, or an empty JSON object."""
    NO_FIELDS.read_optional()


def has_body() -> bool:
    """Whether the request sends a body at all."""
    return bool(request.content_length or request.headers.get("Transfer-Encoding"))


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
