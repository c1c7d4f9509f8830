"""How long a waiting user may still wait: an estimate from the pace of recent pickups.

Pure like the other machines: it is told each pickup with its time and asked for an estimate
with the current time. Per bot it keeps at most ``window`` pickup times, and only those of the
last ``horizon`` seconds count, so memory is bounded and an old burst of pickups does not
promise a short wait today.

The estimate for the user at ``position`` (1 is next) is ``position`` times the time between
pickups: the mean gap between the recent pickups, or the time since the last one when that is
already longer (nobody has picked anyone up for a while, so the mean would flatter). With fewer
than ``min_pickups`` recent pickups there is no estimate (``None``): too little to go on.
"""

from __future__ import annotations

from collections import deque

import attrs

WINDOW = 20
"""Recent pickups kept per bot."""

HORIZON = 3600.0
"""Seconds a pickup counts for the estimate."""

MIN_PICKUPS = 2
"""Pickups needed within the horizon before anything is estimated (one gap at least)."""


@attrs.define
class PickupPace:
    """The recent pickup times of each bot's queue, and the wait they suggest."""

    window: int = WINDOW
    horizon: float = HORIZON
    min_pickups: int = MIN_PICKUPS
    _times: dict[str, deque[float]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.window < 2 or self.min_pickups < 2 or self.min_pickups > self.window:
            raise ValueError("a pace needs 2 <= min_pickups <= window")
        if self.horizon <= 0:
            raise ValueError("a pace needs a positive horizon")

    def picked_up(self, bot_id: str, now: float) -> None:
        """An agent took a session of ``bot_id`` out of the queue at ``now``."""
        times = self._times.get(bot_id)
        if times is None:
            times = self._times[bot_id] = deque(maxlen=self.window)
        times.append(now)

    def gap(self, bot_id: str, now: float) -> float | None:
        """The expected time between two pickups of ``bot_id``, or ``None`` without enough
        recent pickups."""
        times = self._times.get(bot_id)
        if not times:
            return None
        while times and times[0] < now - self.horizon:
            times.popleft()
        if len(times) < self.min_pickups:
            return None
        first, last = min(times), max(times)
        mean = (last - first) / (len(times) - 1)
        return max(mean, now - last, 0.0)

    def estimate(self, bot_id: str, position: int, now: float) -> float | None:
        """Seconds the session at ``position`` (1 is next) may still wait, rounded to the
        second; ``None`` when unknown."""
        gap = self.gap(bot_id, now)
        if gap is None or position < 1:
            return None
        return float(round(position * gap))
