"""A conversation's inbox: a list and at most one parked task.

A trio memory channel costs about 2.5 KB (two channel objects, a state with two ordered dicts
and a deque) and a scheduler pass on every ``receive``. A conversation has exactly one reader
(its actor) and writers that never wait (``put`` never blocks), so a plain list and trio's
low-level park/reschedule do the same job in about 100 bytes. Only the actor's task may call
:meth:`take`.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")

_EMPTY: tuple[()] = ()


class Mailbox(Generic[T]):
    __slots__ = ("_items", "_reader")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._reader: trio.lowlevel.Task | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        """Add ``item``; wakes the reader if it is waiting. Never blocks."""
        self._items.append(item)
        reader = self._reader
        if reader is not None:
            self._reader = None
            trio.lowlevel.reschedule(reader)

    def requeue(self, items: list[T]) -> None:
        """Put back, first in line, items that were taken but not handled."""
        if items:
            self._items[:0] = items

    def take_nowait(self) -> list[T]:
        """Everything waiting, oldest first (possibly nothing)."""
        items = self._items
        if not items:
            return []
        self._items = []
        return items

    async def take(self) -> list[T]:
        """Everything waiting, oldest first; waits for at least one item. Always a
        checkpoint, so a conversation that is never short of work still lets others run."""
        if self._items:
            await trio.lowlevel.checkpoint()
        while not self._items:
            self._reader = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        return self.take_nowait()

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        self._reader = None
        return trio.lowlevel.Abort.SUCCEEDED
