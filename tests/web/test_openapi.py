"""The OpenAPI document: valid, complete, and true to the running app."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import APIOperation, GenerationMode, checks

from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.domainmodel import check_text
from pocket.errors import InvalidText
from pocket.web import create_app
from tests.docs import page, section

ADMIN_TOKEN = "operator-secret-0123456789"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = replace(
        Settings.from_url(f"sqlite:///{tmp_path / 'pocket.db'}"),
        admin_token=ADMIN_TOKEN,
    )
    service = bootstrap(settings)
    yield create_app(service)
    service.close()


def test_the_document_is_valid_openapi_3_1(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_route_is_documented_and_every_documented_path_exists(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert documented == served


def test_the_endpoints_table_of_docs_api_lists_every_route_and_no_other(
    app: Flask,
) -> None:
    rows = re.findall(
        r"^\| `([A-Z]+) (/[^`?]*)",
        section(page("api.md"), "Endpoints"),
        re.MULTILINE,
    )
    # Path parameters by position: the table says <id> where the rule says
    # <int:user_id>.
    listed = {(method, re.sub(r"<[^>]*>", "<>", path)) for method, path in rows}
    served = {
        (method, re.sub(r"<[^>]*>", "<>", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert len(rows) == len(listed)  # no route listed twice
    assert listed == served


def documented_bodies(document: dict[str, Any]) -> Iterator[tuple[str, str, Any]]:
    """(method, path, schema) of every operation that takes a body."""
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            if "requestBody" in spec:
                content = spec["requestBody"]["content"]["application/json"]
                name = content["schema"]["$ref"].rsplit("/", 1)[1]
                yield method, path, schemas[name]


def test_every_body_is_parsed_as_its_schema_says(app: Flask) -> None:
    """The parser and the document agree: an empty object is refused naming
    exactly the required fields, and a field the schema lacks is refused."""
    client = app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    document = client.get("/openapi.json").get_json()
    bodies = list(documented_bodies(document))
    assert len(bodies) == 12
    for method, path, schema in bodies:
        # Nobody, and no hold: nothing is changed.
        url = (
            path.replace("{user_id}", "999")
            .replace("{hold_id}", str(uuid4()))
            .replace("{webhook_id}", str(uuid4()))
        )
        empty = client.open(url, method=method, json={}, headers=admin)
        required = set(schema["required"])
        choices = [
            [
                branch["required"][0]
                for branch in choice.get("oneOf", choice.get("anyOf", []))
            ]
            for choice in schema.get("allOf", [schema])
        ]
        chosen = {name for names in choices for name in names}
        if required or chosen:
            assert empty.status_code == 422, path
            fields = empty.get_json()["error"]["fields"]
            assert {n for n in fields if n not in chosen} == required
            assert all(fields[n] == "This field is required." for n in required)
            # Each choice's fields are named, saying which to give.
            for names in choices:
                assert all(" or ".join(names) in fields[n] for n in names), path
        else:
            assert empty.status_code == 404, path  # Parsed; then no such user.
        assert schema["additionalProperties"] is False
        unknown = client.open(url, method=method, json={"x": 1}, headers=admin)
        assert unknown.status_code == 422, path
        assert "x" in unknown.get_json()["error"]["fields"]


def test_the_text_pattern_refuses_what_the_parser_refuses_and_nothing_else(
    app: Flask,
) -> None:
    """Every character of the Basic Multilingual Plane but the surrogates, inside
    a name: the document's pattern and check_text agree on each."""
    document = app.test_client().get("/openapi.json").get_json()
    schema = document["components"]["schemas"]["NewUser"]["properties"]["name"]
    pattern = re.compile(schema["pattern"])
    disagree = []
    for point in (*range(0xD800), *range(0xE000, 0x10000)):
        text = f"a{chr(point)}b"
        try:
            check_text("name", text)
        except InvalidText:
            parsed = False
        else:
            parsed = True
        if parsed != bool(pattern.fullmatch(text)):
            disagree.append(f"U+{point:04X}")
    assert disagree == []
    assert not pattern.fullmatch(" \u3000 ")  # Blank: refused by both.
    assert "invisible formatting character" in schema["description"]


def fund_two_users(app: Flask) -> None:
    """Users 1 and 2, with money, for generated requests to name."""
    client = app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for name in ("Ann", "Bob"):
        made = client.post("/users", json={"name": name}, headers=admin)
        user_id = made.get_json()["user"]["id"]
        client.post(
            f"/users/{user_id}/add_money",
            json={"amount": "1000", "source": "seed"},
            headers=admin,
        )


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def test_generated_requests_get_no_5xx_and_answers_true_to_the_document(
    app: Flask,
) -> None:
    """Property-based: valid and invalid requests from the document, bounded."""
    fund_two_users(app)
    api = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    # Every operation but GET /openapi.json itself, which schemathesis leaves out.
    document = app.test_client().get("/openapi.json").get_json()
    documented = sum(len(methods) for methods in document["paths"].values())
    assert len(operations) == documented - 1 >= 12
    for operation, mode in itertools.product(operations, GenerationMode):
        has_input = list(operation.iter_parameters()) or (
            operation.get_request_payload_content_types()
        )
        if mode is GenerationMode.NEGATIVE and not has_input:
            continue  # Nothing to get wrong (GET /health).
        run_generated_cases(operation, mode)


