"""The durable store: conversations in one SQLite file, written with group commit.

Acknowledgement means durable, and durability must cost little. One writer task owns the
only writing connection. :meth:`SQLiteStore.record` queues its state and entries and waits;
the writer takes everything queued so far, commits it as one transaction in a worker thread,
then wakes every waiter of that batch. While one batch commits the next one gathers, so under
load many messages share one commit (and one fsync), and under light load a message waits for
exactly one small commit.

Reads (loading a conversation, resuming after a sequence number, the open sessions at
start-up) use their own connections in worker threads: in WAL mode they never wait for the
writer, and they see every batch committed before they start.

Run it with :func:`open_sqlite_store` (or :meth:`SQLiteStore.run` in your own nursery).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from actors import ConversationState, Entry, StoreUnavailable
from actors.model.settings import BotSettings
from transport.store import readers
from transport.store.connections import (
    check_directory,
    connect_writer,
    describe,
)
from transport.store.lock import take_lock
from transport.store.readers import Readers
from transport.store.row_cache import RowCache
from transport.store.rows import (
    Rows,
    writable,
)
from transport.store.schema import SchemaTooNew
from transport.store.writer import ROWS_PER_STATEMENT, Pending, Writer, in_chunks

log = logging.getLogger("switchover.store")

DATABASE_FILENAME = "switchover.db"

T = TypeVar("T")

__all__ = [
    "DATABASE_FILENAME",
    "SQLiteStore",
    "StoreUnavailable",
    "database_path",
    "keep_pruning",
    "open_sqlite_store",
]


def database_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the database lives in a data directory."""
    return Path(data_dir) / DATABASE_FILENAME


# Retention's rule: a conversation whose row was last written before the cutoff, with no open
# session, and whose last message (if any) is older than the cutoff too (a bot-mode message
# does not rewrite the row).
_PRUNABLE = (
    "c.session_id IS NULL AND COALESCE((SELECT m.at FROM messages m WHERE m.conversation_id = c.id"
    " ORDER BY m.seq DESC LIMIT 1), 0) < ?"
)
PRUNE_CANDIDATES = f"SELECT id FROM conversations c WHERE updated_at < ? AND {_PRUNABLE}"
# The same rule over the next conversations in (updated_at, rowid) order after a cursor, the
# order of the index on updated_at: each retention transaction takes up where the last one
# stopped, so conversations kept (an open session, a recent message) are looked at once.
PRUNE_NEXT = (
    "SELECT p.rid, p.updated_at, p.id, p.prunable, CASE WHEN p.prunable THEN"
    " (SELECT count(*) FROM messages m WHERE m.conversation_id = p.id) ELSE 0 END"
    f" FROM (SELECT c.rowid AS rid, c.updated_at, c.id, {_PRUNABLE} AS prunable"
    " FROM conversations c WHERE c.updated_at < ? AND (c.updated_at, c.rowid) > (?, ?)"
    " ORDER BY c.updated_at, c.rowid LIMIT ?) p"
)
# A conversation's N oldest messages (parameters: the id twice, N - 1).
PRUNE_OLDEST_MESSAGES = (
    "DELETE FROM messages WHERE conversation_id = ? AND seq <= (SELECT seq FROM messages"
    " WHERE conversation_id = ? ORDER BY seq LIMIT 1 OFFSET ?)"
)
PRUNE_CHUNK_ROWS = 500
"""Messages and conversation rows one retention transaction deletes at most (each
conversation's few session and outbox rows go with it, uncounted)."""
PRUNE_SCAN = 500
"""Conversations one retention transaction looks at, at most."""
PRUNE_CHECKPOINT_EVERY = 16
"""Retention transactions between two checkpoints of the write-ahead log (each chunk writes
some tens of pages, so each checkpoint copies about a thousand)."""


