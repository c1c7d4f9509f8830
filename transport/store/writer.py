"""The store's one writer: a task that commits every call queued so far as one transaction in
a thread of its own (group commit), so under load many acknowledgements share one commit and
its fsync, and under light load a message waits for exactly one small commit."""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import outcome
import trio

from actors import StoreUnavailable
from transport.store.connections import describe
from transport.store.recent import FOLD_AT, FOLD_ROWS, fold
from transport.store.rows import CONVERSATION_COLUMNS, Rows

log = logging.getLogger("switchover.store")


class Pending:
    """One call waiting for the commit of its rows, or for its job to run.

    The caller's task parks itself here and the writer reschedules it once the commit is
    done (a bare park costs less than a :class:`trio.Event` with its parking lot, and it
    lets the writer release each chunk of a large batch as soon as that chunk is durable).
    """

    __slots__ = ("error", "finished", "job", "result", "rows", "task")

    def __init__(
        self, rows: Rows | None, job: Callable[[sqlite3.Connection], Any] | None = None
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


class WriterThread:
    """The writer's own thread. A commit is handed to it at once, with no pass of trio's
    scheduler first (``trio.to_thread.run_sync`` takes one): so the next commit's SQL and
    fsync run while the callers of the last one are still being woken and answered, instead
    of after them (bench/README.md, 2026-12-03 (evening))."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let the thread end once it has done what it was given."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    async def run(self, call: Callable[[], Any]) -> Any:
        """``call()`` in the thread; its result or exception here. Not cancellable: the
        thread is working on the caller's data (every caller is shielded anyway)."""
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def job() -> None:
            result = outcome.capture(call)
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        self._jobs.put(job)
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()


# Into the small table of recent messages, folded into ``messages`` later (recent.py).
_INSERT_MESSAGE = (
    "INSERT INTO recent (conversation_id, seq, at, sender, content_type, content, audience,"
    " agent_id, session_id, metadata, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_CONVERSATION = (
    f"INSERT OR REPLACE INTO conversations ({CONVERSATION_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_PRESENCE = "INSERT OR REPLACE INTO agents (agent_id, presence, at) VALUES (?, ?, ?)"
_OWE_BOT = "INSERT OR IGNORE INTO bot_outbox (conversation_id, seq) VALUES (?, ?)"
_BOT_ANSWERED = "DELETE FROM bot_outbox WHERE (conversation_id, seq) IN (VALUES {rows})"


ROWS_PER_STATEMENT = 128
_MULTI_ROW_SQL: dict[tuple[str, int], str] = {}


def _insert_rows(db: sqlite3.Connection, insert: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` with multi-row ``INSERT ... VALUES (...), (...)`` statements (see
    :func:`in_chunks`)."""
    head, _, values = insert.partition(" VALUES ")
    in_chunks(db, f"{head} VALUES {{rows}}", rows, values)


def in_chunks(
    db: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]], group: str = ""
) -> None:
    """Run ``statement`` over ``rows``, many at a time: its ``{rows}`` becomes a list of
    ``group`` (by default one ``?`` per value of a row, in parentheses), one per row.

    Not ``executemany``: it takes the GIL back after every row, each time waiting out the
    switch interval while trio's thread is busy (bench/README.md, Store, 2026-11-25, second
    pass). Chunk sizes are powers of two, so only a few statements are ever prepared (and
    cached).
    """
    start = 0
    while start < len(rows):
        size = min(ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
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


class Writer:
    """The only writing connection (``db``, set once the file is open) and the calls queued
    for it. ``remember`` learns of the rows of every commit, after it, in the writer's thread.
    """

    def __init__(
        self,
        path: Path,
        max_batch: int,
        remember: Callable[[list[Rows]], None],
        fold_at: int = FOLD_AT,
        fold_rows: int = FOLD_ROWS,
    ) -> None:
        self.path = path
        self.max_batch = max_batch
        self.fold_at = fold_at
        self.fold_rows = fold_rows
        self.db: sqlite3.Connection | None = None
        self.commits = 0
        self.committed_calls = 0
        self.folds = 0
        # Rows in ``recent`` (none when the writer starts: opening the file folds them all),
        # and how many make the writer fold (pushed further after a failed fold, so a full
        # disk is not retried and logged after every commit).
        self.recent = 0
        self._next_fold = fold_at
        self.running = False
        self.failure: str | None = None
        self._remember = remember
        self._filling: list[Pending] = []
        # (conversation id, seq) of bot events answered since the last commit: taken out of
        # the outbox by the next one, with no caller waiting for it.
        self._answered: list[tuple[str, int]] = []
        self._wake = trio.Event()
        self._thread = WriterThread(f"switchover writer {path.name}")

    def check_running(self) -> None:
        """Raise :class:`StoreUnavailable` unless the writer is serving."""
        if not self.running:
            raise StoreUnavailable(self.failure or "the store is not running")

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled; then refuse whatever is still queued."""
        self.running = True
        self._thread.start()
        task_status.started()
        try:
            await self._write_forever()
        finally:
            self.running = False
            self.failure = "the store has stopped"
            # Bots' answers noted since the last commit are written before closing, so a
            # clean stop hands no answered event to a bot again. Messages still waiting are
            # not: their senders were never told they were stored, and are gone.
            answered, self._answered = self._answered, []
            if answered:
                with trio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await self._thread.run(lambda: self._commit([], answered))
            self._thread.stop()
            for pending in self._filling:
                pending.error = StoreUnavailable("the store has stopped")
                pending.release()
            self._filling = []

    async def _write_forever(self) -> None:
        while True:
            if not self._filling and not self._answered:
                await self._wake.wait()
                # Let every task that is ready to run now queue its record too: one
                # scheduler pass costs microseconds, a commit costs an fsync.
                await trio.lowlevel.cancel_shielded_checkpoint()
            else:
                # Calls that came during the last commit go at once, with no scheduler pass:
                # their commit runs while the last one's callers are being answered. (A stop
                # is still heard between two commits.)
                await trio.lowlevel.checkpoint_if_cancelled()
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
                if self.recent >= self._next_fold:
                    # After the releases: nobody's acknowledgement waits for a fold.
                    await self._thread.run(self._fold)

    async def _commit_part(self, part: list[Pending], answered: list[tuple[str, int]]) -> None:
        try:
            # The answers ride with the first part (or alone, when no call is waiting); lost
            # with a failed commit, they are redelivered later.
            await self._thread.run(lambda: self._commit(part, answered))
        except Exception:
            # A bug, not a disk problem: nobody in the batch may hear "stored", and nobody
            # hears what the others wrote (it is in the log).
            log.exception("the store's writer failed")
            for pending in part:
                if pending.error is None:
                    pending.error = StoreUnavailable("the store failed")
        # The callers go on as soon as their part is durable: their work on trio's thread
        # overlaps the next commit in the writer's thread. Released here, by the writer (not
        # as the outcome comes back): the writer then hands over the calls that came
        # meanwhile before any caller runs, so the next commit never waits behind them (that
        # wait was 3-5 ms a commit at 100 live sessions, against 0.2 ms).
        for pending in part:
            pending.release()

    def answer(self, conversation_id: str, seq: int) -> None:
        """Take entry ``seq`` out of the bot's outbox with the next commit, without waiting."""
        if not self.running:
            return
        if not self._filling and not self._answered:
            self._wake.set()
        self._answered.append((conversation_id, seq))

    async def submit(self, pending: Pending) -> None:
        """Queue ``pending`` and wait until it is committed (or its job has run). Raises what
        the commit raised for it, or :class:`StoreUnavailable` when the writer is not
        running."""
        self.check_running()
        if not self._filling and not self._answered:
            self._wake.set()
        self._filling.append(pending)
        await pending.wait()
        if pending.error is not None:
            raise pending.error

    def _commit(self, batch: list[Pending], answered: list[tuple[str, int]]) -> None:
        """Write one batch in one transaction (writer's thread), and take the ``answered`` bot
        events out of the outbox. Sets ``error`` on the calls that were not stored; the
        others are durable when this returns."""
        good = [(pending, pending.rows) for pending in batch if pending.rows is not None]
        jobs = [pending for pending in batch if pending.job is not None]
        if good or answered:
            self._write_batch(good, answered)
        for pending in jobs:
            assert pending.job is not None
            db = self.db
            try:
                if db is None:
                    raise sqlite3.OperationalError("the store is closed")
                pending.result = pending.job(db)
            except sqlite3.Error as exc:
                pending.error = StoreUnavailable(describe(self.path, exc))

    def _fold(self) -> None:
        """Move the oldest recent messages into ``messages`` (writer's thread). A failure is
        logged and tried again once ``fold_at`` more rows have come (the rows stay readable
        where they are)."""
        db = self.db
        if db is None:
            return
        try:
            self.recent -= fold(db, self.fold_rows)
        except sqlite3.Error as exc:
            log.error("moving recent messages failed: %s", describe(self.path, exc))
            self._next_fold = self.recent + self.fold_at
            return
        self._next_fold = self.fold_at
        self.folds += 1

    def _write_batch(
        self, good: list[tuple[Pending, Rows]], answered: list[tuple[str, int]]
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
            message = describe(self.path, exc)
            log.error("commit of %d calls failed: %s", len(good), message)
            for pending, _ in good:
                pending.error = StoreUnavailable(message)
            return
        else:
            self._remember([rows for _, rows in good])
        self.commits += 1
        self.committed_calls += sum(1 for pending, _ in good if pending.error is None)

    def _write_part(self, part: list[tuple[Pending, Rows]]) -> None:
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
            message = describe(self.path, exc)
            for pending, _ in part:
                pending.error = StoreUnavailable(message)
        else:
            self._remember([rows for _, rows in part])

    def _write(self, batch: list[Rows], answered: list[tuple[str, int]]) -> None:
        db = self.db
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
                in_chunks(db, _BOT_ANSWERED, answered)
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
        self.recent += len(messages)

    def close(self) -> None:
        """Close the writing connection (after :meth:`serve`), every recent message folded
        first (a few milliseconds), so the file at rest keeps them all in ``messages``."""
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                fold(self.db, None)
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
