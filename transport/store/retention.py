"""Retention: deleting conversations long out of use, in small transactions that take turns
with the writer's commits, so that a prune never holds up traffic for long."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from actors import StoreUnavailable
from transport.store.recent import fold_within
from transport.store.writer import ROWS_PER_STATEMENT, Pending, Writer, in_chunks

if TYPE_CHECKING:
    from transport.store.sqlite import SQLiteStore

log = logging.getLogger("switchover.store")

# Retention's rule: a conversation whose row was last written before the cutoff, with no open
# session, and whose last message (if any) is older than the cutoff too (a bot-mode message
# does not rewrite the row).
_LAST_AT = (
    "COALESCE((SELECT r.at FROM recent r WHERE r.conversation_id = c.id ORDER BY r.seq DESC"
    " LIMIT 1), (SELECT m.at FROM messages m WHERE m.conversation_id = c.id ORDER BY m.seq DESC"
    " LIMIT 1), 0)"
)
# (A conversation's rows in ``recent`` come after its rows in ``messages``: its last message
# is in ``recent`` when it has any there. A prune folds ``recent`` first; a dry run beside a
# running server reads both.)
_PRUNABLE = f"c.session_id IS NULL AND {_LAST_AT} < ?"
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
# What a prune at a cutoff would delete (parameters: the cutoff twice): how many
# conversations, their messages, and the oldest and newest time one of them was last written
# (its row or its last message, whichever is later).
PRUNE_PREVIEW = (
    "SELECT count(*), COALESCE(sum(p.messages), 0), min(p.last), max(p.last) FROM (SELECT"
    " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)"
    " + (SELECT count(*) FROM recent r WHERE r.conversation_id = c.id) AS messages,"
    f" max(c.updated_at, {_LAST_AT}) AS last FROM conversations c WHERE c.updated_at < ?"
    f" AND {_PRUNABLE}) p"
)
# Conversations old enough that a prune keeps because their livechat session is open.
PRUNE_KEPT_OPEN = (
    "SELECT count(*) FROM conversations WHERE updated_at < ? AND session_id IS NOT NULL"
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


async def keep_pruning(
    store: SQLiteStore,
    older_than_days: float,
    *,
    every: float = 3600.0,
    after: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Retention for a running server: prune now, then every ``every`` seconds, until
    cancelled. A failed round is logged and tried again next time. ``after`` runs after each
    round (the attachments of deleted conversations go then)."""
    while True:
        try:
            deleted = await store.prune(older_than_days)
        except StoreUnavailable as exc:
            log.error("retention: pruning failed: %s", exc)
        else:
            if deleted:
                log.info("retention: deleted %d conversations", deleted)
        if after is not None:
            try:
                await after()
            except OSError as exc:
                log.error("retention: deleting attachments failed: %s", exc)
        await trio.sleep(every)


@attrs.frozen
class PrunePreview:
    """What a prune would delete, found without deleting anything: the conversations, their
    messages, when the oldest and the newest of them was last written (wall-clock seconds,
    ``None`` when there are none), and how many as old are kept for their open session."""

    conversations: int
    messages: int
    oldest: float | None
    newest: float | None
    kept_open: int


def prune_preview(db: sqlite3.Connection, cutoff: float) -> PrunePreview:
    """What :func:`prune_connection` with ``cutoff`` would delete, by the same rule, read in
    one query without writing (so a reader beside a running server can ask)."""
    conversations, messages, oldest, newest = db.execute(PRUNE_PREVIEW, (cutoff, cutoff)).fetchone()
    (kept_open,) = db.execute(PRUNE_KEPT_OPEN, (cutoff,)).fetchone()
    return PrunePreview(conversations, messages, oldest, newest, kept_open)


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
        # Every message in ``messages``, where the rule and the deletions below look.
        fold_within(db)
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


class Pruner:
    """Retention on the running store, through its writer.

    Retention never stalls traffic. It runs as many small transactions
    (:func:`prune_chunk`: at most ``chunk_rows`` messages and conversation rows each, a
    few milliseconds), each a job of its own on the writer's queue, and after each one it
    waits for an ordinary commit of whatever was queued meanwhile before it queues the
    next. So an acknowledgement waits for at most one chunk (one in its batch, or one
    being written as it arrives) on top of its own commit, never for the whole prune.

    Before each chunk it reads what the chunk will delete on a reader connection
    (:func:`prune_read_ahead`), while the writer goes on committing: the conversations a
    prune deletes are long cold, and a chunk reading their pages from disk holds the writer
    meanwhile (bench/README.md, Retention, 2026-12-02); read ahead, it finds them in the
    operating system's cache.

    Every :data:`PRUNE_CHECKPOINT_EVERY` chunks, and at the end, it also checkpoints the
    write-ahead log (passively, as a job of its own, given way to in the same manner), so
    the log a large prune writes is copied into the database about a thousand pages at a
    time (~5 ms) rather than by the writer's automatic checkpoint,
    :data:`~transport.store.connections.WAL_CHECKPOINT_PAGES` pages at once inside whatever
    commit crosses the mark.

    Why on the writer rather than on a connection of its own: SQLite lets one connection
    write at a time, and one that finds the lock taken sleeps in its busy handler (1, 2,
    5, 10 ... ms) instead of being woken when the lock goes, so every commit that met a
    prune transaction would pay such a sleep on top of it. On the writer the two take
    turns with no lock to wait for, and the writer's bookkeeping (which conversations
    have a row on disk) is updated in the same thread as the deletions.
    """

    def __init__(
        self,
        writer: Writer,
        read: Callable[[Callable[[sqlite3.Connection], None]], Awaitable[None]],
        forget: Callable[[str], None],
    ) -> None:
        self.chunks = 0
        self._writer = writer
        self._read = read
        self._forget = forget

    async def prune(self, cutoff: float, chunk_rows: int) -> int:
        """Delete, chunk after chunk, the conversations :func:`prune_chunk` deletes with
        ``cutoff`` (wall-clock seconds). Returns how many went."""
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
                    self._forget(conversation_id)
                return chunk

            pending = Pending(None, job=job)
            await self._writer.submit(pending)
            chunk: _PruneChunk = pending.result
            chunks += 1
            self.chunks += 1
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
