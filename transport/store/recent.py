"""The recent messages: a commit appends its messages to ``recent``, a small table, and the
writer moves them into ``messages`` later, in bounded steps (folds), sorted by conversation.

Why: a commit carries one message each of many conversations. Written straight into
``messages``, each one lands in a different leaf of the big ``(conversation_id, seq)`` index:
one scattered page per message to write to the log, checkpoint and fsync, the largest cost of
a durable message (bench/README.md, 2026-12-03). ``recent``'s own index stays a few pages
however long the server runs, and a fold writes a conversation's messages since the last
fold side by side, into one leaf.

Every read of a conversation's messages reads both tables (``transport.store.readers``). A
conversation's rows in ``recent`` always come after its rows in ``messages``: a fold moves
the oldest rows first, and a conversation commits its entries in order.
"""

from __future__ import annotations

import logging
import sqlite3

from transport.store.rows import MESSAGE_COLUMNS

log = logging.getLogger("switchover.store")

FOLD_AT = 2048
"""Rows in ``recent`` past which the writer folds, after a commit."""
FOLD_ROWS = 1024
"""Rows one fold moves at most: what bounds the writer's pause (a few milliseconds)."""

_OLDEST_BOUND = "SELECT rowid FROM recent ORDER BY rowid LIMIT 1 OFFSET ?"
_NEWEST = "SELECT max(rowid) FROM recent"
_MOVE = (
    f"INSERT {{verb}}INTO messages ({MESSAGE_COLUMNS}) SELECT {MESSAGE_COLUMNS} FROM recent"
    " WHERE rowid <= ? ORDER BY conversation_id, seq"
)
_FORGET = "DELETE FROM recent WHERE rowid <= ?"


def fold(db: sqlite3.Connection, rows: int | None = FOLD_ROWS) -> int:
    """Move the oldest ``rows`` rows of ``recent`` (all of them with ``None``) into
    ``messages``, in one transaction of its own. Returns how many left ``recent``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        moved = fold_within(db, rows)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return moved


def fold_within(db: sqlite3.Connection, rows: int | None = None) -> int:
    """:func:`fold` inside a transaction the caller holds (retention folds everything before
    it judges a conversation by its last message)."""
    bound = None
    if rows is not None:
        row = db.execute(_OLDEST_BOUND, (rows - 1,)).fetchone()
        bound = None if row is None else row[0]
    if bound is None:
        bound = db.execute(_NEWEST).fetchone()[0]
        if bound is None:
            return 0
    try:
        db.execute("SAVEPOINT fold")
        db.execute(_MOVE.format(verb=""), (bound,))
    except sqlite3.IntegrityError:
        # A message numbered twice, once in each table: impossible while one writer owns
        # the file. The copy already in ``messages`` (the first written) is kept.
        db.execute("ROLLBACK TO fold")
        log.error("a fold met messages already stored under the same numbers; kept the first")
        db.execute(_MOVE.format(verb="OR IGNORE "), (bound,))
    db.execute("RELEASE fold")
    return int(db.execute(_FORGET, (bound,)).rowcount)
