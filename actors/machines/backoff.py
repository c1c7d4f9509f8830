"""Capped exponential backoff for whatever the core retries: a refused store write, a backend
call that raised, a bot that cannot be reached with a session ending.

Retrying at once turns one refused write into thousands a second and as many log lines, so
every retry waits twice as long as the one before, up to a cap, and a failing thing is
reported once when it starts failing and once when it recovers, not once per attempt.
"""

from __future__ import annotations


class Backoff:
    """When to try again after failures in a row. ``due`` is in the caller's time (trio's).

    :meth:`failed` and :meth:`succeeded` return whether the state changed (healthy to failing
    or back), which is when the caller logs.
    """

    __slots__ = ("cap", "delay", "due", "first")

    def __init__(self, first: float = 0.1, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = 0.0
        self.due = 0.0

    @property
    def failing(self) -> bool:
        return self.delay > 0.0

    def failed(self, now: float) -> bool:
        """Record a failure at ``now``: the next try is due after the next delay."""
        started = not self.failing
        self.delay = self.first if started else min(self.delay * 2, self.cap)
        self.due = now + self.delay
        return started

    def succeeded(self) -> bool:
        recovered = self.failing
        self.delay = 0.0
        self.due = 0.0
        return recovered
