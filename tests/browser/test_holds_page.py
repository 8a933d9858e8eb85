"""Holds on the wallet page in headless Chromium, against a real `pocket
serve`: placing one, capturing it in part, voiding another, a refusal of a hold
that ended meanwhile (with how it really ended), what the balance card and the
history say of them, and a capture resent after a lost answer that moves the
money once."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import ADMIN_TOKEN, PHONE, Pages
from tests.browser.test_wallet_page import history, new_user, sign_in, submit
from tests.e2e.processes import Api, PocketProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
Server = tuple[PocketProcess, Api]
KEY = re.compile(r"[0-9a-f-]{36}")


def place(page: Page, amount: str, **fields: str) -> None:
    """Places a hold through the page's form (for a destination unless to_user_id)."""
    if "to_user_id" in fields:
        page.get_by_label("another user").check()
    else:
        page.get_by_label("a destination").check()
    submit(page, "hold", amount=amount, **fields)


def hold_item(page: Page, hold_id: str) -> Locator:
    return page.locator(f"#holds li[data-hold-id='{hold_id}']")


def open_holds(owner: Api, user_id: int) -> list[dict[str, object]]:
    status, body = owner.get(f"/users/{user_id}/holds")
    assert status == 200
    holds: list[dict[str, object]] = body["holds"]
    return holds


def expect_figures(page: Page, balance: str, held: str, available: str) -> None:
    expect(page.locator("#balance")).to_have_text(balance)
    expect(page.locator("#held")).to_have_text(held)
    expect(page.locator("#available")).to_have_text(available)


def test_a_hold_is_placed_then_captured_in_part_and_the_rest_released(
    pages: Pages, server: Server
) -> None:
    user_id, token, owner = new_user(server[1], "Holder", "50")
    page = pages.open("/")
    sign_in(page, user_id, token)
    expect_figures(page, "50.00", "0.00", "50.00")
    expect(page.locator("#holds-empty")).to_be_visible()

    page.get_by_label("Unit of time").select_option("minutes")
    with page.expect_request(re.compile(r"/holds$")) as sent:
        place(page, "20", destination="Hotel", description="deposit", expires_in="10")
    assert json.loads(sent.value.post_data or "") == {
        "amount": "20",
        "destination": "Hotel",
        "description": "deposit",
        "expires_in": 600,
    }
    assert KEY.fullmatch(sent.value.headers["idempotency-key"])
    expect_figures(page, "50.00", "20.00", "30.00")
    expect(page.locator("#hold .form-message")).to_contain_text(
        "Held 20.00 for Hotel until"
    )
    (hold,) = open_holds(owner, user_id)
    item = hold_item(page, str(hold["id"]))
    expect(item.locator(".hold-what")).to_have_text("20.00 for Hotel (“deposit”)")
    expect(item.locator(".time-left")).to_have_text(re.compile(r"in (9|10) min"))
    pages.shot(page, "holds-01-placed")

    with page.expect_request(re.compile(r"/capture$")) as captured:
        item.get_by_label("Amount to capture").fill("12.50")
        item.get_by_role("button", name="Capture").click()
    assert captured.value.post_data == '{"amount":"12.50"}'
    assert KEY.fullmatch(captured.value.headers["idempotency-key"])
    expect(page.locator("#holds-message")).to_have_text(
        "Captured 12.50 of 20.00 for Hotel; 7.50 released. Balance: 37.50."
    )
    expect_figures(page, "37.50", "0.00", "37.50")
    expect(page.locator("#holds li")).to_have_count(0)
    expect(page.locator("#holds-empty")).to_be_visible()

    rows = page.locator("#history tbody tr")  # newest first
    expect(rows).to_have_count(3)
    expect(rows.locator("td[data-label=Amount]")).to_have_text(
        ["\N{MINUS SIGN}12.50", "20.00", "+50.00"]
    )
    expect(rows.locator("td[data-label='Balance after']")).to_have_text(
        ["37.50", "50.00", "50.00"]
    )
    capture, placed = rows.nth(0), rows.nth(1)
    short = f"hold {str(hold['id'])[:8]}"
    expect(capture).to_contain_text("OUT to Hotel (“deposit”)")
    expect(capture).to_contain_text(f"{short} captured, 7.50 released")
    expect(placed).to_contain_text("HOLD held for Hotel (“deposit”)")
    expect(placed).to_contain_text(f"{short}, until")
    for row in (capture, placed):
        expect(row).to_have_attribute("data-hold-id", str(hold["id"]))
    pages.shot(page, "holds-02-captured-in-part")
    assert [t["balance"] for t in history(owner, user_id)] == [
        "50.00",
        "50.00",
        "37.50",
    ]


