"""The catalogue of errors: every kind the API answers with, and the errors table
in docs/api.md true to it."""

from __future__ import annotations

import re

from pocket.web.errors import catalogue
from tests.docs import page, section


def documented_errors() -> set[tuple[int, str]]:
    """(status, code) for every code in the errors table of docs/api.md."""
    errors = section(page("api.md"), "Errors")
    rows = re.findall(r"^\| (\d{3}) \| ([^|]+) \|", errors, re.MULTILINE)
    assert rows, "docs/api.md has no errors table"
    return {
        (int(status), code)
        for status, codes in rows
        for code in re.findall(r"`([^`]+)`", codes)
    }


def test_the_errors_table_lists_every_code_with_its_status_and_no_other() -> None:
    catalogued = {(kind.status.value, kind.code) for kind in catalogue()}
    assert documented_errors() == catalogued


def test_a_code_always_comes_with_the_same_status() -> None:
    statuses: dict[str | None, set[int]] = {}
    for kind in catalogue():
        statuses.setdefault(kind.code, set()).add(kind.status.value)
    assert {code: s for code, s in statuses.items() if len(s) > 1} == {}


def test_every_kind_of_error_has_a_snake_case_code_and_says_when() -> None:
    for kind in catalogue():
        assert kind.code is not None
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", kind.code), kind
        assert kind.status >= 400, kind
        assert kind.when, kind


def test_the_rules_errors_are_in_the_catalogue() -> None:
    codes = {kind.code for kind in catalogue()}
    assert {
        "insufficient_funds",
        "wallet_closed",
        "user_not_found",
        "idempotency_key_reused",
        "not_found",
    } <= codes
