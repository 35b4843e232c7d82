"""TokenBucket driven with explicit times."""

from __future__ import annotations

import pytest

from dari.protocol.ratelimit import TokenBucket

T0 = 1000.0


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1.0, burst=3.0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]


def test_tokens_refill_at_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0)
    for _ in range(3):
        bucket.take(T0)
    assert bucket.take(T0 + 0.25) is False  # half a token
    assert bucket.take(T0 + 0.5) is True  # one token after 0.5 s at 2/s
    assert bucket.take(T0 + 0.5) is False


def test_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2.0)
    bucket.take(T0)
    assert [bucket.take(T0 + 3600) for _ in range(3)] == [True, True, False]


def test_cost_takes_several_tokens_and_is_refused_whole() -> None:
    bucket = TokenBucket(rate=1.0, burst=5.0)
    assert bucket.take(T0, cost=4) is True
    assert bucket.take(T0, cost=2) is False
    assert bucket.tokens == pytest.approx(1.0)  # a refusal takes nothing
    assert bucket.take(T0, cost=1) is True


def test_strikes_count_refusals_in_a_row_and_reset_on_success() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    bucket.take(T0)
    for expected in (1, 2, 3):
        assert bucket.take(T0) is False
        assert bucket.strikes == expected
    assert bucket.take(T0 + 1) is True
    assert bucket.strikes == 0
    bucket.take(T0 + 1)
    assert bucket.strikes == 1


def test_a_fresh_bucket_is_full_with_no_strikes() -> None:
    bucket = TokenBucket(rate=5.0, burst=7.0)
    assert bucket.tokens == 7.0
    assert bucket.strikes == 0


def test_refill_works_when_the_clock_starts_at_zero() -> None:
    bucket = TokenBucket(rate=1.0, burst=1.0)
    assert bucket.take(0.0) is True
    assert bucket.take(1.0) is True