def test_a_hold_is_voided_and_a_capture_of_one_voided_elsewhere_says_how_it_ended(
    pages: Pages, server: Server
) -> None:
    friend_id, _, _ = new_user(server[1], "Friend")
    user_id, token, owner = new_user(server[1], "Voider", "30")
    page = pages.open("/")
    sign_in(page, user_id, token)
    page.get_by_label("Unit of time").select_option("seconds")
    place(page, "5", to_user_id=str(friend_id), expires_in="3600")
    expect_figures(page, "30.00", "5.00", "25.00")
    status, taxi = owner.post(
        f"/users/{user_id}/holds",
        {"amount": "10", "destination": "Taxi", "expires_in": 7200},
    )
    assert status == 201
    page.reload()  # another tab placed it: this one sees it once it reads again
    for_friend, for_taxi = (
        hold_item(page, str(h["id"])) for h in open_holds(owner, user_id)
    )
    expect(for_friend.locator(".hold-what")).to_have_text(f"5.00 for user {friend_id}")
    expect(for_taxi.locator(".hold-what")).to_have_text("10.00 for Taxi")
    expect_figures(page, "30.00", "15.00", "15.00")

    with page.expect_request(re.compile(r"/void$")) as voided:
        for_friend.get_by_role("button", name="Void").click()
    assert KEY.fullmatch(voided.value.headers["idempotency-key"])
    expect(page.locator("#holds-message")).to_have_text(
        f"Voided the hold of 5.00 for user {friend_id}: 5.00 released. "
        "Available: 20.00."
    )
    expect_figures(page, "30.00", "10.00", "20.00")
    expect(page.locator("#holds li")).to_have_count(1)

    # Voided in another tab while this one still shows it: the capture is refused.
    status, _ = owner.post(f"/users/{user_id}/holds/{taxi['id']}/void", None)
    assert status == 200
    with page.expect_response(re.compile(r"/capture$")) as refused:
        for_taxi.get_by_role("button", name="Capture").click()
    error = refused.value.json()["error"]
    assert (refused.value.status, error["code"]) == (409, "hold_ended")
    assert error["hold"]["status"] == "voided"
    message = page.locator("#holds-message")
    expect(message).to_contain_text(error["message"])
    expect(message).to_contain_text("It was voided at")
    expect(message).to_contain_text(": 10.00 released.")
    expect(message).to_have_attribute("data-kind", "error")
    expect(page.locator("#holds li")).to_have_count(0)  # the wallet read again
    expect_figures(page, "30.00", "0.00", "30.00")
    rows = page.locator("#history tbody tr")
    expect(rows.locator(".kind")).to_have_text(
        ["RELEASE", "RELEASE", "HOLD", "HOLD", "IN"]
    )
    expect(rows.nth(0)).to_contain_text("hold voided: back to available")
    expect(rows.nth(0).locator("td[data-label=Amount]")).to_have_text("10.00")
    pages.shot(page, "holds-03-refused-capture-of-a-voided-hold")


