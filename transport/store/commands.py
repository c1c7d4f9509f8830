"""Maintenance commands for the SQLite store: ``transcript`` and ``prune``.

``switchover transcript ID`` reads one conversation from the data directory, even while the
server runs (WAL lets a reader in beside the writer), and never writes to the file.
``switchover prune --older-than-days N`` deletes old conversations; it opens the store the
way the server does, so it refuses to run beside a running server (which prunes by itself
when told to, see :func:`transport.store.retention.keep_pruning`). With ``--dry-run`` it only
reads, and says what it would delete.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from actors import Entry, StoreUnavailable
from transport.errors import ConfigError
from transport.store.attachments import sweep_attachments
from transport.store.readers import ENTRIES_AFTER
from transport.store.retention import PrunePreview, prune_preview
from transport.store.rows import entry_from_row
from transport.store.schema import SchemaTooNew, check_version
from transport.store.sqlite import database_path, open_sqlite_store

FORMATS = ("json", "text")


def register(subparsers: Any, data_dir_of: Callable[[argparse.Namespace], Path]) -> None:
    """Add ``transcript`` and ``prune`` to the ``switchover`` command. ``data_dir_of`` finds
    the data directory from the arguments (the CLI knows the config; the store does not)."""
    transcript = subparsers.add_parser(
        "transcript",
        help="print one conversation from the data directory",
        description="Print every message of one conversation, as JSON or as text.",
    )
    transcript.add_argument("conversation_id", metavar="CONVERSATION_ID")
    transcript.add_argument("--format", choices=FORMATS, default="text")
    _data_dir_arguments(transcript)
    transcript.set_defaults(handler=transcript_command, data_dir_of=data_dir_of)

    prune = subparsers.add_parser(
        "prune",
        help="delete conversations older than N days",
        description=(
            "Delete conversations not written to for N days and with no open livechat "
            "session, with their messages. Stop the server first (or let it prune by itself)."
        ),
    )
    prune.add_argument("--older-than-days", type=float, required=True, metavar="N")
    prune.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be deleted (how many, the oldest and newest) and delete nothing",
    )
    _data_dir_arguments(prune)
    prune.set_defaults(handler=prune_command, data_dir_of=data_dir_of)


def _data_dir_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the server's data directory (default: $SWITCHOVER_DATA_DIR, the config's, or ./data)",
    )
    parser.add_argument("--config", type=Path, help="a TOML config file naming the data dir")


def _database(args: argparse.Namespace) -> Path:
    path = database_path(args.data_dir_of(args))
    if not path.is_file():
        raise _Failure(f"no database at {path}")
    return path


class _Failure(Exception):
    pass


# -- transcript -----------------------------------------------------------------------------


def transcript_command(args: argparse.Namespace) -> int:
    try:
        path = _database(args)
        entries = read_transcript(path, args.conversation_id)
    except (_Failure, ConfigError) as exc:
        print(f"switchover transcript: {exc}", file=sys.stderr)
        return 1
    if args.format == "json":
        json.dump([entry.to_json() for entry in entries], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in entries:
            print(format_entry(entry))
    return 0


def read_transcript(path: Path, conversation_id: str) -> list[Entry]:
    """Every entry of one conversation, read without writing to the file."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _Failure(f"cannot open {path}: {exc}") from exc
    try:
        check_version(db)
        known = db.execute("SELECT 1 FROM conversations WHERE id = ?", (conversation_id,))
        if known.fetchone() is None:
            raise _Failure(f"no conversation {conversation_id!r} in {path}")
        # Both tables: the server may be running, its last messages not yet folded.
        rows = db.execute(ENTRIES_AFTER, (conversation_id, -1)).fetchall()
    except SchemaTooNew as exc:
        raise _Failure(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise _Failure(f"cannot read {path}: {exc}") from exc
    finally:
        db.close()
    return [entry_from_row(row) for row in rows]


def format_entry(entry: Entry) -> str:
    """One line for a person: number, time, who, to whom, and what."""
    when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    who = entry.sender.value
    if entry.agent_id is not None and entry.sender.value in ("agent", "system"):
        who = f"{who}({entry.agent_id})"
    audience = ",".join(sorted(p.value for p in entry.audience))
    return f"{entry.seq:>5}  {when}Z  {who:<18} -> {audience:<16} {summary(entry)}"


def summary(entry: Entry) -> str:
    content = entry.content
    body = dict(content.content)
    if content.content_type == "text":
        return str(body.get("text", ""))
    if content.content_type == "payload":
        reason = entry.metadata.get("reason")
        return f"[{body.get('payload')}]" + (f" reason={reason}" if reason else "")
    if content.content_type == "notice":
        code = body.pop("code", "")
        details = " ".join(f"{k}={v}" for k, v in body.items())
        return f"({code}{' ' + details if details else ''})"
    if content.content_type == "question":
        buttons = [b.get("content", {}).get("title") for b in body.get("buttons", [])]
        return f"{body.get('title', '')} {buttons}"
    return f"{content.content_type} {json.dumps(body, ensure_ascii=False)}"


# -- prune ----------------------------------------------------------------------------------


def prune_command(args: argparse.Namespace) -> int:
    days: float = args.older_than_days
    if days < 0:
        print("switchover prune: --older-than-days must be 0 or more", file=sys.stderr)
        return 2
    try:
        path = _database(args)
        if args.dry_run:
            print(describe_preview(read_prune_preview(path, days), days))
            return 0
        deleted = trio.run(_prune, path, days)
    except (_Failure, StoreUnavailable, ConfigError) as exc:
        print(f"switchover prune: {exc}", file=sys.stderr)
        return 1
    print(f"deleted {_count(deleted, 'conversation')} older than {days:g} days")
    return 0


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def read_prune_preview(path: Path, days: float, now: float | None = None) -> PrunePreview:
    """What ``prune --older-than-days days`` would delete now, read without writing (so it
    works beside a running server too)."""
    cutoff = (now if now is not None else time.time()) - days * 86400.0
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _Failure(f"cannot open {path}: {exc}") from exc
    try:
        check_version(db)
        return prune_preview(db, cutoff)
    except SchemaTooNew as exc:
        raise _Failure(f"{path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise _Failure(f"cannot read {path}: {exc}") from exc
    finally:
        db.close()


def describe_preview(preview: PrunePreview, days: float) -> str:
    """The dry run's report, for a person: counts first, then the dates, then what is kept."""
    lines = [
        f"would delete {_count(preview.conversations, 'conversation')} "
        f"({_count(preview.messages, 'message')}) older than {days:g} days"
    ]
    if preview.oldest is not None and preview.newest is not None:
        lines.append(
            f"  last written between {_when(preview.oldest)} (oldest) "
            f"and {_when(preview.newest)} (newest)"
        )
    if preview.kept_open:
        lines.append(
            f"  kept: {_count(preview.kept_open, 'conversation')} as old "
            "with an open livechat session"
        )
    lines.append("nothing deleted (dry run)")
    return "\n".join(lines)


async def _prune(path: Path, days: float) -> int:
    async with open_sqlite_store(path, verify=False) as store:
        try:
            deleted = await store.prune(days)
            await sweep_attachments(path.parent, store)
            return deleted
        except StoreUnavailable as exc:
            # Raised here, it would leave the store's nursery wrapped in a group.
            raise _Failure(str(exc)) from None