class SQLiteStore:
    """Implements :class:`actors.ports.Store` on one SQLite file.

    ``settings``: each bot's settings, used only to write each conversation's idle deadline
    as an absolute time (restarts derive it again from the last activity and the settings
    then in force). ``synchronous``: SQLite's sync level; ``"FULL"`` (the default) survives
    power loss, ``"NORMAL"`` survives a killed process but may lose the last commits on
    power loss. ``max_bytes`` caps the file's size (the database reports itself full past
    it). ``busy_timeout``: how long to wait for a lock held by someone else before failing.
    ``verify``: check the file's integrity on start-up (a full read of it).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        settings: Mapping[str, BotSettings] | None = None,
        synchronous: str = "FULL",
        max_bytes: int | None = None,
        busy_timeout: float = 2.0,
        max_batch: int = 5000,
        verify: bool = True,
        readers: int = 4,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous level {synchronous!r}")
        self.path = Path(path)
        self.settings = dict(settings or {})
        self.synchronous = synchronous.upper()
        self.max_bytes = max_bytes
        self.busy_timeout = busy_timeout
        self.max_batch = max_batch
        self.verify = verify
        self.migrated_from: int | None = None
        self.prune_chunks = 0
        self._lock_file: int | None = None
        self._reader_pool = Readers(self.path, busy_timeout, readers)
        self._row_cache = RowCache(self.settings)
        self._writer = Writer(self.path, max_batch, self._row_cache.remember)

    @property
    def commits(self) -> int:
        """Transactions committed for calls."""
        return self._writer.commits

    @property
    def committed_calls(self) -> int:
        """Calls stored."""
        return self._writer.committed_calls

    # -- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the file (creating or upgrading it), then commit batches until cancelled.

        Raises :class:`StoreUnavailable` before ``started`` when the file cannot be used: the
        server must refuse to start.
        """
        await self.open()
        await self.serve(task_status=task_status)

    async def open(self) -> None:
        """Open, check, lock and upgrade the file. Raises :class:`StoreUnavailable`."""
        await trio.to_thread.run_sync(self._open)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled, on a store already :meth:`open`."""
        if self._writer.db is None:
            raise RuntimeError("open the store before serving it")
        try:
            await self._writer.serve(task_status=task_status)
        finally:
            self._close()

    # -- the Store protocol -----------------------------------------------------------------

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        # Rows are built here, on trio's thread: the writer thread then holds the GIL only
        # briefly, and a message that cannot be encoded fails alone, before any batch.
        try:
            rows = self._row_cache.rows(state, entries)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreUnavailable(f"this message cannot be stored: {exc!r}") from exc
        if not writable(rows):
            raise StoreUnavailable("this message cannot be stored: its text is not valid Unicode")
        await self._writer.submit(Pending(rows))

    async def record_presence(self, agent_id: str, presence: str, at: float | None = None) -> None:
        """Keep an agent's last presence (``online``, ``away``...), as of ``at``."""
        presence_row = (agent_id, presence, at or time.time())
        await self._writer.submit(Pending(Rows(None, [], [], presence_row)))

    def bot_done(self, conversation_id: str, seq: int) -> None:
        """Take entry ``seq`` out of the bot's outbox with the next commit, without waiting
        for it: should that commit be lost, the bot is handed the event once more."""
        self._writer.answer(conversation_id, seq)

    async def bot_backlog(self) -> list[Entry]:
        return await self._read(readers.bot_backlog)

    async def load(self, conversation_id: str) -> ConversationState | None:
        return await self._read(lambda db: readers.load(db, conversation_id))

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        return await self._read(lambda db: readers.entries_after(db, conversation_id, after_seq))

    async def entries_page(
        self, conversation_id: str, after_seq: int, limit: int, agent_id: str | None = None
    ) -> list[Entry]:
        """At most ``limit`` entries after ``after_seq``, in order; with ``agent_id``, only
        those written with that agent's id (the only ones an agent may be shown)."""
        return await self._read(
            lambda db: readers.entries_page(db, conversation_id, after_seq, limit, agent_id)
        )

    async def open_sessions(self) -> list[ConversationState]:
        return await self._read(readers.open_sessions)

    async def last_presences(self) -> dict[str, tuple[str, float]]:
        """Each agent's last recorded presence and when it was set."""
        return await self._read(readers.last_presences)

    async def prune(
        self,
        older_than_days: float,
        *,
        now: float | None = None,
        chunk_rows: int = PRUNE_CHUNK_ROWS,
    ) -> int:
        """Delete conversations not written to for ``older_than_days`` days and with no open
        session, with their messages, sessions and outbox rows. Returns how many went.

        Meant for conversations long out of memory (hibernated): one still in memory would
        write its row again on its next event, without the deleted messages.

        Retention never stalls traffic. It runs as many small transactions
        (:func:`prune_chunk`: at most ``chunk_rows`` messages and conversation rows each, a
        few milliseconds), each a job of its own on the writer's queue, and after each one it
        waits for an ordinary commit of whatever was queued meanwhile before it queues the
        next. So an acknowledgement waits for at most one chunk (one in its batch, or one
        being written as it arrives) on top of its own commit, never for the whole prune.

        Before each chunk it reads what the chunk will delete on a reader connection
        (:func:`prune_read_ahead`), while the writer goes on committing: the conversations a
        prune deletes are long cold, and reading their pages from disk inside the chunk held
        the writer for up to a quarter of a second on the bench machine (bench/README.md,
        Retention); read ahead, a chunk only finds them in the operating system's cache.

        Every :data:`PRUNE_CHECKPOINT_EVERY` chunks, and at the end, it also checkpoints the
        write-ahead log (passively, as a job of its own, given way to in the same manner), so
        the log a large prune writes is copied into the database about a thousand pages at a
        time (~5 ms) rather than by the writer's automatic checkpoint,
        :data:`WAL_CHECKPOINT_PAGES` pages at once inside whatever commit crosses the mark.

        Why on the writer rather than on a connection of its own: SQLite lets one connection
        write at a time, and one that finds the lock taken sleeps in its busy handler (1, 2,
        5, 10 ... ms) instead of being woken when the lock goes, so every commit that met a
        prune transaction would pay such a sleep on top of it. On the writer the two take
        turns with no lock to wait for, and the writer's bookkeeping (which conversations
        have a row on disk) is updated in the same thread as the deletions.

        Each chunk applies the rule afresh in its own transaction, so a conversation that
        speaks again or opens a session during a prune is kept; the cutoff is fixed when the
        prune starts. A conversation with more messages than ``chunk_rows`` loses them oldest
        first, over several transactions, before its row goes. A prune that is cancelled or
        fails keeps what its committed chunks deleted.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        cutoff = (now if now is not None else time.time()) - older_than_days * 86400.0
        after: tuple[float, int] | None = (-math.inf, -1)
        deleted = 0
        chunks = 0
        while after is not None:
            start = after

            def read_ahead(db: sqlite3.Connection, start: tuple[float, int] = start) -> None:
                prune_read_ahead(db, cutoff, start, chunk_rows)

            await self._read(read_ahead)

            def job(db: sqlite3.Connection, start: tuple[float, int] = start) -> _PruneChunk:
                chunk = prune_chunk(db, cutoff, start, chunk_rows)
                for conversation_id in chunk.deleted:
                    # Its row is gone: a next message must write it again, not skip it.
                    self._row_cache.forget(conversation_id)
                return chunk

            pending = Pending(None, job=job)
            await self._writer.submit(pending)
            chunk: _PruneChunk = pending.result
            chunks += 1
            self.prune_chunks += 1
            deleted += len(chunk.deleted)
            after = chunk.after
            # Give the writer back: what was queued while the chunk ran is committed (and
            # acknowledged) before anything more of the prune is queued.
            await self._writer.submit(Pending(None))
            if chunks % PRUNE_CHECKPOINT_EVERY == 0 or after is None:
                await self._writer.submit(Pending(None, job=_checkpoint))
                if after is not None:
                    await self._writer.submit(Pending(None))
        return deleted

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        self._writer.check_running()
        return await self._reader_pool.run(read)

    # -- opening and closing ----------------------------------------------------------------

    def _open(self) -> None:
        """Open, check, lock and upgrade the file (worker thread). Raises StoreUnavailable."""
        path = self.path
        check_directory(path)
        self._lock_file = take_lock(path)
        try:
            self._writer.db, self.migrated_from = connect_writer(
                path,
                busy_timeout=self.busy_timeout,
                synchronous=self.synchronous,
                verify=self.verify,
                max_bytes=self.max_bytes,
            )
        except SchemaTooNew as exc:
            self._close()
            raise StoreUnavailable(f"the database {path} is refused: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            self._close()
            raise StoreUnavailable(describe(path, exc)) from exc
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        self._reader_pool.close()
        self._writer.close()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


@contextlib.asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str], **options: Any
) -> AsyncIterator[SQLiteStore]:
    """Run a :class:`SQLiteStore` for the duration of the ``async with`` block. Raises
    :class:`StoreUnavailable` on entry when the file cannot be used.

    Open it *outside* the switchboard, so the switchboard stops first and its last writes
    are committed before the store closes.
    """
    store = SQLiteStore(path, **options)
    await store.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.serve)
        try:
            yield store
        finally:
            nursery.cancel_scope.cancel()


async def keep_pruning(
    store: SQLiteStore, older_than_days: float, *, every: float = 3600.0
) -> None:
    """Retention for a running server: prune now, then every ``every`` seconds, until
    cancelled. A failed round is logged and tried again next time."""
    while True:
        try:
            deleted = await store.prune(older_than_days)
        except StoreUnavailable as exc:
            log.error("retention: pruning failed: %s", exc)
        else:
            if deleted:
                log.info("retention: deleted %d conversations", deleted)
        await trio.sleep(every)


class _PruneChunk:
    """What one retention transaction did: the conversations it deleted, and where the next
    one starts (``None``: nothing is left to look at)."""

    __slots__ = ("after", "deleted")

    def __init__(self, deleted: list[str], after: tuple[float, int] | None) -> None:
        self.deleted = deleted
        self.after = after


_PRUNED_TABLES = (
    ("messages", "conversation_id"),
    ("bot_outbox", "conversation_id"),
    ("sessions", "conversation_id"),
    ("conversations", "id"),
)


def prune_chunk(
    db: sqlite3.Connection, cutoff: float, after: tuple[float, int], rows: int = PRUNE_CHUNK_ROWS
) -> _PruneChunk:
    """One retention transaction: look at the next :data:`PRUNE_SCAN` conversations last
    written before ``cutoff`` (wall-clock seconds), in ``(updated_at, rowid)`` order after
    ``after``, and delete those with no open session and no message since the cutoff, with
    their messages, sessions and outbox rows, until ``rows`` messages and conversation rows
    are deleted. A prunable conversation with more messages than that, met first, loses its
    ``rows`` oldest messages and is looked at again by the next chunk."""
    db.execute("BEGIN IMMEDIATE")
    try:
        found = db.execute(PRUNE_NEXT, (cutoff, cutoff, after[0], after[1], PRUNE_SCAN)).fetchall()
        doomed, cursor, piece = _choose(found, after, rows)
        if piece is not None:
            db.execute(PRUNE_OLDEST_MESSAGES, piece)
        for table, column in _PRUNED_TABLES:
            in_chunks(db, f"DELETE FROM {table} WHERE {column} IN ({{rows}})", doomed, "?")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    # Done when this chunk looked at the last conversations old enough, and finished them.
    done = len(found) < PRUNE_SCAN and (not found or cursor == (found[-1][1], found[-1][0]))
    return _PruneChunk([cid for (cid,) in doomed], None if done else cursor)


def _choose(
    found: list[tuple[Any, ...]], after: tuple[float, int], rows: int
) -> tuple[list[tuple[str]], tuple[float, int], tuple[str, str, int] | None]:
    """From the rows of :data:`PRUNE_NEXT`: the conversations to delete whole (within the
    budget of ``rows``), the cursor past them, and the parameters of
    :data:`PRUNE_OLDEST_MESSAGES` when the first prunable one is too large for one chunk."""
    doomed: list[tuple[str]] = []
    budget = rows
    cursor = after
    for rowid, updated_at, conversation_id, prunable, messages in found:
        if prunable:
            if messages + 1 > budget:
                if not doomed:
                    return doomed, cursor, (conversation_id, conversation_id, budget - 1)
                break
            doomed.append((conversation_id,))
            budget -= messages + 1
        cursor = (updated_at, rowid)
    return doomed, cursor, None


def prune_read_ahead(
    db: sqlite3.Connection, cutoff: float, after: tuple[float, int], rows: int = PRUNE_CHUNK_ROWS
) -> None:
    """Read, without writing, every page the chunk :func:`prune_chunk` would delete from
    (the same arguments), so that they are in the operating system's cache when it runs.
    Meant for a reader connection while the writer commits: the chunk then holds the writer
    for the deletions only, not for reading long-cold pages from disk."""
    found = db.execute(PRUNE_NEXT, (cutoff, cutoff, after[0], after[1], PRUNE_SCAN)).fetchall()
    doomed, _, piece = _choose(found, after, rows)
    if piece is not None:
        # Only the oldest messages of a conversation too large for one chunk go this time.
        db.execute(PRUNE_READ_AHEAD_OLDEST, (piece[0], piece[2] + 1)).fetchall()
    ids = [cid for (cid,) in doomed]
    for start in range(0, len(ids), ROWS_PER_STATEMENT):
        part = ids[start : start + ROWS_PER_STATEMENT]
        marks = ", ".join("?" * len(part))
        for statement in PRUNE_READ_AHEAD:
            db.execute(statement.format(rows=marks), part).fetchall()


PRUNE_READ_AHEAD_OLDEST = (
    "SELECT sum(length(content)) FROM (SELECT content FROM messages WHERE conversation_id = ?"
    " ORDER BY seq LIMIT ?)"
)
PRUNE_READ_AHEAD = (
    "SELECT sum(length(content)) FROM messages WHERE conversation_id IN ({rows})",
    "SELECT count(*) FROM bot_outbox WHERE conversation_id IN ({rows})",
    "SELECT count(end_reason) FROM sessions WHERE session_id IN"
    " (SELECT session_id FROM sessions WHERE conversation_id IN ({rows}))",
    "SELECT count(*) FROM conversations WHERE id IN ({rows})",
)


def _checkpoint(db: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the database as far as readers allow, without waiting
    for them (the log starts afresh with the next commit once it is all copied)."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def prune_connection(
    db: sqlite3.Connection, cutoff: float, rows: int = PRUNE_CHUNK_ROWS
) -> list[str]:
    """Delete conversations last written before ``cutoff`` (wall-clock seconds) that have no
    open session, chunk after chunk (:func:`prune_chunk`) on a connection nobody else writes
    through. Returns the ids deleted. The running store prunes with :meth:`SQLiteStore.prune`,
    which lets its commits in between the chunks."""
    deleted: list[str] = []
    after: tuple[float, int] | None = (-math.inf, -1)
    while after is not None:
        chunk = prune_chunk(db, cutoff, after, rows)
        deleted.extend(chunk.deleted)
        after = chunk.after
    return deleted