def test_a_capture_resent_after_a_lost_answer_moves_the_money_once(
    pages: Pages, server: Server
) -> None:
    user_id, token, owner = new_user(server[1], "Resender", "40")
    status, hold = owner.post(
        f"/users/{user_id}/holds",
        {"amount": "15", "destination": "Shop", "expires_in": 600},
    )
    assert status == 201
    page = pages.open("/")
    sign_in(page, user_id, token)
    pages.expected.append(re.compile(r"net::ERR_TIMED_OUT"))
    keys: list[str] = []

    def lose_the_answer(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        route.fetch()  # The server captures it...
        route.abort("timedout")  # ...and its answer never arrives.

    capture = re.compile(r"/capture$")
    page.route(capture, lose_the_answer)
    item = hold_item(page, str(hold["id"]))
    item.get_by_role("button", name="Capture").click()
    expect(item.locator(".form-message")).to_contain_text("No answer from the server")
    page.unroute(capture)
    with page.expect_request(capture) as resent:
        item.get_by_role("button", name="Capture").click()
    assert resent.value.headers["idempotency-key"] == keys[0]
    expect(page.locator("#holds-message")).to_have_text(
        "Captured 15.00 of 15.00 for Shop. Balance: 25.00."
    )
    expect_figures(page, "25.00", "0.00", "25.00")
    assert [t["type"] for t in history(owner, user_id)] == ["IN", "HOLD", "OUT"]


def test_the_limits_show_when_set_and_a_hold_past_the_daily_limit_is_refused(
    pages: Pages, server: Server
) -> None:
    user_id, token, _ = new_user(server[1], "Limited", "100")
    admin = server[1].as_user(ADMIN_TOKEN)
    status, _ = admin.request(
        "PUT", f"/admin/users/{user_id}/limits", {"daily_limit": "30"}
    )
    assert status == 200
    page = pages.open("/")
    sign_in(page, user_id, token)
    expect(page.locator("#daily-limit")).to_have_text("30.00 a day (UTC)")
    expect(page.locator("#credit-limit-row")).to_be_hidden()
    status, _ = admin.request(
        "PUT", f"/admin/users/{user_id}/limits", {"credit_limit": "20"}
    )
    assert status == 200
    page.reload()
    expect(page.locator("#credit-limit")).to_have_text("20.00")
    expect(page.locator("#spending-hint")).to_contain_text(
        "down to \N{MINUS SIGN}20.00"
    )
    with page.expect_response(re.compile(r"/holds$")) as refused:
        place(page, "31", destination="Shop", expires_in="5")
    error = refused.value.json()["error"]
    assert (refused.value.status, error["code"]) == (409, "daily_limit_exceeded")
    expect(page.locator("#hold-amount-error")).to_have_text(error["message"])
    expect_figures(page, "100.00", "0.00", "120.00")
    pages.shot(page, "holds-04-daily-limit")


def test_the_holds_fit_a_phone_screen(pages: Pages, server: Server) -> None:
    friend_id, _, _ = new_user(server[1], "Friend")
    user_id, token, owner = new_user(server[1], "Phone", "80")
    for amount, where in (
        ("12.34", {"destination": "A long destination name, say a hotel"}),
        ("5", {"to_user_id": friend_id}),
    ):
        status, _ = owner.post(
            f"/users/{user_id}/holds",
            {
                "amount": amount,
                "description": "for the weekend",
                "expires_in": 5400,
                **where,
            },
        )
        assert status == 201
    first = open_holds(owner, user_id)[0]["id"]
    status, _ = owner.post(f"/users/{user_id}/holds/{first}/capture", {"amount": "2"})
    assert status == 200
    page = pages.open("/", viewport=PHONE)
    sign_in(page, user_id, token)
    expect(page.locator("#holds li")).to_have_count(1)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    pages.shot(page, "holds-05-phone")
    # The parts that changed, at their size (a whole phone page is too tall to read).
    for part in ("balance-card", "holds-section", "history-section"):
        page.locator(f"#{part}").screenshot(
            path=str(pages.folder / f"holds-05-phone-{part}.png")
        )


def test_a_hold_that_expires_while_shown_goes_and_its_release_shows(
    pages: Pages, server: Server
) -> None:
    user_id, token, owner = new_user(server[1], "Waiter", "10")
    page = pages.open("/")
    sign_in(page, user_id, token)
    page.get_by_label("Unit of time").select_option("seconds")
    place(page, "4", destination="Parking", expires_in="3")
    expect_figures(page, "10.00", "4.00", "6.00")
    expect(page.locator("#holds .time-left")).to_have_text(re.compile(r"in [1-3] s"))
    # The follower records its expiry; the page asks again once its time has come.
    expect(page.locator("#holds li")).to_have_count(0, timeout=15000)
    expect_figures(page, "10.00", "0.00", "10.00")
    latest = page.locator("#history tbody tr").first
    expect(latest).to_contain_text("RELEASE hold expired: back to available")
    expect(latest.locator("td[data-label=Amount]")).to_have_text("4.00")
    assert [t["type"] for t in history(owner, user_id)] == ["IN", "HOLD", "RELEASE"]
    pages.shot(page, "holds-06-expired")
