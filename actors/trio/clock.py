"""Wall-clock time that moves with trio's clock.

The lifecycle works in wall-clock seconds, because deadlines outlive the process: the store
keeps them as absolute times. The actors sleep on trio's clock. :class:`Clock` ties the two
together at one instant, so a test's ``MockClock`` drives wall time too, and a 60-minute
expiry can be checked to the millisecond without waiting for it.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Wall time anchored to trio's clock when :meth:`start` is called inside ``trio.run``."""

    def __init__(self, wall_at_start: float | None = None) -> None:
        self._wall_at_start = wall_at_start
        self._wall0 = 0.0
        self._trio0 = 0.0

    def start(self) -> None:
        self._wall0 = time.time() if self._wall_at_start is None else self._wall_at_start
        self._trio0 = trio.current_time()

    def now(self) -> float:
        return self._wall0 + (trio.current_time() - self._trio0)

    def to_trio(self, wall: float) -> float:
        """The trio-clock time at which the wall clock will read ``wall``."""
        return wall - self._wall0 + self._trio0
