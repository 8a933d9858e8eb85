"""The wallet page in headless Chromium, against a real `pocket serve`: what a
person does with it, and what it must never do (move money twice, round an
amount, leave the token anywhere but the tab)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect

from tests.browser.conftest import PHONE, Pages
from tests.e2e.processes import Api, PocketProcess

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
Server = tuple[PocketProcess, Api]


def sign_up(page: Page, name: str) -> tuple[int, str]:
    """Opens a wallet through the page; returns the user id and token it showed."""
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Open my wallet").click()
    expect(page.locator("#token-box")).to_be_visible()
    user_id = int(page.locator("#token-user").inner_text())
    token = page.locator("#token-value").inner_text()
    page.get_by_role("button", name="I have kept it").click()
    return user_id, token


def sign_in(page: Page, user_id: int, token: str) -> None:
    page.get_by_label("Your user id", exact=True).fill(str(user_id))
    page.get_by_label("Your token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signed-in")).to_be_visible()


def fill(page: Page, form: str, **values: str) -> None:
    """Types into a form's fields, each found by its label's field name."""
    for name, value in values.items():
        page.locator(f"#{form} [name={name}]").fill(value)


def submit(page: Page, form: str, **values: str) -> None:
    fill(page, form, **values)
    page.locator(f"#{form} button[type=submit]").click()


def new_user(api: Api, name: str, *amounts: str) -> tuple[int, str, Api]:
    """A user made through the API, with money added (or drawn: a leading -)."""
    status, body = api.post("/users", {"name": name})
    assert status == 201
    user_id, token = body["user"]["id"], body["token"]
    owner = api.as_user(token)
    for amount in amounts:
        action = "draw_money" if amount.startswith("-") else "add_money"
        field = "destination" if amount.startswith("-") else "source"
        status, _ = owner.post(
            f"/users/{user_id}/{action}", {"amount": amount.lstrip("-"), field: "x"}
        )
        assert status == 200
    return user_id, token, owner


def history(owner: Api, user_id: int) -> list[dict[str, Any]]:
    """The user's whole history, as the API gives it."""
    status, body = owner.get(f"/users/{user_id}/transactions?limit=500")
    assert status == 200
    assert body["next"] is None
    entries: list[dict[str, Any]] = body["transactions"]
    return entries


