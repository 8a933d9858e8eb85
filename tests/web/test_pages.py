"""The wallet page and the operator console as files: served to anyone under a
Content-Security-Policy, with no inline script or style, and nothing from
anywhere but this server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

import pocket.web
from pocket.bootstrap import bootstrap
from pocket.config import Settings
from pocket.web import create_app

STATIC = Path(pocket.web.__file__).with_name("static")
PAGES = {"/": "wallet.html", "/console": "console.html"}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched
JSON = "application/json"


def named_by(file: Path) -> list[str]:
    """The files of static/ that a page or script names (links, scripts, imports)."""
    text = file.read_text()
    named = re.findall(r'(?:href|src)="/static/([^"]+)"', text)
    return named + re.findall(r'from "\./([^"]+)"', text)


def pages_files() -> set[Path]:
    """The pages and every file they need, however indirectly."""
    found: set[Path] = set()
    todo = [STATIC / name for name in PAGES.values()]
    while todo:
        file = todo.pop()
        if file not in found:
            found.add(file)
            todo += [STATIC / name for name in named_by(file)]
    return found


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    service = bootstrap(Settings.from_url(f"sqlite:///{tmp_path / 'pocket.db'}"))
    yield create_app(service).test_client()
    service.close()


@pytest.mark.parametrize("path", PAGES)
def test_a_page_is_html_for_anyone_under_the_policy(
    client: FlaskClient, path: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == 200
    assert answer.mimetype == "text/html"
    assert answer.get_data(as_text=True) == (STATIC / PAGES[path]).read_text()
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_pages_files_are_served_with_their_types_and_never_sniffed(
    client: FlaskClient,
) -> None:
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for file in pages_files():
        if file.suffix == ".html":
            continue
        answer = client.get(f"/static/{file.name}")
        assert answer.status_code == 200, file.name
        assert answer.mimetype == types[file.suffix], file.name
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


# Answers of every kind the app makes: JSON, text, pages, and errors from a
# view, from the rules, and from Flask itself. (The server's own answers, made
# before the app sees a request, are tested against the real server in
# tests/e2e/test_slow_clients.py.)
ANSWERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "json": ("GET", "/health", {}),
    "created": ("POST", "/users", {"json": {"name": "Ann"}}),
    "metrics": ("GET", "/metrics", {}),
    "document": ("GET", "/openapi.json", {}),
    "docs": ("GET", "/docs", {}),
    "head": ("HEAD", "/health", {}),
    "options": ("OPTIONS", "/users", {}),
    "malformed json": ("POST", "/users", {"data": "{", "content_type": JSON}),
    "unauthorized": ("GET", "/users/1", {}),
    "not found": ("GET", "/nothing-here", {}),
    "method not allowed": ("DELETE", "/health", {}),
    "too large": ("POST", "/users", {"data": "x" * 2**21, "content_type": JSON}),
    "not json": ("POST", "/users", {"data": "x", "content_type": "text/plain"}),
    "invalid": ("POST", "/users", {"json": {"name": ""}}),
}


@pytest.mark.parametrize("kind", ANSWERS)
def test_the_api_is_never_sniffed_either(client: FlaskClient, kind: str) -> None:
    method, path, options = ANSWERS[kind]
    answer = client.open(path, method=method, **options)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_no_page_has_inline_script_or_style() -> None:
    for page in PAGES.values():
        html = (STATIC / page).read_text()
        scripts = re.findall(r"<script\b[^>]*>", html)
        assert scripts, page
        assert all(re.search(r'\bsrc="/static/', tag) for tag in scripts), page
        assert "<style" not in html, page
        assert not re.search(r"\sstyle=", html), page
        assert not re.search(r"\son[a-z]+=", html), page


def test_nothing_is_fetched_from_anywhere_but_this_server() -> None:
    for file in pages_files():
        text = file.read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), (
            file.name
        )


def test_every_file_a_page_or_script_names_is_there() -> None:
    files = pages_files()
    assert all(file.is_file() for file in files), files
    assert {file.suffix for file in files} == {".html", ".js", ".css", ".svg"}


@pytest.mark.parametrize("path", [*PAGES, "/docs"])
def test_every_page_names_an_icon_that_is_served(
    client: FlaskClient, path: str
) -> None:
    """Without one, a browser asks for /favicon.ico, which is not there."""
    html = client.get(path).get_data(as_text=True)
    icon = re.search(r'<link rel="icon" href="(/static/[^"]+)" type="([^"]+)">', html)
    assert icon is not None, path
    answer = client.get(icon.group(1))
    assert answer.status_code == 200
    assert answer.mimetype == icon.group(2) == "image/svg+xml"
