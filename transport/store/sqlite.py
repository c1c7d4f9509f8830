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

A second Switchover on the same file would restore the same sessions twice, so the store
holds an exclusive lock on ``<file>.lock`` while it runs (the kernel drops it if the process
dies, so ``kill -9`` never leaves it stale).

Run it with :func:`open_sqlite_store` (or :meth:`SQLiteStore.run` in your own nursery).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio

from actors import ConversationState, Entry, Party, StoreUnavailable
from actors.model.content import SESSION_END, SESSION_EXPIRED, Content
from actors.model.settings import BotSettings
from actors.model.state import Mode, Session, deadline
from transport.store.schema import SchemaTooNew, check_version, migrate
from transport.strict import bad_text

log = logging.getLogger("switchover.store")

DATABASE_FILENAME = "switchover.db"
WAL_CHECKPOINT_PAGES = 8192
"""Pages (4 KiB) the write-ahead log grows to before it is copied into the database."""
CACHE_KIB = 32768
"""The writer's page cache: the pages many live conversations write to stay in memory."""

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


class _Rows:
    """One ``record`` call turned into rows (plain slots: built once per message)."""

    __slots__ = (
        "bot_mode",
        "conversation",
        "live_shape",
        "messages",
        "owed_to_bot",
        "presence",
        "session_changes",
    )

    def __init__(
        self,
        conversation: tuple[Any, ...] | None,
        messages: list[tuple[Any, ...]],
        session_changes: list[tuple[str, tuple[Any, ...]]],
        presence: tuple[str, str, float] | None,
        bot_mode: tuple[str, int | None] | None = None,
        live_shape: tuple[Any, ...] | None = None,
        owed_to_bot: list[tuple[str, int]] | None = None,
    ) -> None:
        self.conversation = conversation
        self.messages = messages
        self.session_changes = session_changes
        self.presence = presence
        # (conversation id, seq) of the messages the bot must see: written to its outbox in
        # the same transaction.
        self.owed_to_bot = owed_to_bot
        # (conversation id, sessions opened) when the row written is in bot mode; (id, None)
        # when it has a session.
        self.bot_mode = bot_mode
        # The row written for a session, less what its messages say on their own (next_seq,
        # last_activity, deadline, updated_at): what a live message must leave unchanged for
        # the row to be skipped.
        self.live_shape = live_shape


