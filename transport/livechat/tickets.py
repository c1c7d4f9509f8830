"""What a platform-backed livechat remembers of each open session: its ticket.

A ticket is a view derived from the conversation, keyed by session id: whether the platform
has been told about the session, the last of the session's messages it has, the agent it
named, and whether the session ended. It is kept in a small SQLite file of its own beside the
conversations (``livechat.sqlite3`` in the data directory), so a restart, even after
``kill -9``, resumes each session's deliveries where they stopped; whatever the file missed
(the last write before a crash) is rebuilt from the conversation's log, which is the truth.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

FILE_NAME = "livechat.sqlite3"


@attrs.define
class Ticket:
    """One open session as a platform knows it.

    ``opened``: the platform was told the session exists (with its transcript);
    ``sent_seq``: the last of the session's entries it has; ``ref``: the platform's own id
    for the session (a Chatwoot conversation, a Gorgias ticket), once it gave one;
    ``ending``: the session ended in Switchover and the platform must be told (``reason``:
    why, once known); ``agent_id``/``agent_name``: the agent the platform named;
    ``cursor``: how far Switchover has read the platform's own side of the session (its last
    message id, for a platform read with ``fetch``); ``applied_seq``: the last entry of the
    conversation an action read that way produced (``None`` when not known), so an action
    applied just before a crash that lost the cursor is not applied twice.
    ``posted_id``: the platform's id of the last message Switchover posted for the session,
    so a post a crash left unsure (sent, but not recorded in ``sent_seq``) is looked for after
    it instead of being sent again.
    """

    session_id: str
    conversation_id: str
    bot_id: str
    user_id: str = ""
    opened: bool = False
    sent_seq: int = 0
    ref: str | None = None
    agent_id: str | None = None
    agent_name: str = ""
    ending: bool = False
    reason: str | None = None
    cursor: str | None = None
    applied_seq: int | None = None
    posted_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ticket:
        fields = {field.name for field in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class Tickets(Protocol):
    """Where a platform's tickets are kept (one place per platform-backed bot)."""

    async def load(self) -> list[Ticket]: ...

    async def save(self, ticket: Ticket) -> None: ...

    async def delete(self, session_id: str) -> None:
        """Forget the ticket and the answers remembered for its actions."""
        ...

    async def remember(self, session_id: str, action_id: str, answer: dict[str, Any]) -> None:
        """Keep the answer given to a platform's action, until the ticket is deleted."""
        ...

    async def recall(self, session_id: str, action_id: str) -> dict[str, Any] | None: ...


@attrs.define
class MemoryTickets:
    """Tickets for a server that keeps nothing across restarts (the memory store)."""

    rows: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    answers: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)

    async def load(self) -> list[Ticket]:
        return [Ticket.from_json(dict(row)) for row in self.rows.values()]

    async def save(self, ticket: Ticket) -> None:
        self.rows[ticket.session_id] = ticket.to_json()

    async def delete(self, session_id: str) -> None:
        self.rows.pop(session_id, None)
        self.answers.pop(session_id, None)

    async def remember(self, session_id: str, action_id: str, answer: dict[str, Any]) -> None:
        self.answers.setdefault(session_id, {})[action_id] = dict(answer)

    async def recall(self, session_id: str, action_id: str) -> dict[str, Any] | None:
        return self.answers.get(session_id, {}).get(action_id)


class SQLiteTickets:
    """Tickets of one platform (``scope``: the bot it serves) in a shared SQLite file.

    Each call runs on a worker thread, one at a time, with its own short transaction: a
    ticket changes once per message passed on, far less often than the conversations'
    store writes, so this file needs no writer of its own.
    """

    def __init__(self, path: Path, scope: str) -> None:
        self.path = path
        self.scope = scope
        self._lock = trio.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS tickets ("
                " scope TEXT NOT NULL, session_id TEXT NOT NULL, data TEXT NOT NULL,"
                " PRIMARY KEY (scope, session_id))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS answers ("
                " scope TEXT NOT NULL, session_id TEXT NOT NULL, action_id TEXT NOT NULL,"
                " answer TEXT NOT NULL, PRIMARY KEY (scope, session_id, action_id))"
            )
            self._db = db
        return self._db

    async def _run(self, query: str, args: tuple[Any, ...]) -> list[Any]:
        def run() -> list[Any]:
            return self._connect().execute(query, args).fetchall()

        async with self._lock:
            return await trio.to_thread.run_sync(run)

    async def load(self) -> list[Ticket]:
        rows = await self._run("SELECT data FROM tickets WHERE scope = ?", (self.scope,))
        return [Ticket.from_json(json.loads(data)) for (data,) in rows]

    async def save(self, ticket: Ticket) -> None:
        data = json.dumps(ticket.to_json(), separators=(",", ":"))
        await self._run(
            "INSERT INTO tickets (scope, session_id, data) VALUES (?, ?, ?)"
            " ON CONFLICT (scope, session_id) DO UPDATE SET data = excluded.data",
            (self.scope, ticket.session_id, data),
        )

    async def delete(self, session_id: str) -> None:
        for table in ("tickets", "answers"):
            await self._run(
                f"DELETE FROM {table} WHERE scope = ? AND session_id = ?",
                (self.scope, session_id),
            )

    async def remember(self, session_id: str, action_id: str, answer: dict[str, Any]) -> None:
        await self._run(
            "INSERT OR REPLACE INTO answers (scope, session_id, action_id, answer)"
            " VALUES (?, ?, ?, ?)",
            (self.scope, session_id, action_id, json.dumps(answer, separators=(",", ":"))),
        )

    async def recall(self, session_id: str, action_id: str) -> dict[str, Any] | None:
        rows = await self._run(
            "SELECT answer FROM answers WHERE scope = ? AND session_id = ? AND action_id = ?",
            (self.scope, session_id, action_id),
        )
        if not rows:
            return None
        data: dict[str, Any] = json.loads(rows[0][0])
        return data

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
