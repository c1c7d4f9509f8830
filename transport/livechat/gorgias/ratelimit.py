"""Staying inside a platform's API rate limit: a token bucket on trio's clock.

Gorgias limits an API key to 40 requests per 20 seconds with a leaky bucket (a burst of 40,
then 2 a second); a request over it is answered 429 with ``Retry-after``. A
:class:`TokenBucket` with the same numbers, shared by every call one bot makes, keeps those
calls inside it, so a burst of user messages is slowed down here instead of refused there.

Requests are counted where they leave, the platform counts them where they arrive: two
requests sent apart can arrive together. So the bucket keeps ``reserve`` requests of the burst
unused, which covers any bunching shorter than ``reserve`` requests' worth of refill (a
second, at Gorgias's rate). When the platform says how much of its limit is used (Gorgias's
``X-Gorgias-Account-Api-Call-Limit: 10/40``, which also counts other clients of the account),
:meth:`TokenBucket.observe` lowers what is left to match.
"""

from __future__ import annotations

import trio


class TokenBucket:
    """``requests`` per ``window`` seconds, at most ``requests - reserve`` at once."""

    def __init__(self, requests: int, window: float, *, reserve: int = 2) -> None:
        if requests < 1 or window <= 0:
            raise ValueError("a rate limit needs at least one request per positive window")
        self.limit = requests
        self.capacity = float(max(1, requests - reserve))
        self.rate = requests / window
        self._tokens = self.capacity
        self._at: float | None = None
        self._lock = trio.Lock()
        #: Seconds spent waiting for a token, for tests and logs.
        self.waited = 0.0

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def take(self) -> None:
        """Wait until one more request fits, then count it. Waiters go in arrival order."""
        async with self._lock:
            now = trio.current_time()
            self._refill(now)
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                self.waited += wait
                await trio.sleep(wait)
                self._refill(trio.current_time())
            self._tokens -= 1.0

    def observe(self, used: int, limit: int) -> None:
        """The platform counts ``used`` of its ``limit`` as taken now: never assume more
        is left than that (minus the reserve)."""
        self._refill(trio.current_time())
        left = min(limit, self.limit) - used - (self.limit - self.capacity)
        self._tokens = min(self._tokens, float(left))


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """``"10/40"`` as ``(10, 40)``; ``None`` for anything else."""
    if value is None:
        return None
    used, _, limit = value.strip().partition("/")
    if not (used.strip().isdigit() and limit.strip().isdigit()):
        return None
    return int(used), int(limit)
