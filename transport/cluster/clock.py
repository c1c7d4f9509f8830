"""The engine's clock on a node: the core's wall time follows the engine's ``TIME``.

Deadlines are decided by the engine's clock (``commit.lua``), and every node stamps what it
stores with its core's clock. Were that the node's own clock, a node running ahead would
have its expiries refused (``EARLY``) and retried, one running behind would expire late, and
a session stamped by one node and restored by another would ring by the first one's clock.
So a cluster node's core reads the engine's clock: trio's monotonic clock plus an offset
measured against the engine's ``TIME`` at start and with every lease round, each sample
taken at the middle of its round trip (so off by at most half of it) and smoothed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from actors.trio.clock import Clock

#: Weight of a new sample in the smoothed offset: a few rounds to follow a step, while one
#: sample delayed on a loaded machine moves it by a fifth of its error.
SMOOTHING = 0.2
#: A sample whose round trip took longer than this is dropped: its error (half the round
#: trip) would be larger than what the offset needs to be good to...
MAX_ROUND_TRIP = 0.25
#: ...unless this many in a row were (an engine that far away is measured all the same).
MAX_DROPPED_IN_A_ROW = 5
#: An offset this far from the sample is set at once rather than smoothed (the engine's
#: clock stepped, or a failover moved the engine to a machine whose clock differs).
STEP = 1.0


class EngineClock(Clock):
    """Wall time read from the engine's clock: ``trio.current_time() + offset``.

    ``local`` is the node's own wall clock, used only until the first sample (a store
    opened without measuring, as some tests do)."""

    def __init__(self, local: Callable[[], float] | None = None) -> None:
        super().__init__()
        self._local = local or (lambda: time.time())
        self.offset: float | None = None
        #: Samples taken and dropped, for /healthz.
        self.samples = 0
        self.dropped = 0
        self._in_a_row = 0

    def sample(self, engine_seconds: float, sent: float, received: float) -> None:
        """The engine read ``engine_seconds`` between ``sent`` and ``received`` (trio's
        clock): the engine's time at the middle of that round trip."""
        slow = received - sent > MAX_ROUND_TRIP
        if slow and self.offset is not None and self._in_a_row < MAX_DROPPED_IN_A_ROW:
            self.dropped += 1
            self._in_a_row += 1
            return
        self._in_a_row = 0
        measured = engine_seconds - (sent + received) / 2
        if self.offset is None or abs(measured - self.offset) > STEP:
            self.offset = measured
        else:
            self.offset += (measured - self.offset) * SMOOTHING
        self.samples += 1

    def start(self) -> None:
        if self.offset is None:
            self.offset = self._local() - trio.current_time()

    def now(self) -> float:
        if self.offset is None:
            return self._local()
        return trio.current_time() + self.offset

    def to_trio(self, wall: float) -> float:
        if self.offset is None:
            return wall - self._local() + trio.current_time()
        return wall - self.offset

    def skew(self) -> float | None:
        """How far the engine's clock is ahead of this node's own (seconds), for /healthz."""
        return None if self.offset is None else self.now() - self._local()
