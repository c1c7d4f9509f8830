"""One task that wakes conversations at their deadlines, a bounded number per scheduler tick.

Why not a cancel scope per conversation: a scope with a deadline must be entered around the
wait, so an actor pays a scope (and an entry on trio's deadline heap) on every wake-up, and when
10,000 sessions reach the same deadline trio wakes all of them in one scheduler batch: nothing
else (sockets, other timers) runs until all 10,000 expiries are done, which takes about half a
second. Adding jitter to each deadline would hide that, but a session would no longer expire
at its deadline.

Instead each actor asks this task to wake it (``wake_at``, through a channel, so no state is
shared) only when its next deadline comes *earlier* than the one it already asked for; a
deadline that moved later (activity) is found out when the early wake-up arrives, and the
actor asks again for the remainder (the lazy re-arm). The task keeps one heap of wake-ups
and, when they come due, wakes at most ``batch`` actors before it yields to the scheduler.
So every expiry still fires at its deadline or as soon after as the CPU gets to it, in
deadline order, while a crowd of simultaneous expiries is spread over several scheduler
ticks: the longest stall is the cost of one batch, not of the whole crowd.

Waking a batch per tick is not enough on its own: an expiry waits for its store commit, and
a group commit answers every waiting conversation at once, so hundreds of woken expiries
would finish (deliveries, bot events, sockets) in one scheduler tick, which is the stall
again, further down. So an expiry also holds one of ``batch`` slots (:attr:`Alarms.expiries`)
from its lifecycle step until its effects are carried out: at most ``batch`` are in flight,
each tick finishes at most ``batch`` of them, and the next ones start as slots free up, in
deadline order (the slots are handed out first come, first served).
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio
import trio.lowlevel


class Sleeper(Protocol):
    def wake(self) -> None: ...


class Alarms:
    """The wake-up service of one switchboard."""

    def __init__(self, batch: int = 64) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.batch = batch
        #: Held by a conversation while it expires (module doc): at most ``batch`` at once.
        self.expiries = trio.CapacityLimiter(batch)
        self._send, self._receive = trio.open_memory_channel[tuple[float, Sleeper]](math.inf)
        self._order = itertools.count()
        self.pending = 0

    def wake_at(self, when: float, sleeper: Sleeper) -> None:
        """Call ``sleeper.wake()`` at trio time ``when`` (or as soon after as possible)."""
        self._send.send_nowait((when, sleeper))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        heap: list[tuple[float, int, Sleeper]] = []
        receive = self._receive
        order = self._order
        task_status.started()
        while True:
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                when, sleeper = await receive.receive()
                heapq.heappush(heap, (when, next(order), sleeper))
            while True:
                try:
                    when, sleeper = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                heapq.heappush(heap, (when, next(order), sleeper))
            woken = 0
            while heap and heap[0][0] <= trio.current_time():
                heapq.heappop(heap)[2].wake()
                woken += 1
                if woken == self.batch:
                    # Let the woken actors (and everyone else) run before waking more.
                    woken = 0
                    await trio.lowlevel.checkpoint()
            self.pending = len(heap)
