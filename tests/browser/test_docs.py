"""/docs in headless Chromium, against a real `pocket serve`: the operations
grouped by what they are for, users first, and nothing asked for that is missing."""

from __future__ import annotations

import pytest
from playwright.sync_api import Response, expect

from tests.browser.conftest import Pages
from tests.e2e.processes import Api, PocketProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
Server = tuple[PocketProcess, Api]


def test_the_docs_group_the_operations_by_tag_users_first_with_an_icon(
    pages: Pages, server: Server
) -> None:
    answers: list[Response] = []

    def keep(answer: Response) -> None:  # Playwright wants a function of its own
        answers.append(answer)

    page = pages.open("/docs")
    page.on("response", keep)
    page.reload()
    sections = page.locator(".opblock-tag-section h3.opblock-tag")
    expect(sections).to_have_count(8)
    names = [tag.get_attribute("data-tag") for tag in sections.all()]
    assert names == [
        "users",
        "money",
        "holds",
        "history",
        "admin",
        "webhooks",
        "pages",
        "meta",
    ]
    expect(page.locator("h3.opblock-tag[data-tag=default]")).to_have_count(0)
    money = page.locator(".opblock-tag-section").nth(1)
    expect(money.locator(".opblock-summary-path")).to_have_text(
        [
            "/users/{user_id}/add_money",
            "/users/{user_id}/draw_money",
            "/users/{user_id}/transfers",
            "/users/{user_id}/close",
        ]
    )
    holds = page.locator(".opblock-tag-section").nth(2)
    expect(holds.locator(".opblock-summary-path")).to_have_text(
        [
            "/users/{user_id}/holds",
            "/users/{user_id}/holds",
            "/users/{user_id}/holds/{hold_id}",
            "/users/{user_id}/holds/{hold_id}/capture",
            "/users/{user_id}/holds/{hold_id}/void",
        ]
    )
    # The tab's icon is this server's, and everything the page asked for is there.
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert icon == f"{server[1].base_url}/static/favicon.svg"
    fetched = page.request.get(icon)
    assert fetched.status == 200
    assert fetched.headers["content-type"].startswith("image/svg+xml")
    assert [a.url for a in answers if a.status >= 400] == []
    pages.shot(page, "docs-01-tags")
