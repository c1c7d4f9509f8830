"""The desk's queue of waiting sessions, with each session's place among those of its bot.

A session joins at the tail (a new request) or at the head (given back by an agent); any
session may leave from anywhere. Every operation costs O(log n): each bot's line keeps its
sessions under integer keys in a Fenwick tree, so a session's place is a prefix count
rather than a walk of the queue, and the whole queue's order is a merge of the bots' lines
by a stamp taken on joining. Keys are renumbered when a line runs out of them, which
happens once per as many joins as the line holds: amortised O(1).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the queue needs of a waiting session: its bot, and slots for its place."""

    bot_id: str
    order: int
    key: int


T = TypeVar("T", bound=Queued)


class _Line(Generic[T]):
    """One bot's waiting sessions: ``keys`` in [``low``, ``high``) index a Fenwick tree of
    ``size`` counters (offset by ``base``), so the place of a session is a prefix sum."""

    __slots__ = ("base", "by_key", "high", "low", "size", "tree")

    def __init__(self, items: list[T]) -> None:
        self.by_key: dict[int, T] = {}
        self._renumber(items)

    def _renumber(self, items: list[T]) -> None:
        """Give ``items`` (in order) consecutive keys, with as much room again on each side
        for joins before the next renumbering."""
        room = max(16, len(items))
        self.size = 1 << (2 * room + len(items) + 1).bit_length()
        self.base = 0
        self.low = self.high = room
        self.by_key = {}
        self.tree = [0] * (self.size + 1)
        for item in items:
            item.key = self.high
            self.by_key[self.high] = item
            self.high += 1
        # Linear build of the Fenwick tree: every key counts one.
        tree = self.tree
        for key in self.by_key:
            tree[key - self.base + 1] += 1
        for index in range(1, self.size + 1):
            parent = index + (index & -index)
            if parent <= self.size:
                tree[parent] += tree[index]

    def __len__(self) -> int:
        return len(self.by_key)

    def _add(self, key: int, delta: int) -> None:
        index = key - self.base + 1
        tree, size = self.tree, self.size
        while index <= size:
            tree[index] += delta
            index += index & -index

    def rank(self, key: int) -> int:
        """How many sessions of this line have a key up to ``key`` (1 is the head)."""
        index = key - self.base + 1
        total = 0
        tree = self.tree
        while index > 0:
            total += tree[index]
            index -= index & -index
        return total

    def key_at(self, place: int) -> int:
        """The key of the session at ``place`` (1-based; ``place`` <= ``len(self)``)."""
        index = 0
        step = self.size
        tree = self.tree
        while step:
            nxt = index + step
            if nxt <= self.size and tree[nxt] < place:
                index = nxt
                place -= tree[nxt]
            step >>= 1
        return index + self.base

    def insert(self, item: T, *, first: bool) -> None:
        if (first and self.low <= self.base) or (not first and self.high >= self.base + self.size):
            self._renumber(list(self))
        if first:
            self.low -= 1
            key = self.low
        else:
            key = self.high
            self.high += 1
        item.key = key
        self.by_key[key] = item
        self._add(key, 1)

    def remove(self, item: T) -> None:
        del self.by_key[item.key]
        self._add(item.key, -1)

    def __iter__(self) -> Iterator[T]:
        return self.from_place(1)

    def from_place(self, place: int) -> Iterator[T]:
        """The sessions from ``place`` on, in order. Sessions may leave while it runs."""
        if place > len(self.by_key):
            return
        by_key = self.by_key
        for key in range(self.key_at(place), self.high):
            item = by_key.get(key)
            if item is not None:
                yield item


class WaitQueue(Generic[T]):
    """Waiting sessions in the order they are served, each bot's line kept apart."""

    def __init__(self) -> None:
        self._lines: dict[str, _Line[T]] = {}
        self._tail = itertools.count(0)
        self._head = itertools.count(-1, -1)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[T]:
        return self.of_bots(self._lines)

    def of_bots(self, bots: Iterable[str]) -> Iterator[T]:
        """The sessions waiting for any of ``bots``, in the order they are served."""
        lines = [iter(self._lines[bot]) for bot in bots if bot in self._lines]
        if len(lines) == 1:
            return lines[0]
        return heapq.merge(*lines, key=_order)

    def line(self, bot_id: str) -> Iterator[T]:
        line = self._lines.get(bot_id)
        return iter(()) if line is None else iter(line)

    def line_length(self, bot_id: str) -> int:
        line = self._lines.get(bot_id)
        return 0 if line is None else len(line)

    def bots(self) -> list[str]:
        return list(self._lines)

    def add(self, item: T, *, first: bool = False) -> int:
        """Queue ``item`` at the tail (or the head); returns its place in its bot's line."""
        item.order = next(self._head) if first else next(self._tail)
        line = self._lines.get(item.bot_id)
        if line is None:
            line = self._lines[item.bot_id] = _Line([])
        line.insert(item, first=first)
        self._count += 1
        return 1 if first else len(line)

    def remove(self, item: T) -> int:
        """Take ``item`` out; returns the place it had in its bot's line."""
        line = self._lines[item.bot_id]
        place = line.rank(item.key)
        line.remove(item)
        self._count -= 1
        if not line:
            del self._lines[item.bot_id]
        return place

    def place(self, item: T) -> int:
        """``item``'s place among the sessions of its bot (1 is next)."""
        return self._lines[item.bot_id].rank(item.key)

    def from_place(self, bot_id: str, place: int) -> Iterator[T]:
        line = self._lines.get(bot_id)
        return iter(()) if line is None else line.from_place(place)


def _order(item: Queued) -> int:
    return item.order
