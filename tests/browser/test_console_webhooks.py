"""Webhooks in the operator console, in headless Chromium, against a real
`pocket serve` and a receiver of the test's own: subscribing through the form
(its refusals beside the fields, the secret shown once), a delivery counted,
a failing receiver's delivery parked, listed, replayed and delivered, and
unsubscribing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from pocket.feed import ALL_TYPES, EVENT_TYPES, verify
from tests.browser.conftest import ADMIN_TOKEN, DESKTOP, PHONE, Pages
from tests.browser.test_console import add_users, signed_in
from tests.e2e.processes import Api, PocketProcess, serve
from tests.receiver import Receiver, receiver

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
Server = tuple[PocketProcess, Api]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`pocket serve` on SQLite (the pages fixture's server), giving up on a
    failing delivery after a second instead of a day."""
    env = {
        "POCKET_DATABASE_URL": f"sqlite:///{tmp_path / 'pocket.db'}",
        "POCKET_ADMIN_TOKEN": ADMIN_TOKEN,
        "POCKET_WEBHOOK_RETRY_SECONDS": "1",
        "POCKET_WEBHOOK_BACKOFF_CAP_SECONDS": "0.2",
    }
    process, api = serve(tmp_path, env)
    yield process, api
    process.close()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def subscriptions(api: Api) -> list[dict[str, Any]]:
    status, body = api.as_user(ADMIN_TOKEN).get("/admin/webhooks")
    assert status == 200
    listed: list[dict[str, Any]] = body["webhooks"]
    return listed


def webhook_fact(item: Locator, key: str) -> Locator:
    return item.locator(f"[data-fact={key}]")


def subscribe(page: Page, url: str, alert: str = "", user: str = "") -> None:
    form = page.locator("#webhook-subscribe")
    form.get_by_label("Receiver URL").fill(url)
    form.get_by_label("Alert below").fill(alert)
    form.get_by_label("Only user").fill(user)
    form.get_by_role("button", name="Subscribe").click()


def test_the_console_subscribes_a_receiver_and_shows_its_secret_once(
    pages: Pages, server: Server, hook: Receiver
) -> None:
    _, api = server
    page = signed_in(pages)
    expect(page.locator("#webhooks-empty")).to_be_visible()

    # Refusals, in words beside the fields they are about.
    form = page.locator("#webhook-subscribe")
    form.get_by_label("all of them").uncheck()
    form.get_by_label("money.added").check()
    form.get_by_label("money.drawn").check()
    form.get_by_label("Description").fill("Orders service")
    subscribe(page, "ftp://orders.example", alert="ten")
    expect(page.locator("#webhook-alert-error")).to_have_text(
        "A limit must be plain digits with an optional decimal point, like 12.34."
    )
    subscribe(page, "ftp://orders.example")
    expect(page.locator("#webhook-url-error")).to_have_text(
        "An http:// or https:// URL with a host."
    )
    expect(page.locator("#webhook-alert-error")).to_be_hidden()
    subscribe(page, hook.url, user="99")
    expect(page.locator("#webhook-user-error")).to_have_text("There is no user 99.")
    pages.shot(page, "console-webhooks-01-refused")

    subscribe(page, hook.url, alert="0.50")
    secret_box = page.locator("#webhook-secret-box")
    expect(secret_box).to_be_visible()
    expect(secret_box).to_contain_text(
        "Copy the secret now: it will not be shown again"
    )
    secret = page.locator("#webhook-secret").inner_text()
    assert secret.startswith("whsec_")
    expect(page.locator("#webhook-secret-url")).to_have_text(hook.url)
    page.get_by_role("button", name="Copy the secret").click()
    expect(page.locator("#webhook-secret-copied")).to_have_text(
        re.compile("^(Copied to the clipboard|Selected: press Ctrl\\+C)")
    )
    (made,) = subscriptions(api)
    assert "secret" not in made
    assert (made["events"], made["alert_below"]) == (
        ["money.added", "money.drawn"],
        "0.50",
    )
    item = page.locator(f"[data-webhook-id='{made['id']}']")
    expect(item.locator(".webhook-url")).to_have_text(hook.url)
    expect(item).to_contain_text("“Orders service”")
    expect(webhook_fact(item, "events")).to_have_text("money.added, money.drawn")
    expect(webhook_fact(item, "alert_below")).to_have_text("0.50")
    expect(webhook_fact(item, "last_delivered")).to_have_text("none yet")
    expect(form.get_by_label("all of them")).to_be_checked()  # the form is reset
    pages.shot(page, "console-webhooks-02-secret-shown-once")
    page.get_by_role("button", name="I have kept it").click()
    expect(secret_box).to_be_hidden()
    expect(page.locator("#webhook-secret")).to_have_text("")

    # Money moves: the delivery is counted, and signed with the secret shown.
    add_users(api, "Ann")
    (event,) = hook.wait_for(1)
    assert (event["type"], event["amount"]) == ("money.added", "1.00")
    (request,) = hook.delivered()
    assert verify(
        secret, request.headers["Pocket-Signature"], request.body, time.time()
    )
    expect(webhook_fact(item, "last_delivered")).to_contain_text(
        re.compile(r"\(\d+ s ago\)$"), timeout=15000
    )
    expect(webhook_fact(item, "lag")).to_have_attribute("data-lag", "0")
    expect(webhook_fact(item, "lag")).to_have_text("0 events: caught up")
    expect(webhook_fact(item, "pending")).to_have_text("0")
    head = subscriptions(api)[0]["position"]
    expect(webhook_fact(item, "position")).to_have_text(f"{head:,} of {head:,}")
    card = page.locator("#webhooks")
    card.screenshot(path=str(pages.folder / "console-webhooks-03-delivered.png"))


