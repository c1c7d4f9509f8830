"""The SQLite database's schema, by version, and the migrations between versions.

The database records its version in ``schema_version``. Opening a file runs every migration
from its version up to :data:`SCHEMA_VERSION` in one transaction, so a crash half-way leaves
the old version intact. A file written by a newer Switchover (a version this code has never
heard of) is refused: guessing at its meaning could damage it.

Version history:

1. Conversations with their open session as one JSON column; messages.
2. The session split into columns (mode, agent, queue and activity times, the idle deadline
   as an absolute wall-clock time) so operators can query them and restarts can find open
   sessions through an index; a ``sessions`` table with each session's end and reason; the
   agents' last presence; ``updated_at`` for retention.
3. Messages in a rowid table with a unique index on ``(conversation_id, seq)``, instead of a
   WITHOUT ROWID table keyed on it. Every commit carries messages of hundreds of
   conversations: keyed on the conversation, each one landed in a different leaf of the
   table's B-tree, whole rows being moved as leaves split. Now rows are appended at the end
   of the table and only the small index entries are scattered, which makes an insert
   several times cheaper; every read still finds a conversation's messages through the index.
4. ``bot_outbox``: the entries stored for a bot and not yet answered by it, so a restart hands
   them over again instead of losing them. It holds only what is owed (a row is deleted once
   the bot has answered), so it stays a few pages however long the server runs.
5. ``messages.message_id``: the sender's id for the message that wrote the entry (the entry
   its ``ack`` named), so a resend is answered from the log after a restart instead of being
   stored twice. Added as a nullable column (no rewrite of the table); older messages have
   none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 6


class SchemaTooNew(Exception):
    """The file was written by a newer Switchover."""


# Each version's SQL below is frozen: a migration must go on building exactly the tables it
# built, and the old versions' texts say what an old file holds. Where a later table repeats
# an earlier one's columns (conversations in versions 1 and 2, messages in versions 1 and 3),
# the repetition is that history, kept as it was written.

# The messages table of versions 1 and 2 (the migration to version 2 leaves it alone).
_MESSAGES_V1 = """
CREATE TABLE messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    sender TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content TEXT NOT NULL,
    audience TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    metadata TEXT,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
"""

# The first schema, kept verbatim: tests build version-1 files from it, and it documents
# what the migration to version 2 starts from.
V1_SCHEMA = (
    """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    sessions_opened INTEGER NOT NULL,
    session TEXT
);"""
    + _MESSAGES_V1
    + "INSERT INTO schema_version (version) VALUES (1);\n"
)

_V2_TABLES = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    next_seq INTEGER NOT NULL,
    sessions_opened INTEGER NOT NULL,
    mode TEXT NOT NULL,
    session_id TEXT,
    started_at REAL,
    last_activity REAL,
    queued_at REAL,
    agent_id TEXT,
    agent_name TEXT,
    position INTEGER,
    sign_off_offered INTEGER NOT NULL DEFAULT 0,
    deadline REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX conversations_open ON conversations (started_at) WHERE session_id IS NOT NULL;
CREATE INDEX conversations_updated ON conversations (updated_at);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    bot_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    queued_at REAL,
    agent_id TEXT,
    ended_at REAL,
    end_reason TEXT
);
CREATE INDEX sessions_by_conversation ON sessions (conversation_id);
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY,
    presence TEXT NOT NULL,
    at REAL NOT NULL
);
"""

# The second schema as a whole, kept verbatim for the same reasons as the first.
V2_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL);\n"
    + _MESSAGES_V1
    + _V2_TABLES
    + "INSERT INTO schema_version (version) VALUES (2);\n"
)

# The rowid (an implicit column) gives each message its place in insertion order; nothing
# refers to it. Readers go through the index, which also guards against a message numbered
# twice.
_MESSAGES_V3 = """
CREATE TABLE messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    sender TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content TEXT NOT NULL,
    audience TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    metadata TEXT
);
CREATE UNIQUE INDEX messages_by_conversation ON messages (conversation_id, seq);
"""


_BOT_OUTBOX_V4 = """
CREATE TABLE bot_outbox (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
"""


_MESSAGE_IDS_V5 = """
ALTER TABLE messages ADD COLUMN message_id TEXT;
"""


# The same columns as ``messages`` (a fold copies rows across as they are), and its own small
# index: it guards against a message numbered twice, and keeps reads of a conversation's
# latest messages from scanning the table.
_RECENT_V6 = """
CREATE TABLE recent (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    sender TEXT NOT NULL,
    content_type TEXT NOT NULL,
    content TEXT NOT NULL,
    audience TEXT NOT NULL,
    agent_id TEXT,
    session_id TEXT,
    metadata TEXT,
    message_id TEXT
);
CREATE UNIQUE INDEX recent_by_conversation ON recent (conversation_id, seq);
"""


