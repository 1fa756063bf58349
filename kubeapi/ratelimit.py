"""Client-side pacing of API writes: a token bucket, as client-go's ``QPS`` and
``Burst`` (``flowcontrol.NewTokenBucketRateLimiter``), and the pause a 429
asks for.

The bucket itself is pure (time is passed in); :class:`WritePacer` waits on the
event loop's clock.  Background writers take a token before each request, so a
new leader's pass over every GPU of a large cluster reaches the API server at
``qps`` and not as fast as the connections allow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

# The longest pause a 429's retryAfterSeconds is taken for: a wrong or hostile answer
# must not stop the writer for hours.
MAX_RETRY_AFTER_S = 60.0
DEFAULT_RETRY_AFTER_S = 1.0  # a 429 that names no wait (client-go waits 1 s too)


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens at most, refilled at ``qps`` per second.  :meth:`reserve`
    takes one token now or in the future (it may go below zero, as golang.org/x/time/rate's
    reservations do), so concurrent takers are served in the order they asked."""

    qps: float
    burst: int
    tokens: float = field(init=False)
    last: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.qps > 0 or self.burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, not {self.qps} and {self.burst}")
        self.tokens = float(self.burst)

    def reserve(self, now: float) -> float:
        """Take one token; returns the seconds to wait before using it (0: now)."""
        if self.last is not None and now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.qps)
        if self.last is None or now > self.last:
            self.last = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.qps


def retry_after(seconds: object) -> float:
    """The pause a 429 asks for: its ``retryAfterSeconds`` if sane, else the default, at most the cap."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        return DEFAULT_RETRY_AFTER_S
    return min(float(seconds), MAX_RETRY_AFTER_S)


class WritePacer:
    """Waits, on the running loop's clock, for a token and for any pause a 429 asked for."""

    def __init__(self, qps: float, burst: int) -> None:
        self.bucket = TokenBucket(qps, burst)
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every write back ``seconds`` from now (the API server said 429)."""
        now = asyncio.get_running_loop().time()
        self.paused_until = max(self.paused_until, now + seconds)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.bucket.reserve(loop.time())
        if delay > 0:
            await asyncio.sleep(delay)
        # Checked after the token: a 429 that came while this writer waited holds it too.
        while (held := self.paused_until - loop.time()) > 0:
            await asyncio.sleep(held)