def test_the_console_lists_a_parked_delivery_and_replays_it(
    pages: Pages, server: Server, hook: Receiver
) -> None:
    _, api = server
    made = subscribed(api, hook.url, ["money.added"])
    page = signed_in(pages)
    item = page.locator(f"[data-webhook-id='{made['id']}']")
    ((ann, ann_api),) = add_users(api, "Ann")
    hook.wait_for(1)

    # The receiver fails past the retry period: the delivery is parked.
    hook.fail_until = time.time() + 4
    status, _ = ann_api.post(
        f"/users/{ann}/add_money", {"amount": "2.50", "source": "x"}
    )
    assert status == 200
    parked = webhook_fact(item, "parked")
    expect(parked).to_have_attribute("data-parked", "1", timeout=20000)
    expect(parked).to_have_text("1: given up on, until replayed")
    expect(webhook_fact(item, "last_error")).to_contain_text("HTTP 500")
    item.get_by_role("button", name="Parked (1)").click()
    rows = item.locator("table.parked tbody tr")
    expect(rows).to_have_count(1)
    (delivery,) = parked_deliveries(api, made["id"])
    position = delivery["position"]
    assert delivery["attempts"] >= 2
    expect(rows.locator("[data-label=Event]")).to_have_text("money.added")
    expect(rows.locator("[data-label=Position]")).to_have_text(f"{position:,}")
    expect(rows.locator("[data-label=Attempts]")).to_have_text(
        str(delivery["attempts"])
    )
    expect(rows.locator('[data-label="Last error"]')).to_contain_text("HTTP 500")
    card = page.locator("#webhooks")
    card.screenshot(path=str(pages.folder / "console-webhooks-04-parked.png"))
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    item.screenshot(path=str(pages.folder / "console-webhooks-04-phone-parked.png"))
    page.set_viewport_size(DESKTOP)

    # Replayed from the parked delivery's position, once the receiver is back.
    time.sleep(max(0.0, hook.fail_until - time.time()))
    item.get_by_role("button", name="Replay from position").click()
    replay = item.locator("[data-part=replay]")
    expect(replay.get_by_label("From position")).to_have_value(str(position))
    expect(replay).to_contain_text(
        f"The first parked delivery is at position {position:,}:"
    )
    replay.get_by_role("button", name="Replay").click()
    expect(replay.locator(".field-error")).to_have_text("Tick the box to confirm.")
    card.screenshot(path=str(pages.folder / "console-webhooks-05-replay.png"))
    replay.get_by_label("Yes, send these events again").check()
    replay.get_by_role("button", name="Replay").click()
    expect(page.locator("#webhooks-message")).to_contain_text(
        re.compile(
            rf"^Replay asked for {re.escape(hook.url)}: the events it wants at "
            rf"positions? {position:,}( to \d+)? are sent again"
        )
    )
    expect(replay).to_be_hidden()
    events = hook.wait_for(2)
    assert [e["amount"] for e in events] == ["1.00", "2.50"]
    expect(parked).to_have_attribute("data-parked", "0", timeout=15000)
    expect(webhook_fact(item, "lag")).to_have_attribute("data-lag", "0")
    expect(item.locator("[data-part=parked] p")).to_have_text("Nothing is parked.")
    pages.shot(page, "console-webhooks-06-replayed")

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    item.get_by_role("button", name="Replay from position").click()
    pages.shot(page, "console-webhooks-07-phone")
    form = page.locator("#webhook-subscribe")
    for part, shown in (("subscription", item), ("form", form)):
        shot = pages.folder / f"console-webhooks-07-phone-{part}.png"
        shown.screenshot(path=str(shot))


