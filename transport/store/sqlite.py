"""The durable store: conversations in one SQLite file, written with group commit.

Acknowledgement means durable, and durability must cost little: :meth:`SQLiteStore.record`
returns once its rows are committed, in one transaction with everything else queued
meanwhile. :class:`SQLiteStore` puts the parts together, each in a module of its own:

* :mod:`~transport.store.rows`: the core's states and entries as rows, and back;
* :mod:`~transport.store.row_cache`: which rows are on disk, so a message can skip its
  conversation's row;
* :mod:`~transport.store.writer`: the one writer task and its group commit;
* :mod:`~transport.store.readers`: reads in worker threads, beside the writer;
* :mod:`~transport.store.connections`: opening the file (checks, WAL, the schema upgrade);
* :mod:`~transport.store.lock`: one Switchover per file;
* :mod:`~transport.store.retention`: pruning old conversations;
* :mod:`~transport.store.schema`: the schema and its migrations.

Run it with :func:`open_sqlite_store` (or :meth:`SQLiteStore.run` in your own nursery).
"""

from __future__ import annotations

import contextlib
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
from transport.store.connections import check_directory, connect_writer, describe
from transport.store.lock import take_lock
from transport.store.readers import Readers
from transport.store.recent import FOLD_AT, FOLD_ROWS
from transport.store.retention import PRUNE_CHUNK_ROWS, Pruner
from transport.store.row_cache import RowCache
from transport.store.rows import Rows, writable
from transport.store.schema import SchemaTooNew
from transport.store.writer import Pending, Writer

DATABASE_FILENAME = "switchover.db"

T = TypeVar("T")

__all__ = [
    "DATABASE_FILENAME",
    "SQLiteStore",
    "StoreUnavailable",
    "database_path",
    "open_sqlite_store",
]


def database_path(data_dir: str | os.PathLike[str]) -> Path:
    """Where the database lives in a data directory."""
    return Path(data_dir) / DATABASE_FILENAME


class SQLiteStore:
    """Implements :class:`actors.ports.Store` on one SQLite file.

    ``settings``: each bot's settings, used only to write each conversation's idle deadline
    as an absolute time (restarts derive it again from the last activity and the settings
    then in force). ``synchronous``: SQLite's sync level; ``"FULL"`` (the default) survives
    power loss, ``"NORMAL"`` survives a killed process but may lose the last commits on
    power loss. ``max_bytes`` caps the file's size (the database reports itself full past
    it). ``fold_at``, ``fold_rows``: when the writer moves recent messages into the big table,
    and how many at a time (transport/store/recent.py). ``busy_timeout``: how long to wait
    for a lock held by someone else before failing. ``verify``: check the file's integrity
    on start-up (a full read of it).
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
        fold_at: int = FOLD_AT,
        fold_rows: int = FOLD_ROWS,
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
        self._lock_file: int | None = None
        self._reader_pool = Readers(self.path, busy_timeout, readers)
        self._row_cache = RowCache(self.settings)
        self._writer = Writer(
            self.path, max_batch, self._row_cache.remember, fold_at=fold_at, fold_rows=fold_rows
        )
        self._pruner = Pruner(self._writer, self._read, self._row_cache.forget)

    @property
    def commits(self) -> int:
        """Transactions committed for calls."""
        return self._writer.commits

    @property
    def committed_calls(self) -> int:
        """Calls stored."""
        return self._writer.committed_calls

    @property
    def folds(self) -> int:
        """Recent messages moved into the big table, in bounded steps, so far."""
        return self._writer.folds

    @property
    def prune_chunks(self) -> int:
        """Retention transactions committed."""
        return self._pruner.chunks

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

    async def message_ids(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        """``(seq, message_id)`` of the entries after ``after_seq`` kept with an id."""
        return await self._read(lambda db: readers.message_ids(db, conversation_id, after_seq))

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

        It never holds up traffic for long: it deletes in small transactions of at most
        ``chunk_rows`` messages and conversation rows, which take turns with the writer's
        commits (:class:`~transport.store.retention.Pruner`).

        Each chunk applies the rule afresh in its own transaction, so a conversation that
        speaks again or opens a session during a prune is kept; the cutoff is fixed when the
        prune starts. A conversation with more messages than ``chunk_rows`` loses them oldest
        first, over several transactions, before its row goes. A prune that is cancelled or
        fails keeps what its committed chunks deleted.
        """
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        cutoff = (now if now is not None else time.time()) - older_than_days * 86400.0
        return await self._pruner.prune(cutoff, chunk_rows)

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
