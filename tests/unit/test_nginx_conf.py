"""deploy/nginx.conf against the API's catalogue of errors: what nginx answers
itself is the API's error shape, with the API's codes and limits."""

from __future__ import annotations

import json
import re

from pocket.web.errors import MAX_BODY_BYTES, TOO_LARGE_MESSAGE, catalogue, error_body
from tools.front import CONFIG

TEXT = CONFIG.read_text()
# Codes nginx answers that the app never does (Pocket's server answers neither).
NGINX_ONLY = {"request_timeout", "length_required", "uri_too_long"}
NGINX_ONLY |= {"http_version_not_supported"}


def error_pages() -> dict[str, dict[str, dict[str, str]]]:
    """Each error page's body, by its location, as JSON."""
    pages = re.findall(
        r"location = /_pocket_error/(\d+) \{[^}]*?return 200 '(.*?)';", TEXT, re.S
    )
    assert pages, "no error pages found"
    bodies = {}
    for status, body in pages:
        assert body.endswith("\\n"), (status, body)
        bodies[status] = json.loads(body.removesuffix("\\n"))
    return bodies


def test_every_error_page_is_the_apis_error_shape_with_a_known_code() -> None:
    known = {answer.code for answer in catalogue()} | NGINX_ONLY
    for status, body in error_pages().items():
        error = body["error"]
        assert body == error_body(error["code"], error["message"]), status
        assert error["code"] in known, status


def test_the_body_limit_is_the_apis() -> None:
    assert MAX_BODY_BYTES == 1024 * 1024
    assert "client_max_body_size 1m;" in TEXT
    assert error_pages()["413"]["error"]["message"] == TOO_LARGE_MESSAGE


def test_every_status_nginx_may_answer_has_a_page() -> None:
    pages = set(error_pages())
    mapped = set(re.findall(r"error_page ((?:\d+ )+)", TEXT))
    statuses = {status for group in mapped for status in group.split()}
    targets = set(re.findall(r"error_page [\d ]+(?:=\d+ )?/_pocket_error/(\d+);", TEXT))
    assert targets == pages
    assert {"400", "413", "429", "494", "502", "504"} <= statuses