def run_generated_cases(
    operation: APIOperation[Any, Any, Any, Any], mode: GenerationMode
) -> None:
    """Sends an operation's generated requests and checks every answer."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: schemathesis.Case[Any]) -> None:
        if mode is GenerationMode.POSITIVE and "user_id" in (
            case.path_parameters or {}
        ):
            # Aim most requests at the real users (1 and 2), some at nobody.
            user_id = case.path_parameters["user_id"]
            if isinstance(user_id, int):
                case.path_parameters["user_id"] = user_id % 3 + 1
        case.call_and_validate(
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, checks=CHECKS
        )

    check()


TAGS = ["users", "money", "holds", "history", "admin", "webhooks", "pages", "meta"]


def test_every_operation_is_under_one_declared_tag_in_a_reading_order(
    app: Flask,
) -> None:
    """Swagger UI groups by tag ("default" when there is none), in the order of
    the document's tags: the users first, then money and history, the admin's,
    the pages, and health and the like last."""
    document = app.test_client().get("/openapi.json").get_json()
    declared = [tag["name"] for tag in document["tags"]]
    assert declared == TAGS
    assert all(tag.get("description") for tag in document["tags"])
    used = set()
    for path, operations in document["paths"].items():
        for method, spec in operations.items():
            assert len(spec.get("tags", [])) == 1, (method, path)
            used.add(spec["tags"][0])
    assert used == set(TAGS)
    # Read as JSON too, the document starts with the users, not with /health.
    assert next(iter(document["paths"])) == "/users"


def test_money_and_history_are_tagged_as_such(app: Flask) -> None:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    assert paths["/users/{user_id}/add_money"]["post"]["tags"] == ["money"]
    assert paths["/users/{user_id}/transactions"]["get"]["tags"] == ["history"]
    assert paths["/admin/status"]["get"]["tags"] == ["admin"]
    assert paths["/health"]["get"]["tags"] == ["meta"]
    assert paths["/users"]["get"]["tags"] == ["admin"]  # the admin's list
    assert paths["/users"]["post"]["tags"] == ["users"]


def test_the_history_s_order_is_documented_with_the_default_unchanged(
    app: Flask,
) -> None:
    paths = app.test_client().get("/openapi.json").get_json()["paths"]
    parameters = paths["/users/{user_id}/transactions"]["get"]["parameters"]
    (order,) = [p for p in parameters if p["name"] == "order"]
    assert order["schema"] == {"enum": ["oldest", "newest"], "default": "oldest"}


def test_holds_and_limits_are_documented_with_their_parameters(app: Flask) -> None:
    document = app.test_client().get("/openapi.json").get_json()
    paths = document["paths"]
    hold = "/users/{user_id}/holds/{hold_id}"
    assert set(paths["/users/{user_id}/holds"]) == {"get", "post"}
    assert set(paths[hold]) == {"get"}
    for path in ("/users/{user_id}/holds", hold, f"{hold}/capture", f"{hold}/void"):
        for spec in paths[path].values():
            assert spec["tags"] == ["holds"], path
    capture = paths[f"{hold}/capture"]["post"]
    parameters = {p["name"]: p for p in capture["parameters"]}
    assert parameters["hold_id"]["in"] == "path"
    assert parameters["hold_id"]["schema"] == {"type": "string", "format": "uuid"}
    assert "Idempotency-Key" in parameters
    assert capture["requestBody"]["required"] is False
    placing = paths["/users/{user_id}/holds"]["post"]
    assert "201" in placing["responses"]
    assert "Idempotency-Key" in {p["name"] for p in placing["parameters"]}
    limits = paths["/admin/users/{user_id}/limits"]["put"]
    assert limits["tags"] == ["admin"]
    assert "Idempotency-Key" not in {p["name"] for p in limits["parameters"]}
    schemas = document["components"]["schemas"]
    assert schemas["NewHold"]["allOf"] == [
        {"oneOf": [{"required": ["destination"]}, {"required": ["to_user_id"]}]},
        {"oneOf": [{"required": ["expires_in"]}, {"required": ["expires_at"]}]},
    ]
    assert schemas["Limits"]["anyOf"] == [
        {"required": ["credit_limit"]},
        {"required": ["daily_limit"]},
        {"required": ["alert_below"]},
    ]
    wallet = schemas["Wallet"]["properties"]
    assert {"held", "available", "credit_limit", "daily_limit"} <= set(wallet)
    assert "hold" in schemas["Error"]["properties"]["error"]["properties"]
    codes = {
        code
        for response in document["components"]["responses"].values()
        for code in response["content"]["application/json"]["schema"]["allOf"][1][
            "properties"
        ]["error"]["properties"]["code"]["enum"]
    }
    assert {
        "hold_not_found",
        "hold_ended",
        "capture_exceeds_hold",
        "daily_limit_exceeded",
        "holds_open",
        "invalid_expiry",
        "invalid_limit",
    } <= codes
