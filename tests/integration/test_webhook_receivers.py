"""Receivers that misbehave at the level of HTTP (tests.rogue_receiver): whatever
one answers, a try ends within the timeout and its failure is recorded, so the
delivery is retried as a retry (its try number counting up) and the
subscription's other deliveries go on."""

from __future__ import annotations

import threading

import pytest

from pocket.webhooks import Outcome, WebhookSettings, post
from tests.rogue_receiver import (
    Answer,
    endless_continues,
    rogue_receiver,
    trickled_headers,
)


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
