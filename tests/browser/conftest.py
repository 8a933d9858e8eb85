"""Fixtures for the browser tests: Debian's Chromium driven through Playwright
(never a browser Playwright downloads), real `pocket serve` processes, and the
folder the screenshots go to (POCKET_SCREENSHOTS, which `make test` sets)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    sync_playwright,
)

from tests.e2e.processes import Api, PocketProcess, serve

CHROMIUM = Path("/usr/bin/chromium")
# The machine's network is closed: Chromium's own background traffic is refused.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REQUIRE_BROWSER = os.environ.get("POCKET_REQUIRE_BROWSER") == "1"
ADMIN_TOKEN = "operator-secret-0123456789"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 360, "height": 740}
# What a page may log: the API's refusals, which the page shows the person.
REFUSALS = re.compile(
    r"Failed to load resource: the server responded with a status of 4\d\d"
)


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not CHROMIUM.exists():
        return f"no browser at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, one per test module (closed before the next module)."""
    problem = browser_problem()
    if problem is not None:
        if REQUIRE_BROWSER:
            pytest.fail(f"POCKET_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots() -> Path:
    """The folder screenshots are saved in."""
    folder = Path(os.environ.get("POCKET_SCREENSHOTS", "build/screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Pages:
    """Opens tabs on a server, each in a browser context of its own (its own
    sessionStorage), and fails the test on any script error or policy
    violation a page reports."""

    def __init__(self, browser: Browser, base_url: str, screenshots: Path) -> None:
        self.browser = browser
        self.base_url = base_url
        self.folder = screenshots
        self.problems: list[str] = []
        self.opened: list[Page] = []
        self.expected: list[re.Pattern[str]] = [REFUSALS]

    def open(self, path: str = "/", viewport: ViewportSize | None = None) -> Page:
        context = self.browser.new_context(
            viewport=viewport or DESKTOP,
            base_url=self.base_url,
        )
        page = context.new_page()
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        page.goto(path)
        self.opened.append(page)
        return page

    def shot(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def _console(self, message: ConsoleMessage) -> None:
        expected = any(pattern.search(message.text) for pattern in self.expected)
        if message.type == "error" and not expected:
            self.problems.append(message.text)

    def close(self) -> None:
        for page in self.opened:
            page.context.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[PocketProcess, Api]]:
    """`pocket serve` on SQLite, with an admin token."""
    env = {
        "POCKET_DATABASE_URL": f"sqlite:///{tmp_path / 'pocket.db'}",
        "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    process, api = serve(tmp_path, env)
    yield process, api
    process.close()


@contextmanager
def open_pages(browser: Browser, base_url: str, screenshots: Path) -> Iterator[Pages]:
    """Tabs on a server; afterwards, no page may have reported a script error."""
    tabs = Pages(browser, base_url, screenshots)
    try:
        yield tabs
    finally:
        tabs.close()
    assert tabs.problems == []


@pytest.fixture
def pages(
    browser: Browser, server: tuple[PocketProcess, Api], screenshots: Path
) -> Iterator[Pages]:
    """Tabs on the SQLite server."""
    with open_pages(browser, server[1].base_url, screenshots) as tabs:
        yield tabs