def test_a_person_signs_up_adds_and_draws_and_sees_a_refusal_beside_the_amount(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    pages.shot(page, "wallet-01-signed-out")
    user_id, token = sign_up(page, "Gabriela")
    expect(page.locator("#who")).to_have_text(f"Gabriela · user {user_id}")
    expect(page.locator("#balance")).to_have_text("0.00")

    submit(page, "add", amount="20", source="API")
    expect(page.locator("#balance")).to_have_text("20.00")
    submit(page, "draw", amount="5", destination="API")
    expect(page.locator("#balance")).to_have_text("15.00")

    with page.expect_response(re.compile(r"/draw_money$")) as refused:
        submit(page, "draw", amount="500", destination="API")
    error = refused.value.json()["error"]
    assert (refused.value.status, error["code"]) == (409, "insufficient_funds")
    beside = page.locator("#draw-amount-error")
    expect(beside).to_have_text(error["message"])
    expect(page.locator("#draw-amount")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#balance")).to_have_text("15.00")

    rows = page.locator("#history tbody tr")  # newest first
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("IN")
    expect(rows.nth(1)).to_contain_text("+20.00")
    expect(rows.nth(1).locator("[data-label='Balance after']")).to_have_text("20.00")
    expect(rows.nth(0)).to_contain_text("OUT")
    expect(rows.nth(0)).to_contain_text("\N{MINUS SIGN}5.00")
    expect(rows.nth(0).locator("[data-label='Balance after']")).to_have_text("15.00")
    expect(rows.nth(0)).to_contain_text(f"by user:{user_id}")
    pages.shot(page, "wallet-02-refused-draw")

    owner = server[1].as_user(token)
    assert [t["balance"] for t in history(owner, user_id)] == ["20.00", "15.00"]


def test_a_refusal_beside_a_field_goes_once_a_later_submission_is_made(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    sign_up(page, "Tidy")
    submit(page, "draw", amount="500", destination="API")
    refused = page.locator("#draw-amount-error")
    expect(refused).to_contain_text("insufficient", ignore_case=True)
    page.get_by_role("button", name="Close my wallet").click()
    expect(page.locator("#close-confirm-error")).to_have_text(
        "Tick the box to confirm."
    )
    # The refusals were true then; after money moves they are not.
    submit(page, "add", amount="1000", source="API")
    expect(page.locator("#balance")).to_have_text("1000.00")
    expect(refused).to_be_hidden()
    expect(page.locator("#draw-amount")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#close-confirm-error")).to_be_hidden()
    expect(page.locator("#add .form-message")).to_have_text(
        "Added 1000.00. Balance: 1000.00."
    )
    pages.shot(page, "wallet-02a-old-refusals-gone")
    # ...and the success note, once the next submission is made elsewhere.
    submit(page, "draw", amount="1", destination="API")
    expect(page.locator("#balance")).to_have_text("999.00")
    expect(page.locator("#add .form-message")).to_be_hidden()


def test_a_submission_elsewhere_keeps_the_note_of_one_whose_outcome_is_unknown(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    sign_up(page, "Unsure")
    pages.expected.append(re.compile(r"net::ERR_TIMED_OUT"))
    page.route(re.compile(r"/add_money$"), lambda route: route.abort("timedout"))
    submit(page, "add", amount="7", source="API")
    unknown = page.locator("#add .form-message")
    expect(unknown).to_contain_text("No answer from the server")
    page.unroute(re.compile(r"/add_money$"))
    submit(page, "draw", amount="500", destination="API")
    expect(page.locator("#draw-amount-error")).to_be_visible()
    # Still true: the add may or may not have happened; a resend says which.
    expect(unknown).to_contain_text("No answer from the server")


def test_an_amount_goes_out_as_typed_and_the_api_judges_it(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    sign_up(page, "Exact")
    with page.expect_request(re.compile(r"/add_money$")) as sent:
        submit(page, "add", amount="0.10", source="API")
    assert sent.value.post_data == '{"amount":"0.10","source":"API"}'
    expect(page.locator("#balance")).to_have_text("0.10")
    # A float would have made 1e3 a thousand; the API's grammar refuses it.
    with page.expect_response(re.compile(r"/add_money$")) as refused:
        submit(page, "add", amount="1e3", source="API")
    message = refused.value.json()["error"]["fields"]["amount"]
    expect(page.locator("#add-amount-error")).to_have_text(message)
    expect(page.locator("#balance")).to_have_text("0.10")


def test_a_transfer_reaches_the_second_user(pages: Pages, server: Server) -> None:
    bob_id, bob_token, _ = new_user(server[1], "Bob")
    page = pages.open("/")
    ann_id, _ = sign_up(page, "Ann")
    submit(page, "add", amount="30", source="salary")
    expect(page.locator("#balance")).to_have_text("30.00")

    submit(page, "send", to_user_id="999", amount="1")
    expect(page.locator("#send-to-error")).to_be_visible()
    submit(page, "send", to_user_id=str(bob_id), amount="12.50", description="lunch")
    expect(page.locator("#balance")).to_have_text("17.50")
    expect(page.locator("#send .form-message")).to_have_text(
        f"Sent 12.50 to user {bob_id}. Balance: 17.50."
    )
    latest = page.locator("#history tbody tr").first
    expect(latest).to_contain_text(f"to user {bob_id} (“lunch”)")
    expect(latest).to_contain_text("\N{MINUS SIGN}12.50")
    pages.shot(page, "wallet-03-transfer-sent")

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signed-out")).to_be_visible()
    sign_in(page, bob_id, bob_token)
    expect(page.locator("#balance")).to_have_text("12.50")
    received = page.locator("#history tbody tr").first
    expect(received).to_contain_text(f"from user {ann_id} (“lunch”)")
    expect(received).to_contain_text("+12.50")
    pages.shot(page, "wallet-04-transfer-received")


def test_the_history_is_shown_page_by_page_as_the_api_pages_it(
    pages: Pages, server: Server
) -> None:
    amounts = [f"{n}.00" for n in range(1, 24)]
    user_id, token, owner = new_user(server[1], "Pager", *amounts)
    latest_first = history(owner, user_id)[::-1]
    page = pages.open("/")
    sign_in(page, user_id, token)
    ids = page.locator("#history tbody tr td[data-label='#']")
    expect(ids).to_have_text([str(t["id"]) for t in latest_first[:10]])
    expect(page.get_by_role("button", name="Previous")).to_be_disabled()

    page.get_by_role("button", name="Next").click()
    expect(ids).to_have_text([str(t["id"]) for t in latest_first[10:20]])
    expect(page.locator("#history-page")).to_have_text("Page 2")
    page.get_by_role("button", name="Next").click()
    expect(ids).to_have_text([str(t["id"]) for t in latest_first[20:]])
    expect(page.get_by_role("button", name="Next")).to_be_disabled()
    pages.shot(page, "wallet-05-history-last-page")

    page.get_by_role("button", name="Previous").click()
    expect(ids).to_have_text([str(t["id"]) for t in latest_first[10:20]])


def test_the_latest_movements_come_first_and_a_new_one_shows_at_the_top(
    pages: Pages, server: Server
) -> None:
    amounts = [f"{n}.00" for n in range(1, 24)]
    user_id, token, owner = new_user(server[1], "Latest", *amounts)
    everything = history(owner, user_id)
    page = pages.open("/", viewport=PHONE)
    sign_in(page, user_id, token)
    expect(page.locator("#history-title")).to_contain_text("newest first")
    ids = page.locator("#history tbody tr td[data-label='#']")
    expect(ids).to_have_count(10)
    expect(ids.first).to_have_text(str(everything[-1]["id"]))
    expect(page.locator("#history tbody tr").first).to_contain_text("+23.00")
    # A page of entries is about a screen and a half of a phone, not ten.
    height = page.locator("#history").evaluate("t => t.offsetHeight")
    assert height <= 2 * PHONE["height"]
    pages.shot(page, "wallet-05a-phone-history-newest-first")

    page.get_by_role("button", name="Next").click()
    expect(page.locator("#history-page")).to_have_text("Page 2")
    submit(page, "add", amount="0.50", source="API")
    # Moving money shows the first page again, the new entry at its top.
    expect(page.locator("#history-page")).to_have_text("Page 1")
    expect(page.locator("#history tbody tr").first).to_contain_text("+0.50")
    expect(ids.first).to_have_text(str(everything[-1]["id"] + 1))


def test_the_chart_is_drawn_from_the_whole_history(
    pages: Pages, server: Server
) -> None:
    amounts = ["20", "-5", "7.25", "-22.25", "40", "-0.01", "3"]
    amounts += [str(n) for n in range(1, 10)]
    user_id, token, owner = new_user(server[1], "Chart", *amounts)
    everything = history(owner, user_id)
    page = pages.open("/")
    sign_in(page, user_id, token)
    circles = page.locator("#chart circle.point")
    expect(circles).to_have_count(len(everything))
    points = circles.evaluate_all(
        """cs => cs.map(c => ({id: Number(c.dataset.id), balance: c.dataset.balance,
            date: c.dataset.date, cx: Number(c.getAttribute("cx")),
            cy: Number(c.getAttribute("cy"))}))"""
    )
    assert [(p["id"], p["balance"], p["date"]) for p in points] == [
        (t["id"], t["balance"], t["date"]) for t in everything
    ]
    # Heights in proportion to the balances, from the axis (0.00) to the top.
    bottom = float(page.locator("#chart line.axis").get_attribute("y1") or "nan")
    top = float(page.locator("#chart line.grid").get_attribute("y1") or "nan")
    highest = max(Decimal(t["balance"]) for t in everything)
    for point in points:
        share = Decimal(point["balance"]) / highest
        assert point["cy"] == pytest.approx(
            bottom - float(share) * (bottom - top), abs=0.11
        )
    # Left to right in time, and on the line.
    assert [p["cx"] for p in points] == sorted(p["cx"] for p in points)
    line = page.locator("#chart path.line").get_attribute("d") or ""
    vertices = {
        (float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+) ([\d.]+)", line)
    }
    assert {(p["cx"], p["cy"]) for p in points} <= vertices
    expect(page.locator("#chart-caption")).to_have_text(
        f"From 0.00 to {everything[-1]['balance']}, over {len(everything)} changes."
    )
    pages.shot(page, "wallet-06-chart")


def test_a_double_click_moves_money_once(pages: Pages, server: Server) -> None:
    page = pages.open("/")
    user_id, token = sign_up(page, "Clicker")
    sent: list[Request] = []
    page.on(
        "request", lambda r: sent.append(r) if r.url.endswith("/add_money") else None
    )
    fill(page, "add", amount="7")
    page.locator("#add button[type=submit]").dblclick()
    expect(page.locator("#balance")).to_have_text("7.00")
    page.wait_for_timeout(500)  # time for a second request, were there one
    assert len(sent) == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", sent[0].headers["idempotency-key"])
    assert [t["amount"] for t in history(server[1].as_user(token), user_id)] == ["7.00"]


def test_a_resend_after_a_lost_answer_moves_money_once(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    user_id, token = sign_up(page, "Patient")
    pages.expected.append(re.compile(r"net::ERR_TIMED_OUT"))
    keys: list[str] = []

    def lose_the_answer(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        route.fetch()  # The server moves the money...
        route.abort("timedout")  # ...and its answer never arrives.

    page.route(re.compile(r"/add_money$"), lose_the_answer)
    submit(page, "add", amount="7", source="API")
    expect(page.locator("#add .form-message")).to_contain_text(
        "No answer from the server"
    )
    pages.shot(page, "wallet-07-no-answer")
    page.unroute(re.compile(r"/add_money$"))
    owner = server[1].as_user(token)
    assert [t["amount"] for t in history(owner, user_id)] == ["7.00"]

    # The person sends it again: the same key, so the money moves once.
    with page.expect_request(re.compile(r"/add_money$")) as resent:
        page.locator("#add button[type=submit]").click()
    assert resent.value.headers["idempotency-key"] == keys[0]
    expect(page.locator("#balance")).to_have_text("7.00")
    assert [t["amount"] for t in history(owner, user_id)] == ["7.00"]

    # A new submission of the same amount is a new payment, under a new key.
    with page.expect_request(re.compile(r"/add_money$")) as again:
        submit(page, "add", amount="7", source="API")
    assert again.value.headers["idempotency-key"] != keys[0]
    expect(page.locator("#balance")).to_have_text("14.00")


def test_a_payment_that_went_through_is_not_called_unanswered_when_the_refresh_fails(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    user_id, token = sign_up(page, "Unlucky")
    pages.expected.append(re.compile(r"net::ERR_FAILED"))
    page.route(re.compile(r"/transactions\?"), lambda route: route.abort())
    submit(page, "add", amount="7", source="API")
    expect(page.locator("#add .form-message")).to_contain_text("Done, but")
    expect(page.locator("#add-amount")).to_have_value("")  # not a resend: a new one
    assert [t["amount"] for t in history(server[1].as_user(token), user_id)] == ["7.00"]


def test_closing_the_wallet_is_refused_until_it_is_empty(
    pages: Pages, server: Server
) -> None:
    page = pages.open("/")
    sign_up(page, "Leaving")
    submit(page, "add", amount="5", source="API")
    expect(page.locator("#balance")).to_have_text("5.00")
    page.get_by_role("button", name="Close my wallet").click()
    expect(page.locator("#close-confirm-error")).to_have_text(
        "Tick the box to confirm."
    )
    page.get_by_label("Yes, close my wallet for good").check()
    with page.expect_response(re.compile(r"/close$")) as refused:
        page.get_by_role("button", name="Close my wallet").click()
    message = refused.value.json()["error"]["message"]
    expect(page.locator("#close-confirm-error")).to_have_text(message)

    submit(page, "draw", amount="5", destination="API")
    expect(page.locator("#balance")).to_have_text("0.00")
    page.get_by_label("Yes, close my wallet for good").check()
    page.get_by_role("button", name="Close my wallet").click()
    expect(page.locator("#wallet-state")).to_contain_text("This wallet is closed")
    expect(page.locator("#actions")).to_be_hidden()  # no more money moves
    expect(page.locator("#close-section")).to_be_hidden()
    expect(page.locator("#history tbody tr")).to_have_count(2)
    pages.shot(page, "wallet-08-closed")


def test_the_token_is_kept_by_the_tab_alone(pages: Pages, server: Server) -> None:
    page = pages.open("/")
    _, token = sign_up(page, "Private")
    assert page.context.cookies() == []
    assert token not in page.url
    assert page.evaluate("sessionStorage.getItem('pocket.session')") is not None
    page.reload()
    expect(page.locator("#balance")).to_have_text("0.00")  # the same tab: still in

    other = pages.open("/")  # another tab knows nothing of it
    expect(other.locator("#signed-out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    assert page.evaluate("sessionStorage.getItem('pocket.session')") is None


def test_the_page_can_be_used_from_the_keyboard(pages: Pages, server: Server) -> None:
    page = pages.open("/")
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input')].filter(i => !i.labels.length)"
        ".map(i => i.id)"
    )
    assert unlabelled == []
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "sign-up-name":
            break
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    page.keyboard.type("Keyboard Kim")
    page.keyboard.press("Enter")
    expect(page.locator("#token-done")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#add-amount")).to_be_focused()
    page.keyboard.type("3")
    page.keyboard.press("Enter")
    expect(page.locator("#balance")).to_have_text("3.00")
    pages.shot(page, "wallet-09-keyboard")


def test_the_page_fits_a_phone_screen(pages: Pages, server: Server) -> None:
    other_id, _, _ = new_user(server[1], "Friend")
    user_id, token, owner = new_user(server[1], "Phone", "20", "-5", "12.34")
    owner.post(f"/users/{user_id}/transfers", {"to_user_id": other_id, "amount": "3"})
    page = pages.open("/", viewport=PHONE)
    pages.shot(page, "wallet-10-phone-signed-out")
    sign_in(page, user_id, token)
    expect(page.locator("#chart circle.point")).to_have_count(4)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    pages.shot(page, "wallet-11-phone")
