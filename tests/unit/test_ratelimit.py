"""The sign-up rate limit's arithmetic: buckets per address on a clock the tests
move by hand, and the bound on how many addresses are remembered."""

from __future__ import annotations

import pytest

from pocket.ratelimit import Rate, RateLimiter, address_key

TEN_A_MINUTE = Rate(10, 60.0)


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def limiter(clock: Clock, rate: Rate = TEN_A_MINUTE, **kwargs: int) -> RateLimiter:
    return RateLimiter(rate, clock=clock, **kwargs)


def test_an_address_gets_its_burst_at_once_and_then_waits_for_the_next(
    clock: Clock,
) -> None:
    limit = limiter(clock)
    assert [limit.take("192.0.2.1") for _ in range(10)] == [0.0] * 10
    assert limit.take("192.0.2.1") == pytest.approx(6.0)
    clock.now += 5.0
    assert limit.take("192.0.2.1") == pytest.approx(1.0)
    clock.now += 1.0
    assert limit.take("192.0.2.1") == 0.0
    assert limit.take("192.0.2.1") == pytest.approx(6.0)


def test_a_refused_attempt_does_not_push_the_next_one_back(clock: Clock) -> None:
    limit = limiter(clock, Rate(1, 60.0))
    assert limit.take("192.0.2.1") == 0.0
    for _ in range(100):
        assert limit.take("192.0.2.1") > 0
    clock.now += 60.0
    assert limit.take("192.0.2.1") == 0.0


def test_after_a_quiet_period_the_whole_burst_is_back(clock: Clock) -> None:
    limit = limiter(clock)
    for _ in range(10):
        limit.take("192.0.2.1")
    clock.now += 60.0
    assert [limit.take("192.0.2.1") for _ in range(10)] == [0.0] * 10
    assert limit.take("192.0.2.1") > 0


def test_each_address_has_its_own_bucket(clock: Clock) -> None:
    limit = limiter(clock, Rate(1, 60.0))
    assert limit.take("192.0.2.1") == 0.0
    assert limit.take("192.0.2.1") > 0
    assert limit.take("192.0.2.2") == 0.0
    assert limit.take("2001:db8::1") == 0.0


def test_an_ipv6_subscriber_s_whole_64_is_one_client(clock: Clock) -> None:
    limit = limiter(clock, Rate(1, 60.0))
    assert limit.take("2001:db8:1:2::1") == 0.0
    assert limit.take("2001:db8:1:2:ffff:ffff:ffff:ffff") > 0
    assert limit.take("2001:db8:1:3::1") == 0.0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("", ""),
        ("localhost", "localhost"),
    ],
)
def test_the_key_an_address_is_counted_under(address: str, key: str) -> None:
    assert address_key(address) == key


def test_addresses_whose_buckets_are_full_again_are_forgotten(clock: Clock) -> None:
    limit = limiter(clock, max_addresses=3)
    for n in range(3):
        limit.take(f"192.0.2.{n}")
    assert len(limit.full_at) == 3
    clock.now += 6.0  # One sign-up each: refilled after 60 s / 10.
    assert limit.take("192.0.2.9") == 0.0
    assert list(limit.full_at) == ["192.0.2.9"]


def test_memory_is_bounded_and_new_addresses_wait_rather_than_old_ones_forgotten(
    clock: Clock,
) -> None:
    limit = limiter(clock, max_addresses=100)
    for n in range(100):
        assert limit.take(f"10.0.0.{n}") == 0.0
        clock.now += 1 / 128  # exact in binary: no rounding in the sums
    # Full of addresses still counted: a new one waits until the oldest's
    # bucket is whole again (6 s after its one sign-up)...
    wait = 6.0 - 100 / 128
    assert limit.take("10.0.1.1") == wait
    assert len(limit.full_at) == 100
    # ...and the remembered ones keep their limits, unforgotten.
    for _ in range(9):
        assert limit.take("10.0.0.99") == 0.0
    assert limit.take("10.0.0.99") > 0
    clock.now += wait
    assert limit.take("10.0.1.1") == 0.0
    assert len(limit.full_at) <= 100


def test_a_rate_reads_as_it_is_written() -> None:
    assert str(TEN_A_MINUTE) == "10/minute"
    assert str(Rate(3, 3600.0)) == "3/hour"
    assert str(Rate(3, 90.0)) == "3/90s"
