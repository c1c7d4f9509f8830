"""Opening the database file: the checks before it, the writer's connection (WAL, its sync
level, the schema upgrade) and the readers', and plain words for an operator when the file
fails."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

from actors import StoreUnavailable
from transport.store.recent import fold
from transport.store.schema import check_version, migrate

log = logging.getLogger("switchover.store")

WAL_CHECKPOINT_PAGES = 8192
"""Pages (4 KiB) the write-ahead log grows to before it is copied into the database."""
CACHE_KIB = 32768
"""The writer's page cache: the pages many live conversations write to stay in memory."""


def check_directory(path: Path) -> None:
    """Create the database's directory if need be, and check that the database can be
    written. Raises :class:`StoreUnavailable`."""
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


def connect_writer(
    path: Path, *, busy_timeout: float, synchronous: str, verify: bool, max_bytes: int | None
) -> tuple[sqlite3.Connection, int | None]:
    """The writer's connection, the file checked (its version, its integrity with
    ``verify``), in WAL mode and upgraded to the latest schema; and the schema version found
    (``None`` for a new file). Raises :class:`~transport.store.schema.SchemaTooNew`,
    ``sqlite3.Error`` or ``OSError``, leaving a file it refuses as it came."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        # Read-only checks first: a file we refuse must leave exactly as it came.
        check_version(db)
        if verify:
            problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError(f"malformed: {'; '.join(problems[:3])}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        # Messages of many conversations interleave, so each commit dirties about one
        # page per conversation; checkpointing less often copies each page once for many
        # commits instead of once for every few (bench/README.md, Store, 2026-11-25, second
        # pass).
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        found, now = migrate(db)
        if found is not None and found != now:
            log.warning("database %s upgraded from schema %d to %d", path, found, now)
        if max_bytes is not None:
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")
        # Prove we can take the write lock now, rather than on the first message, and move
        # what the last run left in ``recent`` (a few thousand rows at most).
        fold(db, None)
    except BaseException:
        db.close()
        raise
    return db, found


def connect_reader(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection (any thread may use it, one at a time)."""
    db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA query_only = ON")
    return db


def describe(path: Path, exc: BaseException) -> str:
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