class _Pending:
    """One call waiting for the commit of its rows, or for its job to run.

    The caller's task parks itself here and the writer reschedules it once the commit is
    done (a bare park costs less than a :class:`trio.Event` with its parking lot, and it
    lets the writer release each chunk of a large batch as soon as that chunk is durable).
    """

    __slots__ = ("error", "finished", "job", "result", "rows", "task")

    def __init__(
        self, rows: _Rows | None, job: Callable[[sqlite3.Connection], Any] | None = None
    ) -> None:
        self.rows = rows
        self.job = job
        self.error: Exception | None = None
        self.result: Any = None
        self.task: trio.lowlevel.Task | None = None
        self.finished = False

    async def wait(self) -> None:
        """Park until :meth:`release`; a cancelled caller stops waiting (its rows are still
        committed, it just does not hear of it)."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def release(self) -> None:
        self.finished = True
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, seq, at, sender, content_type, content, audience,"
    " agent_id, session_id, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CONVERSATION_COLUMNS = (
    "id, bot_id, user_id, metadata, next_seq, sessions_opened, mode, session_id, started_at,"
    " last_activity, queued_at, agent_id, agent_name, position, sign_off_offered, deadline,"
    " updated_at"
)
_UPSERT_CONVERSATION = (
    f"INSERT OR REPLACE INTO conversations ({_CONVERSATION_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SESSION_STARTED = (
    "INSERT OR IGNORE INTO sessions (session_id, conversation_id, bot_id, started_at, queued_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SESSION_ASSIGNED = "UPDATE sessions SET agent_id = ? WHERE session_id = ?"
_SESSION_ENDED = "UPDATE sessions SET ended_at = ?, end_reason = ? WHERE session_id = ?"
_UPSERT_PRESENCE = "INSERT OR REPLACE INTO agents (agent_id, presence, at) VALUES (?, ?, ?)"
_OWE_BOT = "INSERT OR IGNORE INTO bot_outbox (conversation_id, seq) VALUES (?, ?)"
_BOT_ANSWERED = "DELETE FROM bot_outbox WHERE (conversation_id, seq) IN (VALUES {rows})"
# A bot-mode message does not rewrite its conversation's row: the true next_seq is one past
# the last message when that is higher than the row's.
_LAST_SEQ = "(SELECT max(m.seq) FROM messages m WHERE m.conversation_id = conversations.id)"
# Nor does a live-session message that only touched the session: its last_activity is the
# time of the newest message written after the row (numbered from the row's next_seq on).
_LATER_ACTIVITY = (
    "(SELECT max(m.at) FROM messages m WHERE m.conversation_id = conversations.id"
    " AND m.seq >= conversations.next_seq)"
)
MESSAGE_COLUMNS = (
    "conversation_id, seq, at, sender, content_type, content, audience, agent_id, session_id,"
    " metadata"
)
# Every read of messages goes through the (conversation_id, seq) index (a test checks the
# query plans): the table itself is in insertion order, all conversations interleaved.
ENTRIES_AFTER = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ? ORDER BY seq"
)
# A page of a catch-up, and a page of what one agent may see (its own entries): a replay of
# a long conversation is read a page at a time, and an agent's skips the others' rows in SQLite.
ENTRIES_PAGE = f"{ENTRIES_AFTER} LIMIT ?"
AGENT_ENTRIES_PAGE = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? AND seq > ?"
    " AND agent_id = ? ORDER BY seq LIMIT ?"
)
LOAD_CONVERSATION = (
    f"SELECT {_CONVERSATION_COLUMNS}, {_LAST_SEQ}, {_LATER_ACTIVITY} FROM conversations"
    " WHERE id = ?"
)
OPEN_SESSIONS = (
    f"SELECT {_CONVERSATION_COLUMNS}, {_LAST_SEQ}, {_LATER_ACTIVITY} FROM conversations"
    " WHERE session_id IS NOT NULL ORDER BY started_at"
)
BOT_BACKLOG = (
    f"SELECT {', '.join('m.' + c.strip() for c in MESSAGE_COLUMNS.split(','))}"
    " FROM bot_outbox o JOIN messages m ON m.conversation_id = o.conversation_id"
    " AND m.seq = o.seq ORDER BY o.conversation_id, o.seq"
)
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


def _compact_encoder() -> Callable[[Mapping[str, Any]], str]:
    """One JSON encoder for every row. ``json.dumps`` (and ``JSONEncoder.encode``) build a
    new C encoder on every call, which costs twice the encoding of a small message."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder
        return json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
    # No circular-reference markers (a cycle ends in RecursionError, which ``record``
    # reports like any other unencodable value); unknown types raise TypeError as usual, and
    # a float that is not finite ValueError.
    encode = make(
        None,
        json.JSONEncoder().default,
        json.encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        False,  # allow_nan: NaN and Infinity are not JSON; such a message is refused
    )

    def dumps(value: Mapping[str, Any]) -> str:
        return "".join(encode(value, 0))

    return dumps


_dumps = _compact_encoder()
_SENDERS = {party: party.value for party in Party}
_AUDIENCES: dict[frozenset[Party], str] = {}


def _audience(parties: frozenset[Party]) -> str:
    text = _AUDIENCES.get(parties)
    if text is None:
        text = _AUDIENCES[parties] = ",".join(sorted(p.value for p in parties))
    return text


_ROWS_PER_STATEMENT = 128
_MULTI_ROW_SQL: dict[tuple[str, int], str] = {}


