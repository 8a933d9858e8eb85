"""The OpenAPI document: valid, complete, and true to the running app."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis import APIOperation, GenerationMode, checks

from pocket.config import Settings
from pocket.service import PocketService
from pocket.web import create_app

ADMIN_TOKEN = "operator-secret-0123456789"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = replace(
        Settings.from_url(f"sqlite:///{tmp_path / 'pocket.db'}"),
        admin_token=ADMIN_TOKEN,
    )
    service = PocketService(settings)
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
        (re.sub(r"<(?:int:)?(\w+)>", r"{\1}", rule.rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert documented == served


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
    assert len(operations) == 11
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