def _create_latest(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    _run_script(db, _MESSAGES_V3 + _V2_TABLES + _BOT_OUTBOX_V4 + _MESSAGE_IDS_V5 + _RECENT_V6)


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Split the session JSON into columns and rebuild session history from the messages."""
    _run_script(
        db,
        "ALTER TABLE conversations RENAME TO conversations_v1;\n"
        + _V2_TABLES
        + """
INSERT INTO conversations (
    id, bot_id, user_id, metadata, next_seq, sessions_opened, mode, session_id, started_at,
    last_activity, queued_at, agent_id, agent_name, position, sign_off_offered, updated_at
)
SELECT
    c.id, c.bot_id, c.user_id, c.metadata, c.next_seq, c.sessions_opened,
    CASE
        WHEN c.session IS NULL THEN 'bot'
        WHEN json_extract(c.session, '$.agent_id') IS NULL THEN 'queued'
        ELSE 'live'
    END,
    json_extract(c.session, '$.session_id'),
    json_extract(c.session, '$.started_at'),
    json_extract(c.session, '$.last_activity'),
    json_extract(c.session, '$.queued_at'),
    json_extract(c.session, '$.agent_id'),
    COALESCE(json_extract(c.session, '$.agent_name'), ''),
    json_extract(c.session, '$.position'),
    COALESCE(json_extract(c.session, '$.sign_off_offered'), 0),
    COALESCE((SELECT max(m.at) FROM messages m WHERE m.conversation_id = c.id), 0)
FROM conversations_v1 c;
DROP TABLE conversations_v1;
INSERT INTO sessions (session_id, conversation_id, bot_id, started_at, queued_at)
SELECT m.session_id, m.conversation_id, c.bot_id, m.at, m.at
FROM messages m JOIN conversations c ON c.id = m.conversation_id
WHERE m.content_type = 'notice' AND m.session_id IS NOT NULL
  AND json_extract(m.content, '$.code') = 'session_started';
UPDATE sessions SET agent_id = (
    SELECT json_extract(m.content, '$.agent_id') FROM messages m
    WHERE m.conversation_id = sessions.conversation_id AND m.session_id = sessions.session_id
      AND m.content_type = 'notice' AND json_extract(m.content, '$.code') = 'agent_joined'
    ORDER BY m.seq DESC LIMIT 1
);
UPDATE sessions SET (ended_at, end_reason) = (
    SELECT m.at, json_extract(m.metadata, '$.reason') FROM messages m
    WHERE m.conversation_id = sessions.conversation_id AND m.session_id = sessions.session_id
      AND m.content_type = 'payload'
      AND json_extract(m.content, '$.payload')
          IN ('LIVECHAT_SESSION_END', 'LIVECHAT_SESSION_EXPIRED')
    ORDER BY m.seq DESC LIMIT 1
);
""",
    )


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """Copy the messages into a rowid table, a conversation's messages together and in order
    (so reading one transcript touches few pages), then index them."""
    _run_script(
        db,
        "ALTER TABLE messages RENAME TO messages_v2;\n"
        + _MESSAGES_V3
        + """
INSERT INTO messages (
    conversation_id, seq, at, sender, content_type, content, audience, agent_id, session_id,
    metadata
)
SELECT
    conversation_id, seq, at, sender, content_type, content, audience, agent_id, session_id,
    metadata
FROM messages_v2 ORDER BY conversation_id, seq;
DROP TABLE messages_v2;
""",
    )


def _v3_to_v4(db: sqlite3.Connection) -> None:
    """Add the bot's outbox, empty: what an older version had in flight to a bot when it
    stopped was never recorded, so there is nothing to hand over again."""
    _run_script(db, _BOT_OUTBOX_V4)


def _v4_to_v5(db: sqlite3.Connection) -> None:
    """Keep each message's id beside it: the messages stored before have none, so a resend
    of one of them (from a client that saw no answer before the upgrade) is stored again,
    as it was before."""
    _run_script(db, _MESSAGE_IDS_V5)


def _v5_to_v6(db: sqlite3.Connection) -> None:
    """Add ``recent``, empty: every message stored so far is in ``messages`` already."""
    _run_script(db, _RECENT_V6)


# MIGRATIONS[n] upgrades a version-n database to version n + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: ``executescript`` would commit the open transaction."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


def version_of(db: sqlite3.Connection) -> int | None:
    """The file's schema version; ``None`` for a new, empty database."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise sqlite3.DatabaseError(
                f"it holds tables {sorted(tables)} but no schema version: not a Switchover file"
            )
        return None
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    if row is None or not isinstance(row[0], int):
        raise sqlite3.DatabaseError("its schema_version table is empty")
    return int(row[0])


def check_version(db: sqlite3.Connection) -> int | None:
    """The file's version; raises :class:`SchemaTooNew` for one this code cannot read."""
    found = version_of(db)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {found}, but this Switchover only knows "
            f"versions up to {SCHEMA_VERSION}: upgrade Switchover, or use another data "
            "directory"
        )
    return found


def migrate(db: sqlite3.Connection) -> tuple[int | None, int]:
    """Bring ``db`` (in autocommit mode) to :data:`SCHEMA_VERSION` in one transaction.

    Returns the version found (``None`` for a new file) and the version now. Raises
    :class:`SchemaTooNew` for a file from a newer Switchover, without touching it.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        found = check_version(db)
        if found is None:
            _create_latest(db)
        else:
            for version in range(found, SCHEMA_VERSION):
                MIGRATIONS[version](db)
            if found != SCHEMA_VERSION:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return found, SCHEMA_VERSION
