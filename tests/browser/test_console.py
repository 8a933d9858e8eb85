"""The operator console in headless Chromium, against real `pocket serve` and
`pocket follow` processes: the users, the projection as `pocket status` reports
it, lag going to zero when a follower starts, the last verify, the 503 gate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.conftest import ADMIN_TOKEN, PHONE, Pages, open_pages
from tests.e2e.processes import Api, PocketProcess, follow, run_pocket, serve
from tests.pgserver import PostgresServer, ReplicatedPair

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
Server = tuple[PocketProcess, Api]


def signed_in(pages: Pages) -> Page:
    page = pages.open("/console")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signed-in")).to_be_visible()
    return page


def fact(page: Page, key: str) -> Locator:
    return page.locator(f"[data-projection=wallet_records] [data-fact={key}]")


def add_users(api: Api, *names: str) -> list[tuple[int, Api]]:
    """Users with 1.00 each; their ids and their own clients."""
    made = []
    for name in names:
        status, body = api.post("/users", {"name": name})
        assert status == 201
        user = api.as_user(body["token"])
        user_id = body["user"]["id"]
        status, _ = user.post(
            f"/users/{user_id}/add_money", {"amount": "1", "source": "x"}
        )
        assert status == 200
        made.append((user_id, user))
    return made


def status_json(tmp_path: Path, env: dict[str, str]) -> dict[str, Any]:
    result = run_pocket(tmp_path, env, "status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_the_console_shows_users_the_projection_and_the_last_verify(
    pages: Pages, server: Server, tmp_path: Path
) -> None:
    process, api = server
    env = {"POCKET_DATABASE_URL": f"sqlite:///{tmp_path / 'pocket.db'}"}
    (ann, ann_api), _, (cy, cy_api) = add_users(api, "Ann", "Bob", "Cy")
    cy_api.post(f"/users/{cy}/draw_money", {"amount": "1", "destination": "x"})
    cy_api.post(f"/users/{cy}/close", None)
    ann_api.post(f"/users/{ann}/add_money", {"amount": "19.50", "source": "x"})

    page = pages.open("/console")
    expect(page.locator("#verify")).to_be_hidden()  # nothing without the token
    page.get_by_label("Admin token").fill("not-the-admin-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#admin-token-error")).to_have_text(
        "The bearer token is not valid."
    )
    page = signed_in(pages)
    expect(page.locator("#verify-never")).to_be_visible()
    checked = run_pocket(tmp_path, env, "verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    expect(page.locator("#gate")).to_have_text("open: serving")
    expect(fact(page, "follower")).to_contain_text(
        f"running: pid {process.process.pid}"
    )
    expect(fact(page, "lag")).to_have_attribute("data-lag-events", "0")
    expect(page.locator("#verify [data-fact=checked]")).to_have_text("3")
    expect(page.locator("#verify [data-fact=mismatches]")).to_have_text("0")
    report = status_json(tmp_path, env)["projections"][0]
    expect(fact(page, "position")).to_have_text(
        f"{report['position']:,} of {report['head']:,}"
    )
    expect(page.locator("#verify [data-fact=at_position]")).to_have_text(
        f"{report['position']:,}, wallet_records v{report['live_version']}"
    )
    status, listed = api.as_user(ADMIN_TOKEN).get("/users")
    assert status == 200
    rows = page.locator("#users tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.locator("[data-label=Name]")).to_have_text(["Ann", "Bob", "Cy"])
    expect(rows.locator("[data-label=Balance]")).to_have_text(
        [entry["wallet"]["balance"] for entry in listed["users"]]
    )
    if "closed" in listed["users"][2]["wallet"]:  # where GET /users says it
        expect(rows.nth(2).locator("[data-label=Wallet]")).to_have_text("closed")
    pages.shot(page, "console-01-overview")


def test_the_console_says_so_when_the_server_has_no_admin_token(
    browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    process, api = serve(tmp_path, {})  # no POCKET_ADMIN_TOKEN
    try:
        with open_pages(browser, api.base_url, screenshots) as pages:
            page = pages.open("/console")
            page.get_by_label("Admin token").fill(ADMIN_TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#admin-token-error")).to_have_text(
                "This server has no admin token: set POCKET_ADMIN_TOKEN and restart it."
            )
            expect(page.locator("#signed-in")).to_be_hidden()
            pages.shot(page, "console-00-no-admin-token")
    finally:
        process.close()


def test_the_console_pages_through_the_users(pages: Pages, server: Server) -> None:
    # Signed up by the admin: more than one address may sign up in a minute.
    add_users(server[1].as_user(ADMIN_TOKEN), *(f"User {n}" for n in range(1, 26)))
    page = signed_in(pages)
    names = page.locator("#users tbody [data-label=Name]")
    expect(names).to_have_count(20)
    page.get_by_role("button", name="Next").click()
    expect(names).to_have_text([f"User {n}" for n in range(21, 26)])
    expect(page.locator("#users-page")).to_have_text("Page 2")
    page.wait_for_timeout(2500)  # a refresh keeps the page it is on
    expect(names).to_have_text([f"User {n}" for n in range(21, 26)])
    pages.shot(page, "console-02-users-page-2")
    page.get_by_role("button", name="Previous").click()
    expect(names).to_have_count(20)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    pages.shot(page, "console-03-phone")


def test_the_console_shows_lag_going_to_zero_when_a_follower_starts(
    browser: Browser, screenshots: Path, tmp_path: Path, postgres_url: str
) -> None:
    env = {"POCKET_DATABASE_URL": postgres_url, "POCKET_ADMIN_TOKEN": ADMIN_TOKEN}
    server, api = serve(tmp_path, env, "--no-follower")
    followers: list[PocketProcess] = []
    try:
        with open_pages(browser, api.base_url, screenshots) as pages:
            page = signed_in(pages)
            add_users(api, "Ann", "Bob", "Cy")
            lag = fact(page, "lag")
            expect(lag).to_have_attribute("data-lag-events", re.compile(r"^[1-9]"))
            expect(lag).to_contain_text("behind")
            expect(fact(page, "follower")).to_have_text("not running")
            behind = status_json(tmp_path, env)["projections"][0]
            assert behind["lag_events"] > 0
            pages.shot(page, "console-04-lag-without-a-follower")

            followers.append(follow(tmp_path, env))
            expect(lag).to_have_attribute("data-lag-events", "0", timeout=15000)
            expect(lag).to_contain_text("caught up")
            active = followers[0].process.pid
            expect(fact(page, "follower")).to_contain_text(f"running: pid {active}")
            caught_up = status_json(tmp_path, env)["projections"][0]
            assert caught_up["lag_events"] == 0
            expect(fact(page, "position")).to_have_text(
                f"{caught_up['position']:,} of {caught_up['head']:,}"
            )

            followers.append(follow(tmp_path, env))
            standby = followers[1].process.pid
            _, shown = api.as_user(ADMIN_TOKEN).get("/admin/status")
            if "standbys" in shown["projections"][0]["follower"]:
                expect(fact(page, "standbys")).to_contain_text(f"pid {standby}")
            else:  # a status that does not list standbys yet
                expect(fact(page, "standbys")).to_have_text(
                    "not reported by this server"
                )
            pages.shot(page, "console-05-caught-up")
    finally:
        for process in (*followers, server):
            process.close()


def test_the_console_shows_the_gate_closed_while_the_database_is_down(
    browser: Browser,
    screenshots: Path,
    tmp_path: Path,
    throwaway_postgres: PostgresServer,
) -> None:
    # A server of the test's own: the shared one is never stopped.
    url = throwaway_postgres.create_database("pocket_console")
    env = {"POCKET_DATABASE_URL": url, "POCKET_ADMIN_TOKEN": ADMIN_TOKEN}
    server, api = serve(tmp_path, env)
    try:
        with open_pages(browser, api.base_url, screenshots) as pages:
            pages.expected.append(re.compile(r"status of 503"))  # shown as the gate
            page = signed_in(pages)
            add_users(api, "Ann")
            expect(page.locator("#gate")).to_have_attribute("data-open", "true")
            names = page.locator("#users tbody [data-label=Name]")
            expect(names).to_have_text(["Ann"])
            throwaway_postgres.stop(mode="fast")
            gate = page.locator("#gate")
            expect(gate).to_have_attribute("data-open", "false", timeout=15000)
            expect(gate).to_have_text("closed: answering 503")
            expect(page.locator("#refreshed")).to_contain_text("unreachable")
            pages.shot(page, "console-06-gate-closed")
            throwaway_postgres.start()
            expect(gate).to_have_attribute("data-open", "true", timeout=30000)
            expect(page.locator("#refreshed")).to_contain_text("Updated")
            expect(names).to_have_text(["Ann"])
    finally:
        server.close()


def test_the_console_says_which_server_its_list_of_users_comes_from(
    browser: Browser,
    screenshots: Path,
    tmp_path: Path,
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    url = primary.create_database("pocket_console")
    env = {
        "POCKET_DATABASE_URL": url,
        "POCKET_READ_URL": standby.url_for("pocket_console"),
        "POCKET_READ_MAX_LAG_SECONDS": "2",
        "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    server, api = serve(tmp_path, env)
    try:
        with open_pages(browser, api.base_url, screenshots) as pages:
            page = signed_in(pages)
            add_users(api, "Ann")
            names = page.locator("#users tbody [data-label=Name]")
            expect(names).to_have_text(["Ann"])
            reads = page.locator("#reads")
            expect(reads).to_contain_text(
                re.compile(
                    rf"Read from the standby 127\.0\.0\.1:{standby.port}, "
                    r"\d+\.\d s behind the primary \(at most 2 s\)\."
                )
            )
            pages.shot(page, "console-07-reads-on-the-standby")
            # A standby that stops applying falls behind: the list comes from
            # the primary, and the console says why.
            standby.query("SELECT pg_wal_replay_pause()")
            add_users(api, "Bob")
            expect(reads).to_contain_text(
                "Read from the primary: the read server", timeout=15000
            )
            expect(reads).to_contain_text("(POCKET_READ_MAX_LAG_SECONDS=2)")
            expect(names).to_have_text(["Ann", "Bob"])
            pages.shot(page, "console-08-reads-on-the-primary")
            standby.query("SELECT pg_wal_replay_resume()")
            expect(reads).to_contain_text("Read from the standby", timeout=15000)
    finally:
        server.close()


def test_the_console_shows_writes_stuck_while_the_synchronous_standby_is_gone(
    browser: Browser,
    screenshots: Path,
    tmp_path: Path,
    replicated_postgres: ReplicatedPair,
) -> None:
    primary, standby = replicated_postgres
    url = primary.create_database("pocket_console")
    env = {"POCKET_DATABASE_URL": url, "POCKET_ADMIN_TOKEN": ADMIN_TOKEN}
    server, api = serve(tmp_path, env)
    try:
        with open_pages(browser, api.base_url, screenshots) as pages:
            page = signed_in(pages)
            add_users(api, "Ann")
            writes, why = page.locator("#writes"), page.locator("#writes-why")
            expect(writes).to_have_attribute("data-confirmed", "true")
            expect(writes).to_have_text("confirmed")
            expect(why).to_be_hidden()
            standby.kill()
            expect(writes).to_have_attribute("data-confirmed", "false", timeout=15000)
            expect(writes).to_have_text("stuck: answering 503")
            expect(why).to_contain_text(
                "Writes are not being confirmed: waiting for the synchronous "
                "standby (synchronous_standby_names = 'FIRST 1 (\"standby\")'; "
                "none is streaming). Reads are still served."
            )
            # The list of users still comes: reads are served.
            expect(page.locator("#users tbody [data-label=Name]")).to_have_text(["Ann"])
            pages.shot(page, "console-09-writes-stuck")
            standby.start()
            expect(writes).to_have_attribute("data-confirmed", "true", timeout=30000)
            expect(why).to_be_hidden()
    finally:
        server.close()
