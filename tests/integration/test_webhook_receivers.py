"""Receivers that misbehave at the level of HTTP (tests.rogue_receiver): whatever
one answers, a try ends within the timeout and its failure is recorded, so the
delivery is retried as a retry (its try number counting up) and the
subscription's other deliveries go on."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from uuid import UUID

import pytest

from pocket.commands import OpenWallet
from pocket.config import Settings
from pocket.runner import PocketRunner
from pocket.webhook_admin import Webhooks
from pocket.webhooks import Outcome, WebhookSettings, post
from tests.e2e.processes import wait_for
from tests.receiver import running
from tests.rogue_receiver import (
    Answer,
    answering,
    endless_continues,
    rogue_receiver,
    trickled_headers,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest.fixture
def runner(sql_settings: Settings) -> Iterator[PocketRunner]:
    with running(
        sql_settings,
        POCKET_WEBHOOK_TIMEOUT_SECONDS="1",
        POCKET_WEBHOOK_BACKOFF_CAP_SECONDS="0.2",
    ) as r:
        yield r


@pytest.mark.parametrize("answer", [endless_continues, trickled_headers])
def test_a_try_ends_at_the_timeout_however_slowly_the_receiver_answers(
    answer: Answer,
) -> None:
    """Each byte comes well within the socket's timeout, the answer never ends:
    the timeout is for the whole try (docs/webhooks.md), not for each read."""
    outcomes: list[Outcome] = []
    with rogue_receiver(answer) as rogue:
        settings = WebhookSettings(timeout=1.0)
        trying = threading.Thread(
            target=lambda: outcomes.append(post(rogue.url, b"{}", {}, settings)),
            daemon=True,
        )
        trying.start()
        trying.join(2.0)
        assert not trying.is_alive(), "the try outlasted its timeout"
    assert outcomes == [Outcome(False, "no answer within 1s")]


def test_an_error_answer_holding_a_nul_byte_is_recorded_and_retried(
    runner: PocketRunner,
) -> None:
    """PostgreSQL's text holds no NUL: the receiver's words are kept without it,
    not left unrecorded (which sent the delivery again and again as its first
    try, and never parked it)."""
    failed = (
        b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
        b"bad\x00bytes"
    )
    with rogue_receiver(answering(failed, failed, OK)) as rogue:
        webhooks = Webhooks.of(runner.pocket)
        sub = webhooks.subscribe(rogue.url).subscription
        runner.pocket.open_wallet(OpenWallet(user_id="1"))
        wait_for(lambda: len(rogue.requests) >= 3, what="three tries")
        assert rogue.tries()[:3] == ["1", "2", "3"]
        wait_for(lambda: not pending(webhooks, sub.id), what="the delivery done")
        error = webhooks.status(sub.id).subscription.last_error
        assert error is not None
        assert error.startswith("HTTP 500: bad")
        assert "\x00" not in error


def pending(webhooks: Webhooks, subscription_id: UUID) -> int:
    return webhooks.status(subscription_id).queue.pending
