"""The live follower's lag, computed from samples of the log's head and the
projection's position (no database: the samples are given)."""

from __future__ import annotations

import pytest

from tools.bench.live import Sample, max_lag_seconds


def test_a_follower_that_kept_up_at_every_sample_lags_by_nothing() -> None:
    samples = [Sample(0.0, 10, 10), Sample(0.05, 35, 35), Sample(0.1, 60, 60)]
    assert max_lag_seconds(samples) == 0.0


def test_the_lag_is_the_age_of_the_oldest_event_not_yet_applied() -> None:
    # 500 events a second. At 0.05 s event 21 waits, committed at about 0.002
    # s (interpolated between the heads 20 and 45); at 0.1 s event 45 waits,
    # committed by 0.05 s: the older wait.
    samples = [Sample(0.0, 20, 20), Sample(0.05, 45, 20), Sample(0.1, 70, 44)]
    assert max_lag_seconds(samples) == pytest.approx(0.05)


def test_the_worst_sample_is_the_lag() -> None:
    samples = [
        Sample(0.0, 0, 0),
        Sample(0.05, 25, 24),  # event 25: committed at 0.05 at the latest
        Sample(0.1, 50, 50),
        Sample(0.15, 75, 51),  # event 52: committed at about 0.104
    ]
    assert max_lag_seconds(samples) == pytest.approx(0.15 - 0.104)
