"""What operators run by hand, as real processes: ``switchover check`` listing every problem
of a config at once (adapters and livechat platforms included), a config file that is not
UTF-8, and ``switchover prune --dry-run`` on a real SQLite data directory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from actors.model.content import Content
from actors.model.records import Entry, Party
from actors.model.state import ConversationState, Session
from transport.store.sqlite import database_path, open_sqlite_store

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


def switchover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transport.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHOVER_")},
        check=False,
    )


# -- check ----------------------------------------------------------------------------------


def test_check_lists_file_adapter_and_platform_problems_together(tmp_path: Path) -> None:
    config = tmp_path / "many.toml"
    config.write_text(
        """
[listeners]
ws_port = 70000
[bots.fax]
adapter = "fax"
[bots.fax.settings]
session_timeout = 0
[bots.hook]
adapter = "webhook"
[bots.hook.options]
url = "https://bot.example/events"
[bots.help]
adapter = "demo"
[bots.help.livechat]
kind = "gorgias"
[bots.help.livechat.options]
domain = "acme"
[agents.a]
name = "A"
token = "short"
"""
    )
    result = switchover("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    problems = [line.removeprefix("  - ") for line in lines[1:]]
    assert lines[0] == f"{config}: {len(problems)} problems:"
    expected = [
        "listeners.ws_port: must be between 0 and 65535",
        "bots.fax.settings.session_timeout: must be positive",
        "agents.a.token: is shorter than 16 characters",
        "bots.fax.adapter: unknown adapter 'fax'",
        "bots.hook.options.secret: is required",
        "bots.help.livechat.options.email: is required",
        "bots.help.livechat.options.api_key: is required",
    ]
    for start in expected:
        assert sum(problem.startswith(start) for problem in problems) == 1, (start, problems)
    # Nothing is reported about what is right.
    assert not any(problem.startswith("bots.hook.options.url") for problem in problems)
    assert not any(problem.startswith("bots.help.livechat.options.domain") for problem in problems)


def test_serve_lists_the_same_problems_and_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(
        '[listeners]\nws_port = 0\nhttp_port = 0\n[bots.fax]\nadapter = "fax"\n'
        '[bots.help]\nadapter = "demo"\n[bots.help.livechat]\nkind = "webhook"\n'
    )
    data = tmp_path / "data"
    result = switchover("serve", "--config", str(config), "--data-dir", str(data))
    assert result.returncode == 1
    assert "ready" not in result.stdout
    problems = [line.removeprefix("  - ") for line in result.stderr.splitlines()[1:]]
    assert result.stderr.splitlines()[0] == f"{config}: {len(problems)} problems:"
    assert any(problem.startswith("bots.fax.adapter: unknown adapter") for problem in problems)
    assert any(problem.startswith("bots.help.livechat.options.") for problem in problems)
    # With a problem of the file's own as well, all of them still come at once.
    with config.open("a") as more:
        more.write('[agents.a]\nname = "A"\ntoken = "short"\n')
    again = switchover("serve", "--config", str(config), "--data-dir", str(data))
    assert again.returncode == 1
    listed = [line.removeprefix("  - ") for line in again.stderr.splitlines()[1:]]
    assert listed[0].startswith("agents.a.token: is shorter than 16 characters")
    assert listed[1:] == problems


def test_check_with_only_an_unknown_adapter_still_names_it(tmp_path: Path) -> None:
    config = tmp_path / "one.toml"
    config.write_text('[bots.demo]\nadapter = "fax"\n')
    result = switchover("check", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{config}: 1 problem:",
        "  - bots.demo.adapter: unknown adapter 'fax'; known: demo, csml, webhook, connected",
    ]


def test_a_config_that_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('[agents.a]\nname = "Zoé"\n'.encode("latin-1"))
    offset = config.read_bytes().index(b"\xe9")
    expected = (
        f"  - {config}: is not UTF-8 text (byte 0xe9 at offset {offset} cannot be read); "
        "a config file must be saved as UTF-8"
    )
    for command in (("check",), ("serve",), ("prune", "--older-than-days", "1")):
        result = switchover(*command, "--config", str(config))
        assert result.returncode == 1, command
        assert "Traceback" not in result.stderr
        assert expected.removeprefix("  - ") in result.stderr, (command, result.stderr)
    check = switchover("check", "--config", str(config))
    assert check.stderr.splitlines() == [f"{config}: 1 problem:", expected]
    # UTF-8 with a byte order mark (as some editors save it) is UTF-8.
    config.write_bytes('\ufeff[agents.a]\nname = "Zoé"\ntoken = "a-long-enough-token"\n'.encode())
    bom = switchover("check", "--config", str(config))
    assert bom.returncode == 0, bom.stderr


# -- prune --dry-run ------------------------------------------------------------------------


def _entry(conversation: str, seq: int, at: float) -> Entry:
    return Entry(
        conversation,
        seq,
        at,
        Party.USER,
        Content.text(f"message {seq}"),
        frozenset({Party.USER, Party.BOT}),
    )


def _state(conversation: str, next_seq: int, session: Session | None = None) -> ConversationState:
    return ConversationState(conversation, "demo", f"user-{conversation}", {}, next_seq, session)


async def _fill(data: Path, now: float) -> dict[str, float]:
    """Four conversations: two old ones, a recent one, and an old one with an open session.
    Returns when each was last written."""
    written = {
        "old": now - 40 * DAY,
        "older": now - 60 * DAY,
        "recent": now - DAY,
        "busy": now - 50 * DAY,
    }
    async with open_sqlite_store(database_path(data)) as store:
        for conversation, count in (("old", 2), ("older", 3), ("recent", 1), ("busy", 1)):
            at = written[conversation]
            session = Session("busy/1", at, at, at) if conversation == "busy" else None
            entries = [_entry(conversation, seq, at - 10 + seq) for seq in range(1, count + 1)]
            await store.record(_state(conversation, count + 1, session), entries)
    with sqlite3.connect(database_path(data)) as db:
        for conversation, at in written.items():
            db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (at, conversation))
    return written


def _rows(data: Path) -> dict[str, int]:
    with sqlite3.connect(database_path(data)) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("conversations", "messages")
        }


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def test_prune_dry_run_says_what_it_would_delete_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    written = await _fill(data, time.time())
    before = _rows(data)
    assert before == {"conversations": 4, "messages": 7}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return switchover("prune", "--older-than-days", "30", *args, "--data-dir", str(data))

    dry = await trio.to_thread.run_sync(run, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would delete 2 conversations (5 messages) older than 30 days",
        f"  last written between {_when(written['older'])} (oldest) "
        f"and {_when(written['old'])} (newest)",
        "  kept: 1 conversation as old with an open livechat session",
        "nothing deleted (dry run)",
    ]
    assert _rows(data) == before

    # It only reads: it answers beside a server holding the store, where a prune refuses.
    async with open_sqlite_store(database_path(data)):
        beside = await trio.to_thread.run_sync(run, "--dry-run")
        assert beside.returncode == 0, beside.stderr
        assert beside.stdout == dry.stdout
        refused = await trio.to_thread.run_sync(run)
        assert refused.returncode == 1

    # The prune itself deletes what the dry run announced.
    pruned = await trio.to_thread.run_sync(run)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == "deleted 2 conversations older than 30 days"
    assert _rows(data) == {"conversations": 2, "messages": 2}
    after = await trio.to_thread.run_sync(run, "--dry-run")
    assert (
        after.stdout.splitlines()[0]
        == "would delete 0 conversations (0 messages) older than 30 days"
    )
    assert "last written" not in after.stdout