def test_the_console_deletes_a_subscription_once_confirmed(
    pages: Pages, server: Server, hook: Receiver
) -> None:
    _, api = server
    made = subscribed(api, hook.url, ["*"])
    page = signed_in(pages)
    item = page.locator(f"[data-webhook-id='{made['id']}']")
    item.get_by_role("button", name="Delete").click()
    removal = item.locator("[data-part=delete]")
    removal.get_by_role("button", name="Delete").click()
    expect(removal.locator(".field-error")).to_have_text("Tick the box to confirm.")
    assert len(subscriptions(api)) == 1
    removal.get_by_label("Yes, delete this subscription").check()
    removal.get_by_role("button", name="Delete").click()
    expect(page.locator("#webhooks-message")).to_have_text(
        f"Deleted the subscription of {hook.url}: nothing more is sent to it."
    )
    expect(item).to_have_count(0)
    expect(page.locator("#webhooks-empty")).to_be_visible()
    assert subscriptions(api) == []
    pages.shot(page, "console-webhooks-08-deleted")


def test_the_console_offers_every_event_type_of_the_feed(pages: Pages) -> None:
    page = signed_in(pages)
    boxes = page.locator("#webhook-events input[type=checkbox]")
    names = [box.get_attribute("name") for box in boxes.all()]
    assert names == [f"event:{name}" for name in (ALL_TYPES, *EVENT_TYPES)]
    # "All of them" stands for every type: the single ones wait until it is off.
    expect(page.get_by_label("money.added")).to_be_disabled()
    page.get_by_label("all of them").uncheck()
    expect(page.get_by_label("money.added")).to_be_enabled()
    page.get_by_label("money.added").uncheck()
    page.get_by_label("Receiver URL").fill("https://orders.example/pocket")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.locator("#webhook-events-error")).to_have_text(
        'At least one event type, or "*".'
    )


def subscribed(api: Api, url: str, events: list[str]) -> dict[str, Any]:
    """A subscription made through the API (the secret is the form's to show)."""
    body = {"url": url, "events": events, "description": "Orders service"}
    status, answer = api.as_user(ADMIN_TOKEN).post("/admin/webhooks", body)
    assert status == 201
    made: dict[str, Any] = answer["webhook"]
    return made


def parked_deliveries(api: Api, webhook_id: str) -> list[dict[str, Any]]:
    path = f"/admin/webhooks/{webhook_id}/deliveries?status=parked"
    status, body = api.as_user(ADMIN_TOKEN).get(path)
    assert status == 200
    found: list[dict[str, Any]] = body["deliveries"]
    return found
