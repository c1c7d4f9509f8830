"""The wake-up service (:class:`actors.trio.alarms.Alarms`), on trio's MockClock.

``mock_clock`` moves only when a test jumps it, so "not before" is checked by jumping to just
short of a deadline; ``autojump_clock`` jumps straight to the next deadline, so every wake-up is
checked to land exactly on its time. Nothing here sleeps in real time.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from actors.trio.alarms import Alarms
from actors.trio.mailbox import Mailbox

TINY = 2.0**-20
"""Less than a microsecond, and exact in binary: times built with it compare exactly."""


class Sleeper:
    """Notes, by trio's clock, every wake-up it is given (and calls ``then``, if set)."""

    def __init__(self, name: str, log: list[tuple[str, float]] | None = None) -> None:
        self.name = name
        self.log: list[tuple[str, float]] = [] if log is None else log
        self.woken_at: list[float] = []
        self.then: Callable[[], None] | None = None

    def wake(self) -> None:
        now = trio.current_time()
        self.woken_at.append(now)
        self.log.append((self.name, now))
        if self.then is not None:
            self.then()


@asynccontextmanager
async def running(alarms: Alarms) -> AsyncIterator[Alarms]:
    async with trio.open_nursery() as nursery:
        await nursery.start(alarms.run)
        yield alarms
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("batch", [0, -1])
def test_a_batch_below_one_is_refused(batch: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        Alarms(batch)


def test_a_batch_of_one_is_fine() -> None:
    assert Alarms(1).batch == 1


async def test_a_sleeper_is_woken_at_its_time_and_not_before(
    mock_clock: trio.testing.MockClock,
) -> None:
    sleeper, neighbour, far = Sleeper("s"), Sleeper("neighbour"), Sleeper("far")
    async with running(Alarms()) as alarms:
        start = trio.current_time()
        alarms.wake_at(start + 10.0, sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert sleeper.woken_at == []

        mock_clock.jump(9.5)
        await trio.testing.wait_all_tasks_blocked()
        assert sleeper.woken_at == []

        # The task looks at its heap whenever a request comes, and whenever anyone else's
        # wake-up is due: neither wakes the sleeper early.
        alarms.wake_at(start + 1000.0, far)
        alarms.wake_at(start + 10.0 - TINY, neighbour)
        await trio.testing.wait_all_tasks_blocked()
        assert sleeper.woken_at == []

        mock_clock.jump(0.5 - TINY)
        await trio.testing.wait_all_tasks_blocked()
        assert neighbour.woken_at == [start + 10.0 - TINY]
        assert sleeper.woken_at == []

        mock_clock.jump(TINY)
        await trio.testing.wait_all_tasks_blocked()
        assert sleeper.woken_at == [start + 10.0]

        # Once only.
        mock_clock.jump(100.0)
        await trio.testing.wait_all_tasks_blocked()
        assert sleeper.woken_at == [start + 10.0]
        assert far.woken_at == []
        assert alarms.pending == 1


async def test_sleepers_are_woken_in_deadline_order_ties_in_request_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    requests = [
        ("late", 5.0),
        ("tie-c", 2.0),
        ("first", 1.0),
        ("tie-a", 2.0),
        ("middle", 3.0),
        ("tie-e", 2.0),
        ("tie-b", 2.0),
    ]
    async with running(Alarms()) as alarms:
        for name, offset in requests:
            alarms.wake_at(start + offset, Sleeper(name, log))
        await trio.sleep(10.0)  # On the autojump clock: no real time passes.

    assert log == [
        ("first", start + 1.0),
        ("tie-c", start + 2.0),
        ("tie-a", start + 2.0),
        ("tie-e", start + 2.0),
        ("tie-b", start + 2.0),
        ("middle", start + 3.0),
        ("late", start + 5.0),
    ]


async def test_requests_made_one_by_one_while_it_waits_still_wake_in_deadline_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each request reaches the task separately (it is already waiting on an earlier
    deadline): a new earliest deadline shortens the wait, a later one does not delay it."""
    log: list[tuple[str, float]] = []
    start = trio.current_time()
    async with running(Alarms()) as alarms:
        for name, offset in [("c", 30.0), ("a", 10.0), ("d", 40.0), ("b", 20.0)]:
            alarms.wake_at(start + offset, Sleeper(name, log))
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(50.0)
    assert log == [
        ("a", start + 10.0),
        ("b", start + 20.0),
        ("c", start + 30.0),
        ("d", start + 40.0),
    ]


class Passes(trio.abc.Instrument):
    """Marks in ``log`` where each pass of trio's scheduler begins (every pass waits for I/O,
    for no time at all when a task is runnable, before it runs the tasks due)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def after_io_wait(self, timeout: float) -> None:
        self.log.append("|")


@pytest.mark.parametrize(
    ("batch", "runs"),
    [(3, [3, 3, 1]), (1, [1] * 7), (7, [7]), (64, [7])],
)
async def test_a_crowd_of_due_sleepers_is_woken_a_batch_per_scheduler_pass(
    mock_clock: trio.testing.MockClock, batch: int, runs: list[int]
) -> None:
    """Per pass of the scheduler, at most ``batch`` wake-ups ("w"), and every other task that
    is ready (this one, "m") gets its turn in the same pass."""
    log: list[str] = []

    class Counted:
        def wake(self) -> None:
            log.append("w")

    async with running(Alarms(batch)) as alarms:
        deadline = trio.current_time() + 1.0
        for _ in range(7):
            alarms.wake_at(deadline, Counted())
        await trio.testing.wait_all_tasks_blocked()
        assert alarms.pending == 7

        passes = Passes(log)
        trio.lowlevel.add_instrument(passes)
        try:
            mock_clock.jump(1.0)
            for _ in range(50):  # Bounded: a lost wake-up fails here rather than hangs.
                log.append("m")
                if log.count("w") == 7:
                    break
                await trio.lowlevel.checkpoint()
        finally:
            trio.lowlevel.remove_instrument(passes)

    assert log.count("w") == 7
    crowded = [run for run in "".join(log).split("|") if "w" in run]
    assert [run.count("w") for run in crowded] == runs
    assert all("m" in run for run in crowded)


async def test_a_sleeper_that_asks_twice_is_woken_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sleeper = Sleeper("s")
    async with running(Alarms()) as alarms:
        start = trio.current_time()
        alarms.wake_at(start + 5.0, sleeper)
        alarms.wake_at(start + 5.0, sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert alarms.pending == 2
        await trio.sleep(10.0)
        assert sleeper.woken_at == [start + 5.0, start + 5.0]
        assert alarms.pending == 0


async def test_an_earlier_then_a_later_wake_up_are_both_delivered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sleeper = Sleeper("s")
    async with running(Alarms()) as alarms:
        start = trio.current_time()
        alarms.wake_at(start + 5.0, sleeper)
        alarms.wake_at(start + 8.0, sleeper)
        # And a later one first, then an earlier one.
        alarms.wake_at(start + 7.0, sleeper)
        alarms.wake_at(start + 6.0, sleeper)
        await trio.sleep(10.0)
        assert sleeper.woken_at == [start + 5.0, start + 6.0, start + 7.0, start + 8.0]


async def test_pending_is_the_number_of_wake_ups_still_to_come(
    mock_clock: trio.testing.MockClock,
) -> None:
    sleeper = Sleeper("s")
    alarms = Alarms()
    assert alarms.pending == 0
    async with running(alarms):
        start = trio.current_time()
        for offset in (1.0, 2.0, 2.0, 3.0):
            alarms.wake_at(start + offset, sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert alarms.pending == 4

        expected = {1.0: 3, 2.0: 1, 3.0: 0}
        for offset, left in expected.items():
            mock_clock.jump(start + offset - trio.current_time())
            await trio.testing.wait_all_tasks_blocked()
            assert alarms.pending == left

        alarms.wake_at(trio.current_time() + 1.0, sleeper)
        await trio.testing.wait_all_tasks_blocked()
        assert alarms.pending == 1
    assert len(sleeper.woken_at) == 4


async def test_a_wake_up_already_due_fires_without_the_clock_moving(
    mock_clock: trio.testing.MockClock,
) -> None:
    past, later = Sleeper("past"), Sleeper("later")
    async with running(Alarms()) as alarms:
        mock_clock.jump(100.0)
        now = trio.current_time()
        # The task is waiting for requests, with nothing to wake.
        alarms.wake_at(now - 60.0, past)
        await trio.testing.wait_all_tasks_blocked()
        assert past.woken_at == [now]

        # The task is waiting on a later deadline when the request for the past comes.
        alarms.wake_at(now + 50.0, later)
        await trio.testing.wait_all_tasks_blocked()
        alarms.wake_at(now - 30.0, past)
        await trio.testing.wait_all_tasks_blocked()
        assert past.woken_at == [now, now]
        assert later.woken_at == []

        # Exactly now counts as due as well.
        alarms.wake_at(now, past)
        await trio.testing.wait_all_tasks_blocked()
        assert past.woken_at == [now, now, now]
        assert later.woken_at == []
        assert alarms.pending == 1


async def test_a_sleeper_may_ask_again_from_inside_wake(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The actor's wake() runs in the alarms task; asking from there must neither be lost
    nor fire before its time."""
    alarms = Alarms()
    sleeper = Sleeper("s")
    asks = iter([3.0, 0.0])

    def ask_again() -> None:
        step = next(asks, None)
        if step is not None:
            alarms.wake_at(trio.current_time() + step, sleeper)

    sleeper.then = ask_again
    async with running(alarms):
        start = trio.current_time()
        alarms.wake_at(start + 2.0, sleeper)
        await trio.sleep(10.0)
    assert sleeper.woken_at == [start + 2.0, start + 5.0, start + 5.0]


class LazyActor:
    """The consumer side, as :class:`actors.trio.conversation.ConversationActor` does it: ask for a
    wake-up only when the deadline comes earlier than the one already asked for; a wake-up is
    only a hint to look at the deadline, and one that comes early (or stale) is answered by
    asking again for what remains."""

    def __init__(self, alarms: Alarms, deadline: float) -> None:
        self.alarms = alarms
        self.deadline = deadline
        self.inbox: Mailbox[str] = Mailbox()
        self.armed = math.inf
        self.wakes: list[float] = []
        self.fired: list[float] = []

    def wake(self) -> None:
        self.wakes.append(trio.current_time())
        self.armed = math.inf
        self.inbox.put("alarm")

    def arm(self) -> None:
        if self.deadline < self.armed:
            self.armed = self.deadline
            self.alarms.wake_at(self.deadline, self)

    def move_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        self.inbox.put("activity")

    async def serve(self) -> None:
        while True:
            self.arm()
            for item in await self.inbox.take():
                if item == "alarm" and self.deadline <= trio.current_time():
                    self.fired.append(trio.current_time())
                    self.deadline = math.inf


@asynccontextmanager
async def serving_lazy_actor(deadline_in: float) -> AsyncIterator[tuple[LazyActor, float]]:
    """A :class:`LazyActor` with its own running :class:`Alarms` and a deadline
    ``deadline_in`` seconds away, served until the block ends: the actor and the time it
    started at."""
    alarms = Alarms()
    start = trio.current_time()
    actor = LazyActor(alarms, start + deadline_in)
    async with running(alarms), trio.open_nursery() as nursery:
        nursery.start_soon(actor.serve)
        yield actor, start
        nursery.cancel_scope.cancel()


async def test_a_deadline_moved_later_fires_once_at_the_new_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving_lazy_actor(10.0) as (actor, start):
        await trio.sleep(4.0)
        actor.move_deadline(start + 14.0)
        await trio.sleep(4.0)
        actor.move_deadline(start + 18.0)
        await trio.sleep(20.0)

    # Activity asked for nothing: the early wake-up at 10 found the deadline moved and asked
    # for the rest, which came at 18.
    assert actor.wakes == [start + 10.0, start + 18.0]
    assert actor.fired == [start + 18.0]
    assert actor.alarms.pending == 0


async def test_a_stale_wake_up_after_an_earlier_deadline_fired_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving_lazy_actor(10.0) as (actor, start):
        await trio.sleep(1.0)
        actor.move_deadline(start + 6.0)  # Earlier: a second request, the first goes stale.
        await trio.testing.wait_all_tasks_blocked()
        assert actor.alarms.pending == 2
        await trio.sleep(20.0)

    # Both wake-ups were delivered; only the one at the deadline did anything.
    assert actor.wakes == [start + 6.0, start + 10.0]
    assert actor.fired == [start + 6.0]
    assert actor.alarms.pending == 0
