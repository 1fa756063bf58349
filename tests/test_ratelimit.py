"""The token bucket that paces background API writes (client-go's QPS and burst), and the
pause a 429 asks for: pure, time passed in."""

from __future__ import annotations

import asyncio

import pytest

from tfsched.kubeapi.client import _api_error
from tfsched.kubeapi.ratelimit import (
    DEFAULT_RETRY_AFTER_S,
    MAX_RETRY_AFTER_S,
    TokenBucket,
    WritePacer,
    retry_after,
)


def test_a_burst_goes_at_once_and_the_rest_at_qps():
    bucket = TokenBucket(qps=10, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # Taken at the same instant, each later one waits one more tenth of a second: in order.
    assert [round(bucket.reserve(0.0), 9) for _ in range(3)] == [0.1, 0.2, 0.3]


def test_tokens_refill_with_time_up_to_the_burst_only():
    bucket = TokenBucket(qps=10, burst=3)
    for _ in range(3):
        bucket.reserve(0.0)
    assert bucket.reserve(0.25) == 0.0  # 2.5 tokens back, one taken
    assert bucket.reserve(0.25) == 0.0
    assert bucket.reserve(0.25) == pytest.approx(0.05)
    bucket = TokenBucket(qps=10, burst=3)
    bucket.reserve(0.0)
    # An hour idle refills to the burst, not to 36,000 tokens.
    assert [bucket.reserve(3600.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(3600.0) == pytest.approx(0.1)


def test_a_clock_that_goes_back_neither_refills_nor_breaks_the_bucket():
    bucket = TokenBucket(qps=1, burst=1)
    assert bucket.reserve(10.0) == 0.0
    assert bucket.reserve(5.0) == pytest.approx(1.0)  # the earlier reading counts: no refill
    assert bucket.reserve(12.0) == pytest.approx(0.0)


@pytest.mark.parametrize(("qps", "burst"), [(0, 1), (-1, 5), (float("nan"), 5), (1, 0)])
def test_a_bucket_that_could_never_give_a_token_is_refused(qps, burst):
    with pytest.raises(ValueError, match="qps > 0 and burst >= 1"):
        TokenBucket(qps=qps, burst=burst)


@pytest.mark.parametrize(
    ("sent", "taken"),
    [(3, 3.0), (0.5, 0.5), (0, DEFAULT_RETRY_AFTER_S), (-4, DEFAULT_RETRY_AFTER_S), (None, DEFAULT_RETRY_AFTER_S),
     ("10", DEFAULT_RETRY_AFTER_S), (True, DEFAULT_RETRY_AFTER_S), (float("nan"), DEFAULT_RETRY_AFTER_S),
     (86_400, MAX_RETRY_AFTER_S), (float("inf"), MAX_RETRY_AFTER_S)],
)  # fmt: skip
def test_a_429s_retry_after_is_taken_only_when_sane_and_capped(sent, taken):
    assert retry_after(sent) == taken


def test_the_status_of_a_429_carries_its_retry_after():
    body = (
        b'{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Too many requests, please try again'
        b' later.","reason":"TooManyRequests","details":{"retryAfterSeconds":4},"code":429}'
    )
    error = _api_error(429, body)
    assert (error.status, error.reason, error.retry_after_s) == (429, "TooManyRequests", 4)
    assert retry_after(_api_error(429, b'{"reason":"TooManyRequests","details":"nonsense"}').retry_after_s) == 1.0
    assert _api_error(500, b"not json").retry_after_s is None


async def test_the_pacer_waits_for_its_token_and_for_a_pause():
    loop = asyncio.get_running_loop()
    pacer = WritePacer(qps=50, burst=2)
    start = loop.time()
    for _ in range(4):
        await pacer.wait()
    assert loop.time() - start >= 2 / 50 - 0.002  # two at once, two more at 50 a second
    pacer.pause(0.1)
    paused = loop.time()
    await pacer.wait()
    assert loop.time() - paused >= 0.1 - 0.002
