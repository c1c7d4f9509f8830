"""The conversation's inbox (:class:`actors.trio.mailbox.Mailbox`): one reader, writers that never
wait. Nothing here sleeps: a test waits for the other tasks to block, never for time to pass."""

from __future__ import annotations

import trio
import trio.testing

from actors.trio.mailbox import Mailbox


class Reader:
    """A task that takes from a mailbox until cancelled, keeping every batch it got."""

    def __init__(self, mailbox: Mailbox[str]) -> None:
        self.mailbox = mailbox
        self.batches: list[list[str]] = []

    async def run(self) -> None:
        while True:
            self.batches.append(await self.mailbox.take())


async def test_puts_before_the_first_take_all_come_out_of_it_in_order() -> None:
    mailbox: Mailbox[str] = Mailbox()
    for item in ("a", "b", "c", "d"):
        mailbox.put(item)
    assert len(mailbox) == 4

    assert await mailbox.take() == ["a", "b", "c", "d"]
    assert len(mailbox) == 0
    assert mailbox.take_nowait() == []


async def test_take_waits_for_a_put_and_wakes_on_it() -> None:
    mailbox: Mailbox[str] = Mailbox()
    reader = Reader(mailbox)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == []

        mailbox.put("hello")
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == [["hello"]]
        assert len(mailbox) == 0

        # Back to waiting: nothing more comes out until something is put.
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == [["hello"]]

        mailbox.put("again")
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == [["hello"], ["again"]]
        nursery.cancel_scope.cancel()


async def test_puts_in_a_row_wake_the_reader_once_and_it_gets_them_all() -> None:
    """The second put comes while the reader is woken but not yet running: it must be neither
    lost nor a second wake-up of the same task (trio would fail on that)."""
    mailbox: Mailbox[str] = Mailbox()
    reader = Reader(mailbox)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        await trio.testing.wait_all_tasks_blocked()

        mailbox.put("a")
        mailbox.put("b")
        mailbox.put("c")
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == [["a", "b", "c"]]
        nursery.cancel_scope.cancel()


async def test_take_with_items_waiting_is_still_a_checkpoint() -> None:
    mailbox: Mailbox[str] = Mailbox()
    mailbox.put("waiting")
    with trio.testing.assert_checkpoints():
        assert await mailbox.take() == ["waiting"]

    # A cancel point too: a take in a cancelled scope takes nothing, even with items waiting.
    mailbox.put("kept")
    with trio.CancelScope() as scope:
        scope.cancel()
        await mailbox.take()
    assert scope.cancelled_caught
    assert mailbox.take_nowait() == ["kept"]


async def test_a_reader_never_short_of_work_still_lets_another_task_run() -> None:
    mailbox: Mailbox[int] = Mailbox()
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        # The reader always finds an item waiting and never awaits anything but take: every
        # take is one scheduler pass, and the other task runs once in each.
        for n in range(10):
            mailbox.put(n)
            assert await mailbox.take() == [n]
        assert ticks >= 9
        nursery.cancel_scope.cancel()


async def test_a_cancelled_take_leaves_the_mailbox_usable_and_loses_nothing() -> None:
    mailbox: Mailbox[str] = Mailbox()
    log: list[str] = []
    cancel = trio.CancelScope()
    carry_on = trio.Event()
    got: list[str] = []

    async def reader() -> None:
        with cancel:
            await mailbox.take()
        log.append("take cancelled")
        # Parked on something else entirely: a put must not wake it from here.
        await carry_on.wait()
        log.append("carried on")
        got.extend(await mailbox.take())
        log.append("took")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert log == []

        cancel.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert cancel.cancelled_caught
        assert log == ["take cancelled"]

        mailbox.put("after the cancel")
        mailbox.put("and another")
        await trio.testing.wait_all_tasks_blocked()
        # Had the put rescheduled the task that once waited in take, the task would have
        # been woken out of carry_on.wait() (and trio would fail when the event is set).
        assert log == ["take cancelled"]
        assert len(mailbox) == 2

        carry_on.set()
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["take cancelled", "carried on", "took"]
        assert got == ["after the cancel", "and another"]
        assert len(mailbox) == 0


async def test_a_take_cancelled_while_waiting_then_taken_again_wakes_on_the_next_put() -> None:
    mailbox: Mailbox[str] = Mailbox()
    reader = Reader(mailbox)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            scope.cancel()
            await mailbox.take()
        assert scope.cancelled_caught

        # A different task becomes the reader: the put wakes it, not the cancelled one.
        nursery.start_soon(reader.run)
        await trio.testing.wait_all_tasks_blocked()
        mailbox.put("x")
        await trio.testing.wait_all_tasks_blocked()
        assert reader.batches == [["x"]]
        nursery.cancel_scope.cancel()


async def test_requeue_puts_items_back_first_in_line_in_their_order() -> None:
    mailbox: Mailbox[str] = Mailbox()
    for item in ("a", "b", "c"):
        mailbox.put(item)
    batch = await mailbox.take()
    assert batch == ["a", "b", "c"]

    # "a" was handled; while handling it more came in; then handling "b" failed.
    mailbox.put("d")
    mailbox.put("e")
    unhandled = batch[1:]
    mailbox.requeue(unhandled)
    # The caller letting go of its list does not touch what was put back.
    unhandled.clear()
    batch.clear()

    assert len(mailbox) == 4
    assert await mailbox.take() == ["b", "c", "d", "e"]


async def test_requeue_into_an_empty_mailbox_and_requeue_of_nothing() -> None:
    mailbox: Mailbox[str] = Mailbox()
    mailbox.requeue([])
    assert len(mailbox) == 0

    mailbox.requeue(["x", "y"])
    assert len(mailbox) == 2
    mailbox.requeue([])
    mailbox.put("z")
    assert mailbox.take_nowait() == ["x", "y", "z"]


def test_take_nowait_on_an_empty_mailbox_returns_an_empty_list() -> None:
    mailbox: Mailbox[str] = Mailbox()
    assert mailbox.take_nowait() == []
    assert len(mailbox) == 0

    mailbox.put("a")
    mailbox.put("b")
    assert mailbox.take_nowait() == ["a", "b"]
    assert mailbox.take_nowait() == []


def test_len_counts_what_is_waiting() -> None:
    mailbox: Mailbox[int] = Mailbox()
    assert len(mailbox) == 0
    assert not mailbox
    for n in range(1, 6):
        mailbox.put(n)
        assert len(mailbox) == n
    assert mailbox
    mailbox.take_nowait()
    assert len(mailbox) == 0
    mailbox.requeue([1, 2])
    assert len(mailbox) == 2


def test_the_list_take_nowait_returns_on_items_is_the_callers() -> None:
    mailbox: Mailbox[str] = Mailbox()
    mailbox.put("a")
    taken = mailbox.take_nowait()
    taken.append("not for the mailbox")
    assert len(mailbox) == 0
    mailbox.put("b")
    assert mailbox.take_nowait() == ["b"]


def test_the_list_take_nowait_returns_when_empty_is_the_callers() -> None:
    mailbox: Mailbox[str] = Mailbox()
    taken = mailbox.take_nowait()
    assert taken == []
    taken.append("not for the mailbox")
    assert len(mailbox) == 0