def _insert_rows(db: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with multi-row ``INSERT ... VALUES (...), (...)`` statements (see
    :func:`_in_chunks`)."""
    head, _, values = insert.partition(" VALUES ")
    _in_chunks(db, f"{head} VALUES {{rows}}", rows, values)


def _in_chunks(
    db: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]], group: str = ""
) -> None:
    """Run ``statement`` over ``rows``, many at a time: its ``{rows}`` becomes a list of
    ``group`` (by default one ``?`` per value of a row, in parentheses), one per row.

    Why not ``executemany``: it steps once per row, and the sqlite3 module releases and
    takes back the GIL around every step. While trio's thread is busy, each take-back waits
    for the interpreter's switch interval, so a 500-row commit took ~0.4 s of wall time
    (bench/README.md, Store). Here a commit takes the GIL back a handful of times. Chunk
    sizes are powers of two, so only a few statements are ever prepared (and cached).
    """
    start = 0
    while start < len(rows):
        size = min(_ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
        sql = _MULTI_ROW_SQL.get((statement, size))
        if sql is None:
            one = group or f"({', '.join('?' * len(rows[start]))})"
            sql = _MULTI_ROW_SQL[(statement, size)] = statement.format(rows=", ".join([one] * size))
        chunk = rows[start : start + size]
        db.execute(sql, [value for row in chunk for value in row])
        start += size


#: What a batch can fail on because of one call's data rather than the file: that call is
#: isolated and refused, the others are stored.
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,
    TypeError,
    OverflowError,
)


def _writable(rows: _Rows) -> bool:
    """Whether every string of ``rows`` can be written as UTF-8 (no lone surrogate): checked
    before the rows join a batch, so one call's text cannot fail everyone's commit."""
    for row in (rows.conversation, *rows.messages):
        if row is None:
            continue
        for value in row:
            if type(value) is str and bad_text(value):
                return False
    return all(
        not (type(value) is str and bad_text(value))
        for _, parameters in rows.session_changes
        for value in parameters
    )


def _explain_database_error(path: Path, exc: BaseException) -> str:
    """Words for an operator: what is wrong with the database file, and what to do."""
    text = str(exc)
    lowered = text.lower()
    code = getattr(exc, "sqlite_errorcode", None)
    if "locked" in lowered or "busy" in lowered:
        return (
            f"the database {path} is locked by another process ({text}); stop the other "
            "process or use another data directory"
        )
    if "full" in lowered or code == sqlite3.SQLITE_FULL or getattr(exc, "errno", 0) == errno.ENOSPC:
        return f"the database {path} cannot grow: the disk (or its size limit) is full ({text})"
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return (
            f"the database {path} cannot be opened for writing ({text}); check that the data "
            "directory exists and is writable"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return (
            f"the database {path} is damaged ({text}); restore it from a backup or move it "
            "away to start afresh"
        )
    return f"the database {path} failed: {text}"


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
        self.commits = 0
        self.committed_calls = 0
        self.prune_chunks = 0
        self._writer: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._idle_readers: list[sqlite3.Connection] = []
        self._all_readers: list[sqlite3.Connection] = []
        self._reader_limit = trio.CapacityLimiter(readers)
        self._filling: list[_Pending] = []
        # (conversation id, seq) of bot events answered since the last commit: taken out of
        # the outbox by the next one, with no caller waiting for it.
        self._answered: list[tuple[str, int]] = []
        self._metadata_cache: dict[str, tuple[Mapping[str, Any], str]] = {}
        self._bot_mode_rows: dict[str, int] = {}
        self._live_rows: dict[str, tuple[Any, ...]] = {}
        self._wake = trio.Event()
        self._running = False
        self._failure: str | None = None

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
        if self._writer is None:
            raise RuntimeError("open the store before serving it")
        self._running = True
        task_status.started()
        try:
            await self._write_forever()
        finally:
            self._running = False
            self._failure = "the store has stopped"
            # Bots' answers noted since the last commit are written before closing, so a
            # clean stop hands no answered event to a bot again. Messages still waiting are
            # not: their senders were never told they were stored, and are gone.
            answered, self._answered = self._answered, []
            if answered:
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await trio.to_thread.run_sync(self._commit, [], answered)
            for pending in self._filling:
                pending.error = StoreUnavailable("the store has stopped")
                pending.release()
            self._filling = []
            self._close()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            # Let every task that is ready to run now queue its record too: one scheduler
            # pass costs microseconds, a commit costs an fsync.
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._wake = trio.Event()
            calls, self._filling = self._filling, []
            answered, self._answered = self._answered, []
            # A started commit finishes even on shutdown: its waiters must hear the truth.
            with trio.CancelScope(shield=True):
                for start in range(0, max(len(calls), 1), self.max_batch):
                    chunk = calls[start : start + self.max_batch]
                    # Records first, released as soon as they are durable; jobs (a prune's
                    # chunk, a checkpoint) after, so no acknowledgement waits for a job.
                    writes = [pending for pending in chunk if pending.job is None]
                    jobs = [pending for pending in chunk if pending.job is not None]
                    for part in (writes, jobs):
                        if part or answered:
                            await self._commit_part(part, answered)
                            answered = []

    async def _commit_part(self, part: list[_Pending], answered: list[tuple[str, int]]) -> None:
        try:
            # The answers ride with the first part (or alone, when no call is waiting); lost
            # with a failed commit, they are redelivered later.
            await trio.to_thread.run_sync(self._commit, part, answered)
        except Exception:
            # A bug, not a disk problem: nobody in the batch may hear "stored", and nobody
            # hears what the others wrote (it is in the log).
            log.exception("the store's writer failed")
            for pending in part:
                if pending.error is None:
                    pending.error = StoreUnavailable("the store failed")
        # The callers go on as soon as their part is durable: their work on trio's thread
        # overlaps the next commit in the worker thread.
        for pending in part:
            pending.release()

    # -- the Store protocol -----------------------------------------------------------------

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        # Rows are built here, on trio's thread: the writer thread then holds the GIL only
        # briefly, and a message that cannot be encoded fails alone, before any batch.
        try:
            rows = self._rows(state, entries)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreUnavailable(f"this message cannot be stored: {exc!r}") from exc
        if not _writable(rows):
            raise StoreUnavailable("this message cannot be stored: its text is not valid Unicode")
        await self._submit(_Pending(rows))

    async def record_presence(self, agent_id: str, presence: str, at: float | None = None) -> None:
        """Keep an agent's last presence (``online``, ``away``...), as of ``at``."""
        presence_row = (agent_id, presence, at or time.time())
        await self._submit(_Pending(_Rows(None, [], [], presence_row)))

    def bot_done(self, conversation_id: str, seq: int) -> None:
        """Take entry ``seq`` out of the bot's outbox with the next commit, without waiting
        for it: should that commit be lost, the bot is handed the event once more."""
        if not self._running:
            return
        if not self._filling and not self._answered:
            self._wake.set()
        self._answered.append((conversation_id, seq))

    async def bot_backlog(self) -> list[Entry]:
        def read(db: sqlite3.Connection) -> list[Entry]:
            return [entry_from_row(row) for row in db.execute(BOT_BACKLOG).fetchall()]

        return await self._read(read)

    async def load(self, conversation_id: str) -> ConversationState | None:
        def read(db: sqlite3.Connection) -> ConversationState | None:
            row = db.execute(LOAD_CONVERSATION, (conversation_id,)).fetchone()
            return None if row is None else _state_from_row(row)

        return await self._read(read)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        def read(db: sqlite3.Connection) -> list[Entry]:
            rows = db.execute(ENTRIES_AFTER, (conversation_id, after_seq)).fetchall()
            return [entry_from_row(row) for row in rows]

        return await self._read(read)

    async def entries_page(
        self, conversation_id: str, after_seq: int, limit: int, agent_id: str | None = None
    ) -> list[Entry]:
        """At most ``limit`` entries after ``after_seq``, in order; with ``agent_id``, only
        those written with that agent's id (the only ones an agent may be shown)."""

        def read(db: sqlite3.Connection) -> list[Entry]:
            if agent_id is None:
                rows = db.execute(ENTRIES_PAGE, (conversation_id, after_seq, limit)).fetchall()
            else:
                parameters = (conversation_id, after_seq, agent_id, limit)
                rows = db.execute(AGENT_ENTRIES_PAGE, parameters).fetchall()
            return [entry_from_row(row) for row in rows]

        return await self._read(read)

    async def open_sessions(self) -> list[ConversationState]:
        def read(db: sqlite3.Connection) -> list[ConversationState]:
            rows = db.execute(OPEN_SESSIONS).fetchall()
            return [_state_from_row(row) for row in rows]

        return await self._read(read)

    async def last_presences(self) -> dict[str, tuple[str, float]]:
        """Each agent's last recorded presence and when it was set."""

        def read(db: sqlite3.Connection) -> dict[str, tuple[str, float]]:
            rows = db.execute("SELECT agent_id, presence, at FROM agents").fetchall()
            return {agent_id: (presence, at) for agent_id, presence, at in rows}

        return await self._read(read)

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
                    self._bot_mode_rows.pop(conversation_id, None)
                    self._live_rows.pop(conversation_id, None)
                return chunk

            pending = _Pending(None, job=job)
            await self._submit(pending)
            chunk: _PruneChunk = pending.result
            chunks += 1
            self.prune_chunks += 1
            deleted += len(chunk.deleted)
            after = chunk.after
            # Give the writer back: what was queued while the chunk ran is committed (and
            # acknowledged) before anything more of the prune is queued.
            await self._submit(_Pending(None))
            if chunks % PRUNE_CHECKPOINT_EVERY == 0 or after is None:
                await self._submit(_Pending(None, job=_checkpoint))
                if after is not None:
                    await self._submit(_Pending(None))
        return deleted

    # -- writing ----------------------------------------------------------------------------

    async def _submit(self, pending: _Pending) -> None:
        if not self._running:
            raise StoreUnavailable(self._failure or "the store is not running")
        if not self._filling and not self._answered:
            self._wake.set()
        self._filling.append(pending)
        await pending.wait()
        if pending.error is not None:
            raise pending.error

    def _commit(self, batch: list[_Pending], answered: list[tuple[str, int]]) -> None:
        """Write one batch in one transaction (worker thread), and take the ``answered`` bot
        events out of the outbox. Sets ``error`` on the calls that were not stored; the
        others are durable when this returns."""
        good = [(pending, pending.rows) for pending in batch if pending.rows is not None]
        jobs = [pending for pending in batch if pending.job is not None]
        if good or answered:
            self._write_batch(good, answered)
        for pending in jobs:
            assert pending.job is not None
            db = self._writer
            try:
                if db is None:
                    raise sqlite3.OperationalError("the store is closed")
                pending.result = pending.job(db)
            except sqlite3.Error as exc:
                pending.error = StoreUnavailable(_explain_database_error(self.path, exc))

    def _write_batch(
        self, good: list[tuple[_Pending, _Rows]], answered: list[tuple[str, int]]
    ) -> None:
        try:
            self._write([rows for _, rows in good], answered)
        except _DATA_ERRORS:
            # Some call's rows cannot be written (they clash with what is stored, or hold a
            # value SQLite refuses): find them by halving the batch, and store the others.
            log.warning(
                "a commit of %d calls failed on its data; isolating the culprits", len(good)
            )
            half = len(good) // 2
            for part in (good[:half], good[half:]):
                self._write_part(part)
            with contextlib.suppress(sqlite3.Error):
                self._write([], answered)
        except sqlite3.Error as exc:
            message = _explain_database_error(self.path, exc)
            log.error("commit of %d calls failed: %s", len(good), message)
            for pending, _ in good:
                pending.error = StoreUnavailable(message)
            return
        else:
            self._remember([rows for _, rows in good])
        self.commits += 1
        self.committed_calls += sum(1 for pending, _ in good if pending.error is None)

    def _write_part(self, part: list[tuple[_Pending, _Rows]]) -> None:
        """Commit ``part`` of a batch that failed on its data; halve it again on failure, so
        only the calls whose own rows cannot be written are refused (with words that say
        nothing of what anyone wrote)."""
        if not part:
            return
        try:
            self._write([rows for _, rows in part], [])
        except _DATA_ERRORS as exc:
            if len(part) > 1:
                half = len(part) // 2
                self._write_part(part[:half])
                self._write_part(part[half:])
                return
            log.error("a call's rows cannot be stored: %s", type(exc).__name__)
            part[0][0].error = StoreUnavailable("this message cannot be stored")
        except sqlite3.Error as exc:
            message = _explain_database_error(self.path, exc)
            for pending, _ in part:
                pending.error = StoreUnavailable(message)
        else:
            self._remember([rows for _, rows in part])

    def _remember(self, committed: list[_Rows]) -> None:
        """Note which conversations now have a bot-mode row on disk (after the commit only:
        a rolled-back row must be written again)."""
        marks = self._bot_mode_rows
        live = self._live_rows
        if len(marks) > 100_000:
            marks.clear()
        if len(live) > 100_000:
            live.clear()
        for rows in committed:
            if rows.bot_mode is not None:
                cid, opened = rows.bot_mode
                if opened is None:
                    marks.pop(cid, None)
                else:
                    marks[cid] = opened
                if rows.live_shape is None:
                    live.pop(cid, None)
                else:
                    live[cid] = rows.live_shape

    def _write(self, batch: list[_Rows], answered: list[tuple[str, int]]) -> None:
        db = self._writer
        if db is None:
            raise sqlite3.OperationalError("the store is closed")
        conversations: dict[str, tuple[Any, ...]] = {}
        messages: list[tuple[Any, ...]] = []
        owed: list[tuple[str, int]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for rows in batch:
                if rows.conversation is not None:
                    conversations[rows.conversation[0]] = rows.conversation
                messages.extend(rows.messages)
                if rows.owed_to_bot:
                    owed.extend(rows.owed_to_bot)
            if messages:
                _insert_rows(db, _INSERT_MESSAGE, messages)
            if conversations:
                _insert_rows(db, _UPSERT_CONVERSATION, list(conversations.values()))
            if owed:
                _insert_rows(db, _OWE_BOT, owed)
            if answered:
                # After the inserts: an answer never comes in the batch that stored its
                # event (the bot hears of it only after the commit), but order it anyway.
                _in_chunks(db, _BOT_ANSWERED, answered)
            for rows in batch:
                for statement, parameters in rows.session_changes:
                    db.execute(statement, parameters)
                if rows.presence is not None:
                    db.execute(_UPSERT_PRESENCE, rows.presence)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _rows(self, state: ConversationState, entries: Sequence[Entry]) -> _Rows:
        messages = []
        changes: list[tuple[str, tuple[Any, ...]]] = []
        owed: list[tuple[str, int]] = []
        for entry in entries:
            if Party.BOT in entry.audience:
                owed.append((entry.conversation_id, entry.seq))
            messages.append(
                (
                    entry.conversation_id,
                    entry.seq,
                    entry.at,
                    _SENDERS[entry.sender],
                    entry.content.content_type,
                    _dumps(entry.content.content),
                    _audience(entry.audience),
                    entry.agent_id,
                    entry.session_id,
                    _dumps(entry.metadata) if entry.metadata else None,
                )
            )
            change = _session_change(state, entry)
            if change is not None:
                changes.append(change)
        rows = self._with_conversation_row(state, messages, changes)
        rows.owed_to_bot = owed or None
        return rows

    def _with_conversation_row(
        self,
        state: ConversationState,
        messages: list[tuple[Any, ...]],
        changes: list[tuple[str, tuple[Any, ...]]],
    ) -> _Rows:
        """The rows of one call, with the conversation's own row unless the messages already
        say everything that moved."""
        cid = state.conversation_id
        if state.session is None:
            if messages and self._bot_mode_rows.get(cid) == state.sessions_opened:
                # Only next_seq moved, and the messages written with it say it: a bot-mode
                # message costs one row, not two (load takes next_seq from the last message).
                return _Rows(None, messages, changes, None)
            mark: tuple[str, int | None] = (cid, state.sessions_opened)
            return _Rows(self._conversation_row(state), messages, changes, None, mark)
        session = state.session
        shape = (
            cid,
            state.bot_id,
            state.user_id,
            self._metadata_json(state),
            state.sessions_opened,
            state.mode.value,
            session.session_id,
            session.started_at,
            session.queued_at,
            session.agent_id,
            session.agent_name,
            None,  # the queue position is no longer stored (it is ephemeral)
            int(session.sign_off_offered),
        )
        if (
            messages
            and not changes
            and self._live_rows.get(cid) == shape
            and session.last_activity == max(message[2] for message in messages)
        ):
            # Only next_seq and last_activity moved, and the messages say both: a live
            # message costs one row, not two (load takes them from the messages numbered
            # from the row's next_seq on; should the wall clock step back meanwhile, it
            # takes the latest time seen, a deadline later by at most the step).
            return _Rows(None, messages, changes, None)
        return _Rows(self._conversation_row(state), messages, changes, None, (cid, None), shape)

    def _metadata_json(self, state: ConversationState) -> str:
        """The user's metadata as JSON, encoded once per conversation: every state of a
        conversation shares the same mapping, and it rarely changes."""
        cached = self._metadata_cache.get(state.conversation_id)
        if cached is not None and cached[0] is state.user_metadata:
            return cached[1]
        if len(self._metadata_cache) >= 10_000:
            self._metadata_cache.clear()
        text = _dumps(state.user_metadata)
        self._metadata_cache[state.conversation_id] = (state.user_metadata, text)
        return text

    def _conversation_row(self, state: ConversationState) -> tuple[Any, ...]:
        session = state.session
        settings = self.settings.get(state.bot_id)
        idle_deadline = deadline(state, settings) if settings is not None else None
        now = time.time()
        if session is None:
            return (
                state.conversation_id,
                state.bot_id,
                state.user_id,
                self._metadata_json(state),
                state.next_seq,
                state.sessions_opened,
                Mode.BOT.value,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                0,
                None,
                now,
            )
        return (
            state.conversation_id,
            state.bot_id,
            state.user_id,
            self._metadata_json(state),
            state.next_seq,
            state.sessions_opened,
            state.mode.value,
            session.session_id,
            session.started_at,
            session.last_activity,
            session.queued_at,
            session.agent_id,
            session.agent_name,
            None,  # the queue position is no longer stored (it is ephemeral)
            int(session.sign_off_offered),
            idle_deadline,
            now,
        )

    # -- reading ----------------------------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        if not self._running:
            raise StoreUnavailable(self._failure or "the store is not running")

        def with_reader() -> T:
            db = self._idle_readers.pop() if self._idle_readers else self._new_reader()
            try:
                return read(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(_explain_database_error(self.path, exc)) from exc
            finally:
                self._idle_readers.append(db)

        return await trio.to_thread.run_sync(with_reader, limiter=self._reader_limit)

    def _new_reader(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA query_only = ON")
        self._all_readers.append(db)
        return db

    # -- opening and closing ----------------------------------------------------------------

    def _open(self) -> None:
        """Open, check, lock and upgrade the file (worker thread). Raises StoreUnavailable."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"the data directory {path.parent} cannot be created: {exc.strerror or exc}"
            ) from exc
        for target in (path.parent, path):
            # SQLite's own errors for this vary (read-only, I/O error): say it plainly.
            if target.exists() and not os.access(target, os.W_OK):
                raise StoreUnavailable(
                    f"the database {path} cannot be opened for writing: {target} is not "
                    "writable; check that the data directory is writable"
                )
        self._take_file_lock()
        try:
            self._writer = self._connect_writer()
        except SchemaTooNew as exc:
            self._close()
            raise StoreUnavailable(f"the database {path} is refused: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            self._close()
            raise StoreUnavailable(_explain_database_error(path, exc)) from exc
        except BaseException:
            self._close()
            raise

    def _take_file_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(
                f"the database {self.path} cannot be opened for writing: {lock_path}: "
                f"{exc.strerror or exc}; check that the data directory is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreUnavailable(
                f"the database {self.path} is in use by another Switchover process; stop it "
                "or use another data directory"
            ) from exc
        self._lock_file = fd

    def _connect_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            # Read-only checks first: a file we refuse must leave exactly as it came.
            check_version(db)
            if self.verify:
                problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError(f"malformed: {'; '.join(problems[:3])}")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode!r})")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            # Messages of many conversations interleave, so each commit dirties about one
            # page per conversation; checkpointing less often copies each page once for many
            # commits instead of once for every few (bench/README.md, Store).
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            found, now = migrate(db)
            self.migrated_from = found
            if found is not None and found != now:
                log.warning("database %s upgraded from schema %d to %d", self.path, found, now)
            if self.max_bytes is not None:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {max(1, self.max_bytes // page_size)}")
            # Prove we can take the write lock now, rather than on the first message.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _close(self) -> None:
        for db in self._all_readers:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._all_readers.clear()
        self._idle_readers.clear()
        if self._writer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None
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
            _in_chunks(db, f"DELETE FROM {table} WHERE {column} IN ({{rows}})", doomed, "?")
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
    for start in range(0, len(ids), _ROWS_PER_STATEMENT):
        part = ids[start : start + _ROWS_PER_STATEMENT]
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


# -- rows <-> the core's records ------------------------------------------------------------


def _session_change(state: ConversationState, entry: Entry) -> tuple[str, tuple[Any, ...]] | None:
    """The change to the ``sessions`` table an entry marks: the session's start, an agent
    joining it, its end and reason. Derived from the entries, in their order, so a session
    that opens and ends within one batch is still recorded whole."""
    content = entry.content
    session_id = entry.session_id
    if session_id is None:
        return None
    if entry.sender is Party.SYSTEM and content.content_type == "notice":
        code = content.content.get("code")
        if code == "session_started":
            return (
                _SESSION_STARTED,
                (session_id, state.conversation_id, state.bot_id, entry.at, entry.at),
            )
        if code == "agent_joined":
            return (_SESSION_ASSIGNED, (content.content.get("agent_id"), session_id))
        return None
    if Party.BOT in entry.audience and (
        content.is_payload(SESSION_END) or content.is_payload(SESSION_EXPIRED)
    ):
        return (_SESSION_ENDED, (entry.at, entry.metadata.get("reason"), session_id))
    return None


def _state_from_row(row: Sequence[Any]) -> ConversationState:
    (
        conversation_id,
        bot_id,
        user_id,
        metadata,
        next_seq,
        sessions_opened,
        _mode,
        session_id,
        started_at,
        last_activity,
        queued_at,
        agent_id,
        agent_name,
        _position,
        sign_off_offered,
        _deadline,
        _updated_at,
        last_seq,
        later_activity,
    ) = row
    session = None
    if session_id is not None:
        session = Session(
            session_id,
            started_at,
            last_activity if later_activity is None else max(last_activity, later_activity),
            queued_at,
            agent_id,
            agent_name or "",
            bool(sign_off_offered),
        )
    return ConversationState(
        conversation_id,
        bot_id,
        user_id,
        json.loads(metadata),
        max(next_seq, (last_seq or 0) + 1),
        session,
        sessions_opened,
    )


def entry_from_row(row: Sequence[Any]) -> Entry:
    (
        conversation_id,
        seq,
        at,
        sender,
        content_type,
        content,
        audience,
        agent_id,
        session_id,
        meta,
    ) = row
    return Entry(
        conversation_id,
        seq,
        at,
        Party(sender),
        Content(content_type, json.loads(content)),
        frozenset(Party(p) for p in audience.split(",") if p),
        agent_id,
        session_id,
        json.loads(meta) if meta else {},
    )
