"""Reads beside the writer: a few read-only connections in worker threads, which in WAL mode
never wait for the writer and see every batch committed before they start; and the queries
they answer."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from actors import ConversationState, Entry, StoreUnavailable
from transport.store.connections import connect_reader, describe
from transport.store.rows import (
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    entry_from_row,
    state_from_row,
)

T = TypeVar("T")

# Every read of a conversation's messages reads both tables: ``messages`` and ``recent``, the
# last commits' messages not yet folded into it (transport/store/recent.py). Each side goes
# through its table's (conversation_id, seq) index (a test checks the query plans): the
# tables themselves are in insertion order, all conversations interleaved.


def _both(select: str, tail: str = "") -> str:
    """``select`` (written for ``messages``, parameters numbered) over both tables, then
    ``tail`` (an ORDER BY, a LIMIT) over the two together."""
    return f"{select} UNION ALL {select.replace(' FROM messages ', ' FROM recent ')}{tail}"


# A bot-mode message does not rewrite its conversation's row: the true next_seq is one past
# the last message when that is higher than the row's.
_LAST_SEQ = (
    "(SELECT max(seq) FROM ("
    + _both("SELECT max(seq) AS seq FROM messages WHERE conversation_id = conversations.id")
    + "))"
)
# Nor does a live-session message that only touched the session: its last_activity is the
# time of the newest message written after the row (numbered from the row's next_seq on).
_LATER_ACTIVITY = (
    "(SELECT max(at) FROM ("
    + _both(
        "SELECT max(at) AS at FROM messages WHERE conversation_id = conversations.id"
        " AND seq >= conversations.next_seq"
    )
    + "))"
)
ENTRIES_AFTER = _both(
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2",
    " ORDER BY seq",
)
# The ids kept with a conversation's last entries, without the entries (a woken conversation
# learns which messages it already stored; building 256 entries costs twenty times more).
MESSAGE_IDS_AFTER = _both(
    "SELECT seq, message_id FROM messages WHERE conversation_id = ?1 AND seq > ?2"
    " AND message_id IS NOT NULL",
    " ORDER BY seq",
)
# A page of a catch-up, and a page of what one agent may see (its own entries): a replay of
# a long conversation is read a page at a time, and an agent's skips the others' rows in SQLite.
ENTRIES_PAGE = f"{ENTRIES_AFTER} LIMIT ?3"
AGENT_ENTRIES_PAGE = _both(
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ?1 AND seq > ?2"
    " AND agent_id = ?3",
    " ORDER BY seq LIMIT ?4",
)
LOAD_CONVERSATION = (
    f"SELECT {CONVERSATION_COLUMNS}, {_LAST_SEQ}, {_LATER_ACTIVITY} FROM conversations WHERE id = ?"
)
OPEN_SESSIONS = (
    f"SELECT {CONVERSATION_COLUMNS}, {_LAST_SEQ}, {_LATER_ACTIVITY} FROM conversations"
    " WHERE session_id IS NOT NULL ORDER BY started_at"
)
_OWED = ", ".join("m." + column.strip() for column in MESSAGE_COLUMNS.split(","))
# In the outbox's order (sorted afterwards: an ORDER BY over both would walk the whole index
# of ``messages`` to produce it).
BOT_BACKLOG = (
    f"SELECT {_OWED} FROM bot_outbox o JOIN messages m ON m.conversation_id = o.conversation_id"
    f" AND m.seq = o.seq UNION ALL SELECT {_OWED} FROM bot_outbox o JOIN recent m"
    " ON m.conversation_id = o.conversation_id AND m.seq = o.seq"
)


class Readers:
    """Read-only connections, at most ``readers`` in use at once, kept open between reads."""

    def __init__(self, path: Path, busy_timeout: float, readers: int) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._idle: list[sqlite3.Connection] = []
        self._all: list[sqlite3.Connection] = []
        self._limit = trio.CapacityLimiter(readers)

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` run in a worker thread on an idle connection (a new one when none is
        idle). Raises :class:`StoreUnavailable` when the file fails."""

        def with_reader() -> T:
            db = self._idle.pop() if self._idle else self._new()
            try:
                return read(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(describe(self.path, exc)) from exc
            finally:
                self._idle.append(db)

        return await trio.to_thread.run_sync(with_reader, limiter=self._limit)

    def _new(self) -> sqlite3.Connection:
        db = connect_reader(self.path, self.busy_timeout)
        self._all.append(db)
        return db

    def close(self) -> None:
        for db in self._all:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._all.clear()
        self._idle.clear()


def bot_backlog(db: sqlite3.Connection) -> list[Entry]:
    rows = sorted(db.execute(BOT_BACKLOG).fetchall(), key=lambda row: (row[0], row[1]))
    return [entry_from_row(row) for row in rows]


def load(db: sqlite3.Connection, conversation_id: str) -> ConversationState | None:
    row = db.execute(LOAD_CONVERSATION, (conversation_id,)).fetchone()
    return None if row is None else state_from_row(row)


def entries_after(db: sqlite3.Connection, conversation_id: str, after_seq: int) -> list[Entry]:
    rows = db.execute(ENTRIES_AFTER, (conversation_id, after_seq)).fetchall()
    return [entry_from_row(row) for row in rows]


def message_ids(
    db: sqlite3.Connection, conversation_id: str, after_seq: int
) -> list[tuple[int, str]]:
    return db.execute(MESSAGE_IDS_AFTER, (conversation_id, after_seq)).fetchall()


def entries_page(
    db: sqlite3.Connection, conversation_id: str, after_seq: int, limit: int, agent_id: str | None
) -> list[Entry]:
    if agent_id is None:
        rows = db.execute(ENTRIES_PAGE, (conversation_id, after_seq, limit)).fetchall()
    else:
        parameters = (conversation_id, after_seq, agent_id, limit)
        rows = db.execute(AGENT_ENTRIES_PAGE, parameters).fetchall()
    return [entry_from_row(row) for row in rows]


def open_sessions(db: sqlite3.Connection) -> list[ConversationState]:
    rows = db.execute(OPEN_SESSIONS).fetchall()
    return [state_from_row(row) for row in rows]


def last_presences(db: sqlite3.Connection) -> dict[str, tuple[str, float]]:
    rows = db.execute("SELECT agent_id, presence, at FROM agents").fetchall()
    return {agent_id: (presence, at) for agent_id, presence, at in rows}
