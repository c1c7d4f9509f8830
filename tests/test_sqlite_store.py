"""The SQLite store on real files: round trips, group commit, migrations, faults, restarts and
hibernation through the core."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from actors import (
    SESSION_EXPIRED,
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotSettings,
    Clock,
    Content,
    ConversationState,
    Desk,
    Entry,
    Mode,
    Party,
    Presence,
    Refusal,
    StoreUnavailable,
    Switchboard,
    Transcript,
    UserSays,
    open_switchboard,
)
from actors.model.state import Session
from transport.store.readers import (
    AGENT_ENTRIES_PAGE,
    ENTRIES_AFTER,
    ENTRIES_PAGE,
    LOAD_CONVERSATION,
    MESSAGE_IDS_AFTER,
    OPEN_SESSIONS,
)
from transport.store.retention import (
    PRUNE_CANDIDATES,
    PRUNE_NEXT,
    PRUNE_OLDEST_MESSAGES,
    PRUNE_READ_AHEAD,
    PRUNE_READ_AHEAD_OLDEST,
    keep_pruning,
    prune_connection,
)
from transport.store.rows import MESSAGE_COLUMNS, Rows
from transport.store.schema import MIGRATIONS, SCHEMA_VERSION, V1_SCHEMA, V2_SCHEMA, migrate
from transport.store.sqlite import SQLiteStore, database_path, open_sqlite_store

from .conftest import EchoBot, RecordingSink, StallingBot, notice

SETTINGS = BotSettings(session_timeout=600, grace_period=30)
#: The messages' columns of versions 1 to 4 (version 5 adds ``message_id``, left NULL).
V4_MESSAGE_COLUMNS = (
    "conversation_id, seq, at, sender, content_type, content, audience, agent_id, session_id,"
    " metadata"
)


def _entry(conv: str, seq: int, text: str, **extra: object) -> Entry:
    return Entry(
        conv,
        seq,
        1000.0 + seq,
        Party.USER,
        Content.text(text),
        frozenset({Party.USER, Party.BOT}),
        **extra,  # type: ignore[arg-type]
    )


def _state(conv: str, next_seq: int, session: Session | None = None) -> ConversationState:
    return ConversationState(conv, "demo", f"user-{conv}", {"name": "Uma"}, next_seq, session, 1)


@asynccontextmanager
async def running_board(
    store: SQLiteStore | None, bot: EchoBot, **options: object
) -> AsyncIterator[Switchboard]:
    desk = Desk(
        {"demo": SETTINGS},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=2),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=2),
        ],
    )
    async with open_switchboard(
        {"demo": BotBinding(bot, SETTINGS)}, {"desk": desk}, store, **options
    ) as board:
        yield board


def _desk(board: Switchboard) -> Desk:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    return desk


# -- round trips and group commit -----------------------------------------------------------


async def test_state_and_entries_round_trip_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    session = Session("c1/1", 1000.0, 1010.5, None, "alice", "Alice", True)
    state = _state("c1", 4, session)
    question = Content.question("Done?", [("End", "LIVECHAT_SESSION_END")])
    entries = [
        _entry("c1", 1, "héllo ✓"),
        Entry(
            "c1",
            2,
            1002.0,
            Party.SYSTEM,
            Content.notice("agent_joined", agent_id="alice", name="Alice"),
            frozenset({Party.USER, Party.AGENT}),
            "alice",
            "c1/1",
        ),
        Entry(
            "c1",
            3,
            1003.0,
            Party.SYSTEM,
            question,
            frozenset({Party.USER, Party.AGENT}),
            "alice",
            "c1/1",
            {"sign_off": True},
        ),
    ]
    async with open_sqlite_store(path, settings={"demo": SETTINGS}) as store:
        await store.record(state, entries)
        await store.record(_state("c2", 1), [])
        await store.record_presence("alice", "online", 1234.0)
    async with open_sqlite_store(path) as store:
        assert await store.load("c1") == state
        assert await store.load("c2") == _state("c2", 1)
        assert await store.load("nope") is None
        assert await store.entries_after("c1", 0) == entries
        assert await store.entries_after("c1", 2) == entries[2:]
        assert await store.open_sessions() == [state]
        assert await store.last_presences() == {"alice": ("online", 1234.0)}
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT mode, deadline FROM conversations WHERE id = 'c1'").fetchone()
    assert row == ("live", 1010.5 + 600)


async def test_live_messages_skip_the_row_and_restarts_still_know_their_last_activity(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"

    def live(next_seq: int, last_activity: float, sign_off: bool = False) -> ConversationState:
        session = Session("c1/1", 1000.0, last_activity, None, "alice", "Alice", sign_off)
        return _state("c1", next_seq, session)

    def said(seq: int, at: float) -> Entry:
        return Entry(
            "c1",
            seq,
            at,
            Party.USER,
            Content.text(f"m{seq}"),
            frozenset({Party.USER, Party.AGENT}),
            "alice",
            "c1/1",
        )

    def stored_row() -> tuple[int, float, float]:
        with sqlite3.connect(path) as db:
            row = db.execute(
                "SELECT next_seq, last_activity, deadline FROM conversations WHERE id = 'c1'"
            ).fetchone()
        return tuple(row)  # type: ignore[return-value]

    async with open_sqlite_store(path, settings={"demo": SETTINGS}) as store:
        await store.record(live(2, 1001.0), [said(1, 1001.0)])
        assert stored_row() == (2, 1001.0, 1601.0)
        # Messages that only touch the session leave the row as it was...
        await store.record(live(3, 1002.0), [said(2, 1002.0)])
        await store.record(live(4, 1003.5), [said(3, 1003.5)])
        assert stored_row() == (2, 1001.0, 1601.0)
        # ...yet a load derives both from the messages written after it.
        assert await store.load("c1") == live(4, 1003.5)
        # A change the messages cannot tell (here the sign-off offer) writes the row again.
        await store.record(live(5, 1004.0, sign_off=True), [said(4, 1004.0)])
        assert stored_row() == (5, 1004.0, 1604.0)
        # So does a state whose last activity is not its newest message's time.
        await store.record(live(6, 1004.0), [said(5, 1005.0)])
        assert stored_row() == (6, 1004.0, 1604.0)
        await store.record(live(7, 1006.0), [said(6, 1006.0)])
        assert stored_row() == (6, 1004.0, 1604.0)
    # After a restart (a fresh store, nothing remembered) the open session comes back whole.
    async with open_sqlite_store(path, settings={"demo": SETTINGS}) as store:
        assert await store.open_sessions() == [live(7, 1006.0)]
        assert await store.load("c1") == live(7, 1006.0)
        # The first live message after a restart writes the row: nothing is remembered yet.
        await store.record(live(8, 1007.0), [said(7, 1007.0)])
        assert stored_row() == (8, 1007.0, 1607.0)


async def test_concurrent_records_share_commits_and_all_land(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_sqlite_store(path) as store:
        async with trio.open_nursery() as nursery:
            for n in range(300):
                state = _state(f"c{n}", 2)
                nursery.start_soon(store.record, state, [_entry(f"c{n}", 1, f"m{n}")])
        assert store.committed_calls == 300
        assert store.commits < 300 / 5, "concurrent records should share transactions"
        assert [e.content.text_value for e in await store.entries_after("c299", 0)] == ["m299"]


async def test_a_message_that_cannot_be_stored_fails_alone(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "s.db") as store:
        bad = Entry("b", 1, 1.0, Party.USER, Content("x", {"v": object()}), frozenset())
        results = await _record_all(
            store,
            {"bad": (_state("b", 2), [bad]), "good": (_state("g", 2), [_entry("g", 1, "fine")])},
        )
        assert results["good"] == "stored"
        assert "cannot be stored" in str(results["bad"])
        assert await store.load("b") is None
        assert len(await store.entries_after("g", 0)) == 1


async def _record_all(
    store: SQLiteStore, calls: dict[str, tuple[ConversationState, list[Entry]]]
) -> dict[str, str]:
    """Record every call at once (so they share a batch); what each was told."""
    results: dict[str, str] = {}

    async def record(name: str, state: ConversationState, entries: list[Entry]) -> None:
        try:
            await store.record(state, entries)
            results[name] = "stored"
        except StoreUnavailable as exc:
            results[name] = str(exc)

    async with trio.open_nursery() as nursery:
        for name, (state, entries) in calls.items():
            nursery.start_soon(record, name, state, entries)
    return results


def _hundred_with_a_poison(poison: str) -> dict[str, tuple[ConversationState, list[Entry]]]:
    calls = {f"c{n}": (_state(f"c{n}", 2), [_entry(f"c{n}", 1, f"m{n}")]) for n in range(99)}
    calls["bad"] = (_state("bad", 2), [_entry("bad", 1, poison)])
    return calls


async def test_text_that_is_not_unicode_is_refused_before_it_joins_a_batch(
    tmp_path: Path,
) -> None:
    async with open_sqlite_store(tmp_path / "s.db") as store:
        results = await _record_all(store, _hundred_with_a_poison("secret \ud800 words"))
        assert results.pop("bad") == "this message cannot be stored: its text is not valid Unicode"
        assert set(results.values()) == {"stored"}
        assert store.commits == 1
        assert await store.load("bad") is None
        assert len(await store.entries_after("c98", 0)) == 1


async def test_a_poison_row_in_a_batch_of_100_refuses_only_its_sender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should a row the check lets through still fail the commit, the writer finds it by
    # halving the batch: the other 99 are stored, and nobody hears the poison's text.
    import transport.store.sqlite as module

    monkeypatch.setattr(module, "writable", lambda rows: True)
    async with open_sqlite_store(tmp_path / "s.db") as store:
        results = await _record_all(store, _hundred_with_a_poison("secret \ud800 words"))
        assert results.pop("bad") == "this message cannot be stored"
        assert set(results.values()) == {"stored"}, results
        assert store.committed_calls == 99
        assert await store.load("bad") is None
        for n in range(99):
            assert [e.content.text_value for e in await store.entries_after(f"c{n}", 0)] == [
                f"m{n}"
            ]


async def test_a_number_that_is_not_json_is_refused_alone(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "s.db") as store:
        calls = _hundred_with_a_poison("fine")
        calls["bad"] = (
            _state("bad", 2),
            [Entry("bad", 1, 1.0, Party.USER, Content("x", {"v": math.inf}), frozenset())],
        )
        results = await _record_all(store, calls)
        assert "cannot be stored" in results.pop("bad")
        assert set(results.values()) == {"stored"}


# -- the core on the store ------------------------------------------------------------------


async def test_a_whole_session_is_kept_with_its_end_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    bot = EchoBot()
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        running_board(store, bot) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await bot.wait_for_events(1)
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        agent = RecordingSink()
        _desk(board).attach("alice", agent)
        _desk(board).set_presence("alice", Presence.ONLINE)
        await agent.wait_for(notice("agent_joined"))
        await board.ask(conv, AgentSays("alice", Content.text("hello, Alice here")))
        await board.ask(conv, UserSays(Content.payload("LIVECHAT_SESSION_END")))
        await bot.wait_for_events(2)
        stored = await store.entries_after(conv, 0)
    with sqlite3.connect(path) as db:
        sessions = db.execute(
            "SELECT session_id, agent_id, end_reason, ended_at IS NOT NULL FROM sessions"
        ).fetchall()
        mode = db.execute("SELECT mode FROM conversations WHERE id = ?", (conv,)).fetchone()
    assert sessions == [(f"{conv}/1", "alice", "user_ended", 1)]
    assert mode == ("bot",)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert "hello, Alice here" in [e.content.text_value for e in stored]


async def _restart_fixture(path: Path, bot: EchoBot) -> tuple[str, str, str, str]:
    """Three sessions: one live with alice, two queued (in order); and a bot-mode one."""
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        running_board(store, bot) as board,
    ):
        desk = _desk(board)
        live, first, second, plain = [
            (await board.open_conversation("demo")).conversation_id for _ in range(4)
        ]
        agent = RecordingSink()
        desk.attach("alice", agent)
        desk.set_presence("alice", Presence.ONLINE)
        await board.ask(live, UserSays(Content.payload(SESSION_START)))
        await agent.wait_for(notice("agent_joined"))
        await board.ask(live, AgentSays("alice", Content.text("how can I help?")))
        desk.set_presence("alice", Presence.AWAY)
        await agent.wait_for(lambda i: getattr(i, "presence", None) == "away")
        await board.ask(first, UserSays(Content.payload(SESSION_START)))
        await board.ask(second, UserSays(Content.payload(SESSION_START)))
        user = RecordingSink()
        board.subscribe(plain, user)
        await board.ask(plain, UserSays(Content.text("just the bot")))
        # The bot's answer is stored: the bot owes nothing to hand over again on restart.
        await user.wait_for(lambda i: isinstance(i, Entry) and i.sender is Party.BOT)
    return live, first, second, plain


async def test_restart_brings_sessions_back_in_their_states(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    bot = EchoBot()
    live, first, second, plain = await _restart_fixture(path, bot)
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        running_board(store, bot) as board,
    ):
        desk = _desk(board)
        alice = RecordingSink()
        desk.attach("alice", alice)
        status = await alice.wait_for(lambda i: getattr(i, "chats", ()) != ())
        assert [c.conversation_id for c in status.chats] == [live]  # type: ignore[attr-defined]
        assert [w.conversation_id for w in status.queue] == [first, second]  # type: ignore[attr-defined]
        # The live chat is alice's again: she can talk in it; the queued ones wait in order.
        assert isinstance(await board.ask(live, AgentSays("alice", Content.text("back"))), Accepted)
        bob = RecordingSink()
        desk.attach("bob", bob)
        desk.set_presence("bob", Presence.ONLINE)
        for conv in (first, second):
            await bob.wait_for(
                lambda i, c=conv: isinstance(i, Transcript) and i.conversation_id == c
            )
        # A user resuming after a restart gets what was missed, from the store.
        user = RecordingSink()
        board.subscribe(live, user, after_seq=0)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "back")
        texts = [e.content.text_value for e in user.entries()]
        assert texts.index("how can I help?") < texts.index("back")
        assert (await store.load(plain)).mode is Mode.BOT  # type: ignore[union-attr]


async def test_a_deadline_that_passed_while_down_expires_at_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    bot = EchoBot()
    live, first, second, _ = await _restart_fixture(path, bot)
    events_before = len(bot.events)
    later = Clock(wall_at_start=time.time() + 2 * 3600)
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        running_board(store, bot, clock=later),
    ):
        expired = await bot.wait_for_events(events_before + 3)
        payloads = {
            e.conversation_id: (e.content.content.get("payload"), e.metadata.get("reason"))
            for e in expired[events_before:]
        }
        assert payloads == {
            live: (SESSION_EXPIRED, "idle_timeout"),
            first: (SESSION_EXPIRED, "idle_timeout"),
            second: (SESSION_EXPIRED, "idle_timeout"),
        }
        # The bot hears of an expiry only once it is stored.
        assert await store.open_sessions() == []
        assert (await store.load(live)).mode is Mode.BOT  # type: ignore[union-attr]
    with sqlite3.connect(path) as db:
        reasons = sorted(r for (r,) in db.execute("SELECT end_reason FROM sessions"))
    assert reasons == ["idle_timeout"] * 3


async def test_the_expiry_a_bot_never_answered_is_handed_over_after_a_restart(
    tmp_path: Path,
) -> None:
    """The session expires and the bot is told, but the server dies before the bot answers:
    the LIVECHAT_SESSION_EXPIRED event waits in the file and reaches the bot on restart."""
    path = tmp_path / "s.db"
    stalling = StallingBot(hang=SESSION_EXPIRED)
    brief = BotSettings(session_timeout=0.2)

    def owed() -> list[tuple[str, int]]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT conversation_id, seq FROM bot_outbox").fetchall()

    async with (
        open_sqlite_store(path, settings={"demo": brief}) as store,
        open_switchboard({"demo": BotBinding(stalling, brief)}, None, store) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        (expired,) = await stalling.wait_for_events(1)
        assert expired.content.is_payload(SESSION_EXPIRED)
    assert owed() == [(conv, int(expired.event_id.rsplit(":", 1)[1]))]

    bot = EchoBot()
    async with (
        open_sqlite_store(path, settings={"demo": brief}) as store,
        open_switchboard({"demo": BotBinding(bot, brief)}, None, store) as board,
    ):
        (again,) = await bot.wait_for_events(1)
        assert again.event_id == expired.event_id
        assert again.metadata["reason"] == "idle_timeout"
        # Done with, once answered: an answer with nothing to say as soon as the bot
        # returns, one with messages once they are stored.
        user = RecordingSink()
        board.subscribe(conv, user)
        await board.ask(conv, UserSays(Content.text("back to the bot")))
        await user.wait_for(lambda i: isinstance(i, Entry) and i.sender is Party.BOT)
    assert owed() == []


async def test_a_quiet_conversation_hibernates_and_comes_back_with_its_numbering(
    tmp_path: Path,
) -> None:
    # Real time: a MockClock with autojump would leap ahead while a commit runs in its thread.
    bot = EchoBot()
    async with (
        open_sqlite_store(tmp_path / "s.db") as store,
        running_board(store, bot, hibernate_after=0.2) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, UserSays(Content.text("one"))) == Accepted(1)
        await bot.wait_for_events(1)
        with trio.fail_after(5):
            # Leaving memory raises no event to wait on: look until it has happened.
            while board.is_in_memory(conv):  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert board.stats.hibernated == 1
        # The bot's reply was seq 2; the next user message is 3, rebuilt from the file.
        assert await board.ask(conv, UserSays(Content.text("two"))) == Accepted(3)
        assert board.is_in_memory(conv)
        assert [e.seq for e in await store.entries_after(conv, 0)] == [1, 2, 3]


# -- migrations -----------------------------------------------------------------------------


def _build_v1(path: Path) -> None:
    """A version-1 file: one conversation live with alice, one whose session ended."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    session = {
        "session_id": "live/1",
        "started_at": 100.0,
        "last_activity": 150.0,
        "queued_at": None,
        "agent_id": "alice",
        "agent_name": "Alice",
        "position": None,
        "sign_off_offered": False,
    }
    db.execute(
        "INSERT INTO conversations VALUES ('live', 'demo', 'u1', '{\"name\": \"Uma\"}', 4, 1, ?)",
        (json.dumps(session),),
    )
    db.execute("INSERT INTO conversations VALUES ('done', 'demo', 'u2', '{}', 4, 1, NULL)")
    rows = [
        ("live", 1, 100.0, "user", "payload", {"payload": "LIVECHAT_SESSION_START"}, "user", None),
        ("live", 2, 100.0, "system", "notice", {"code": "session_started"}, "user", None),
        (
            "live",
            3,
            120.0,
            "system",
            "notice",
            {"code": "agent_joined", "agent_id": "alice"},
            "agent,user",
            None,
        ),
        ("done", 1, 10.0, "system", "notice", {"code": "session_started"}, "user", None),
        (
            "done",
            2,
            20.0,
            "system",
            "payload",
            {"payload": "LIVECHAT_SESSION_EXPIRED"},
            "bot",
            {"reason": "queue_timeout"},
        ),
    ]
    for conv, seq, at, sender, ctype, content, audience, meta in rows:
        db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            (
                conv,
                seq,
                at,
                sender,
                ctype,
                json.dumps(content),
                audience,
                f"{conv}/1",
                json.dumps(meta) if meta else None,
            ),
        )
    db.commit()
    db.close()


async def test_a_version_1_file_is_upgraded_and_keeps_its_conversations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _build_v1(path)
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == 1
        state = await store.load("live")
        assert state is not None
        assert state.mode is Mode.LIVE
        assert state.session == Session("live/1", 100.0, 150.0, None, "alice", "Alice")
        assert state.user_metadata == {"name": "Uma"}
        assert [s.conversation_id for s in await store.open_sessions()] == ["live"]
        assert [e.seq for e in await store.entries_after("live", 1)] == [2, 3]
        # New writes go to the new columns.
        await store.record(attrs.evolve(state, next_seq=5), [_entry("live", 4, "after upgrade")])
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        sessions = db.execute(
            "SELECT session_id, agent_id, ended_at, end_reason FROM sessions ORDER BY session_id"
        ).fetchall()
    assert sessions == [("done/1", None, 20.0, "queue_timeout"), ("live/1", "alice", None, None)]
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == SCHEMA_VERSION
        assert (await store.load("live")).next_seq == 5  # type: ignore[union-attr]


def _build_v2(path: Path) -> None:
    """A version-2 file: two conversations with interleaved messages, one in a live session.
    The bot-mode row's ``next_seq`` lags its messages, as version 2 wrote it."""
    db = sqlite3.connect(path)
    db.executescript(V2_SCHEMA)
    db.execute(
        "INSERT INTO conversations (id, bot_id, user_id, metadata, next_seq, sessions_opened,"
        " mode, updated_at) VALUES ('quiet', 'demo', 'u1', '{}', 2, 0, 'bot', 50.0)"
    )
    db.execute(
        "INSERT INTO conversations (id, bot_id, user_id, metadata, next_seq, sessions_opened,"
        " mode, session_id, started_at, last_activity, agent_id, agent_name, updated_at)"
        " VALUES ('live', 'demo', 'u2', '{}', 4, 1, 'live', 'live/1', 10.0, 30.0, 'alice',"
        " 'Alice', 30.0)"
    )
    for seq in range(1, 6):
        for conv in ("quiet", "live"):
            if conv == "live" and seq > 3:
                continue
            db.execute(
                f"INSERT INTO messages ({V4_MESSAGE_COLUMNS}) VALUES (?, ?, ?, 'user', 'text', ?,"
                " 'bot,user', NULL, NULL, NULL)",
                (conv, seq, float(seq), json.dumps({"text": f"{conv} {seq}"})),
            )
    db.commit()
    db.close()


def _messages_table_sql(path: Path) -> str:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT sql FROM sqlite_master WHERE name = 'messages'").fetchone()
    return str(row[0])


async def test_a_version_2_file_is_upgraded_to_a_rowid_messages_table(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _build_v2(path)
    assert "WITHOUT ROWID" in _messages_table_sql(path)
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == 2
        texts = [e.content.content["text"] for e in await store.entries_after("quiet", 2)]
        assert texts == ["quiet 3", "quiet 4", "quiet 5"]
        quiet = await store.load("quiet")
        assert quiet is not None and quiet.next_seq == 6  # one past the last message
        live = await store.load("live")
        assert live is not None and live.mode is Mode.LIVE and live.next_seq == 4
        assert [s.conversation_id for s in await store.open_sessions()] == ["live"]
        await store.record(attrs.evolve(quiet, next_seq=7), [_entry("quiet", 6, "after")])
        assert [e.seq for e in await store.entries_after("quiet", 4)] == [5, 6]
    assert "WITHOUT ROWID" not in _messages_table_sql(path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (9,)
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'messages_v2'"
        ).fetchone() == (0,)
        # The unique index still refuses a message numbered twice.
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                f"INSERT INTO messages ({V4_MESSAGE_COLUMNS}) VALUES ('quiet', 6, 0, 'user',"
                " 'text', '{}', 'user', NULL, NULL, NULL)"
            )


async def test_a_version_3_file_gains_an_empty_bot_outbox(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    _build_v2(path)
    with sqlite3.connect(path, isolation_level=None) as db:
        MIGRATIONS[2](db)
        db.execute("UPDATE schema_version SET version = 3")
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == 3
        # What a version-3 server had in flight to its bots was never written down.
        assert await store.bot_backlog() == []
        quiet = await store.load("quiet")
        assert quiet is not None
        await store.record(attrs.evolve(quiet, next_seq=7), [_entry("quiet", 6, "owed")])
        assert [(e.seq, e.content.text_value) for e in await store.bot_backlog()] == [(6, "owed")]
        store.bot_done("quiet", 6)
        await store.record(attrs.evolve(quiet, next_seq=7), [])  # a commit after the note
        assert await store.bot_backlog() == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_a_version_4_file_keeps_its_messages_and_stores_ids_after(tmp_path: Path) -> None:
    """The messages stored before the upgrade have no id; those stored after keep theirs."""
    path = tmp_path / "v4.db"
    _build_v2(path)
    with sqlite3.connect(path, isolation_level=None) as db:
        MIGRATIONS[2](db)
        MIGRATIONS[3](db)
        db.execute("UPDATE schema_version SET version = 4")
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == 4
        before = await store.entries_after("quiet", 0)
        assert [(e.seq, e.message_id) for e in before] == [(n, None) for n in range(1, 6)]
        quiet = await store.load("quiet")
        assert quiet is not None
        entry = attrs.evolve(_entry("quiet", 6, "with an id"), message_id="user:'m6'")
        await store.record(attrs.evolve(quiet, next_seq=7), [entry])
    async with open_sqlite_store(path) as store:
        assert store.migrated_from == SCHEMA_VERSION
        (after,) = await store.entries_after("quiet", 5)
        assert (after.seq, after.message_id) == (6, "user:'m6'")


async def test_a_failed_upgrade_leaves_the_version_2_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _build_v2(path)
    with sqlite3.connect(path) as db:
        # A table in the way of the upgrade: creating the new messages index fails half-way.
        db.execute("CREATE TABLE messages_by_conversation (x)")
    before = _messages_table_sql(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="messages_by_conversation"):
            migrate(db)
    finally:
        db.close()
    assert _messages_table_sql(path) == before
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (8,)


def test_every_read_of_messages_goes_through_the_index() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    migrate(db)
    transcript = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ? ORDER BY seq"
    queries = [
        (ENTRIES_AFTER, ("c", 1)),
        (MESSAGE_IDS_AFTER, ("c", 1)),
        (ENTRIES_PAGE, ("c", 1, 10)),
        (AGENT_ENTRIES_PAGE, ("c", 1, "alice", 10)),
        (LOAD_CONVERSATION, ("c",)),
        (OPEN_SESSIONS, ()),
        (PRUNE_CANDIDATES, (1.0, 1.0)),
        (PRUNE_NEXT, (1.0, 1.0, 0.5, 3, 10)),
        (PRUNE_OLDEST_MESSAGES, ("c", "c", 4)),
        ("DELETE FROM messages WHERE conversation_id IN (?, ?)", ("c", "d")),
        (PRUNE_READ_AHEAD[0].format(rows="?, ?"), ("c", "d")),
        (PRUNE_READ_AHEAD_OLDEST, ("c", 5)),
        (transcript, ("c",)),
        ("DELETE FROM messages WHERE conversation_id = ?", ("c",)),
    ]
    for sql, parameters in queries:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", parameters)]
        on_messages = [step for step in plan if " messages " in f" {step} " or " m " in step]
        assert on_messages, (sql, plan)
        for step in on_messages:
            assert "USING" in step and "INDEX messages_by_conversation" in step, (sql, plan)
        for step in plan:
            if " recent " in f" {step} " or " r " in step:
                assert "USING" in step and "INDEX recent_by_conversation" in step, (sql, plan)
        assert not any(step.startswith("USE TEMP B-TREE") for step in plan), (sql, plan)
    db.close()


async def test_a_file_from_a_newer_switchover_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
        db.execute("CREATE TABLE future (x)")
    before = path.read_bytes()
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        async with open_sqlite_store(path):
            pass  # pragma: no cover
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(99,)]
    assert path.read_bytes()[:100] == before[:100]


# -- faults ---------------------------------------------------------------------------------


async def _refused_to_open(path: Path, **options: object) -> str:
    with pytest.raises(StoreUnavailable) as caught:
        async with open_sqlite_store(path, **options):
            pass  # pragma: no cover
    return str(caught.value)


async def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just words\n" * 200)
    assert "damaged" in await _refused_to_open(garbage)

    damaged = tmp_path / "damaged.db"
    async with open_sqlite_store(damaged) as store:
        for n in range(50):
            await store.record(_state(f"c{n}", 2), [_entry(f"c{n}", 1, "x" * 500)])
    with sqlite3.connect(damaged) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(damaged.read_bytes())
    page = 4096
    data[page * 2 : page * 6] = os.urandom(page * 4)
    damaged.write_bytes(bytes(data))
    assert "damaged" in await _refused_to_open(damaged)


async def test_an_unusable_location_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    message = await _refused_to_open(a_file / "s.db")
    assert "cannot be created" in message
    a_directory = tmp_path / "dir.db"
    a_directory.mkdir()
    assert "cannot be opened for writing" in await _refused_to_open(a_directory)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ro" / "s.db"
    async with open_sqlite_store(path):
        pass
    os.chmod(path.parent, 0o500)
    os.chmod(path, 0o400)
    try:
        assert "cannot be opened for writing" in await _refused_to_open(path)
    finally:
        os.chmod(path.parent, 0o700)


async def test_a_file_locked_by_another_process_is_refused_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_sqlite_store(path):
        assert "in use by another Switchover" in await _refused_to_open(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert "locked by another process" in await _refused_to_open(path, busy_timeout=0.1)
    finally:
        other.execute("ROLLBACK")
    bot = EchoBot()
    async with (
        open_sqlite_store(path, busy_timeout=0.1) as store,
        running_board(store, bot) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        user = RecordingSink()
        board.subscribe(conv, user)
        assert await board.ask(conv, UserSays(Content.text("one"))) == Accepted(1)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 2)  # the bot's echo
        assert await board.ask(conv, UserSays(Content.text("two"))) == Accepted(3)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 4)
        other.execute("BEGIN IMMEDIATE")
        refused = await board.ask(conv, UserSays(Content.text("while locked")))
        other.execute("ROLLBACK")
        assert isinstance(refused, Refusal)
        assert refused.code == "store_unavailable"
        assert "locked" in refused.message
        # Nothing of the refused message was kept, and the numbering goes on without a gap.
        assert await board.ask(conv, UserSays(Content.text("after"))) == Accepted(5)
        texts = [e.content.text_value for e in await store.entries_after(conv, 0)]
        assert "while locked" not in texts
        assert texts[4] == "after"
    other.close()


async def test_a_full_disk_refuses_messages_and_never_acknowledges_one_it_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    bot = EchoBot()
    acknowledged: list[str] = []
    refused: list[Refusal] = []
    async with (
        open_sqlite_store(path, max_bytes=160 * 1024) as store,
        running_board(store, bot) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        for n in range(400):
            text = f"{n:04d} " + "x" * 2000
            outcome = await board.ask(conv, UserSays(Content.text(text)))
            if isinstance(outcome, Refusal):
                refused.append(outcome)
                if len(refused) >= 3:
                    break
            else:
                acknowledged.append(text)
    assert acknowledged, "some messages fit before the disk filled"
    assert refused and all(r.code == "store_unavailable" for r in refused)
    assert "full" in refused[0].message
    async with open_sqlite_store(path) as store:
        kept = {e.content.text_value for e in await store.entries_after(conv, 0)}
    assert set(acknowledged) <= kept
    assert len({t for t in kept if t and t[:4].isdigit()}) == len(acknowledged)


async def test_prune_deletes_old_conversations_without_open_sessions(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_sqlite_store(path) as store:
        await store.record(_state("old", 2), [_entry("old", 1, "long ago")])
        open_session = Session("busy/1", 1.0, 1.0, 1.0)
        await store.record(_state("busy", 2, open_session), [_entry("busy", 1, "waiting")])
        future = time.time() + 10 * 86400
        assert await store.prune(7, now=future) == 1
        assert await store.load("old") is None
        assert await store.entries_after("old", 0) == []
        assert await store.load("busy") is not None
        # A pruned conversation that speaks again is written whole again.
        await store.record(_state("old", 3), [_entry("old", 2, "back")])
        assert (await store.load("old")).next_seq == 3  # type: ignore[union-attr]
        await store.record(_state("new", 2), [_entry("new", 1, "today")])
        assert await store.prune(7) == 0


DAY = 86400.0


def _build_for_pruning(path: Path, seed: int = 7) -> float:
    """A file of 240 conversations straight through sqlite3: old and recent rows (many written
    at the same instant), open sessions, recent messages behind old rows, conversations with
    many messages, sessions and outbox rows. Returns the cutoff to prune at."""
    rng = random.Random(seed)
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db)
    cutoff = 1_000_000.0
    db.execute("BEGIN")
    for n in range(240):
        cid = f"c{n:03d}"
        # A few instants only: keyset order must break ties on the rowid.
        updated = cutoff + rng.choice([-3, -2, -1, 5]) * DAY
        open_session = rng.random() < 0.15
        db.execute(
            "INSERT INTO conversations (id, bot_id, user_id, metadata, next_seq,"
            " sessions_opened, mode, session_id, started_at, updated_at)"
            " VALUES (?, 'demo', ?, '{}', 1, 1, ?, ?, ?, ?)",
            (
                cid,
                f"u{n}",
                "queued" if open_session else "bot",
                f"{cid}/1" if open_session else None,
                updated if open_session else None,
                updated,
            ),
        )
        count = rng.choice([0, 1, 3, 4, 4, 40])
        recent = rng.random() < 0.15
        for seq in range(1, count + 1):
            at = cutoff + DAY if recent and seq == count else updated - count + seq
            db.execute(
                f"INSERT INTO messages ({V4_MESSAGE_COLUMNS})"
                " VALUES (?, ?, ?, 'user', 'text', '{}', 'bot,user', NULL, NULL, NULL)",
                (cid, seq, at),
            )
            if seq == count and rng.random() < 0.3:
                db.execute("INSERT INTO bot_outbox VALUES (?, ?)", (cid, seq))
        if rng.random() < 0.5:
            db.execute(
                "INSERT INTO sessions (session_id, conversation_id, bot_id, started_at)"
                " VALUES (?, ?, 'demo', ?)",
                (f"{cid}/0", cid, updated - 100),
            )
    db.execute("COMMIT")
    db.close()
    return cutoff


def _prune_in_one_transaction(path: Path, cutoff: float) -> list[str]:
    """Retention as it was before chunking: one transaction for everything."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    old = [row[0] for row in db.execute(PRUNE_CANDIDATES, (cutoff, cutoff))]
    for cid in old:
        db.execute("DELETE FROM messages WHERE conversation_id = ?", (cid,))
        db.execute("DELETE FROM bot_outbox WHERE conversation_id = ?", (cid,))
        db.execute("DELETE FROM sessions WHERE conversation_id = ?", (cid,))
        db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
    db.execute("COMMIT")
    db.close()
    return old


def _contents(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(path) as db:
        return {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in ("conversations", "messages", "sessions", "bot_outbox")
        }


@pytest.mark.parametrize("scan", [7, 500])
async def test_chunked_prune_deletes_what_one_transaction_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: int
) -> None:
    monkeypatch.setattr("transport.store.retention.PRUNE_SCAN", scan)
    original = tmp_path / "original.db"
    cutoff = _build_for_pruning(original)
    reference, chunked, bare = (tmp_path / f"{name}.db" for name in ("ref", "chunked", "bare"))
    for copy in (reference, chunked, bare):
        shutil.copy(original, copy)
    expected = _prune_in_one_transaction(reference, cutoff)
    assert 50 < len(expected) < 200, "the file has both kinds"

    async with open_sqlite_store(chunked, synchronous="OFF") as store:
        deleted = await store.prune(0, now=cutoff, chunk_rows=12)
        # Dozens of transactions, among them pieces of the 40-message conversations.
        assert store.prune_chunks > 20
    assert deleted == len(expected)
    assert _contents(chunked) == _contents(reference)

    with sqlite3.connect(bare, isolation_level=None) as db:
        db.execute("PRAGMA synchronous = OFF")
        assert sorted(prune_connection(db, cutoff, rows=5)) == sorted(expected)
    assert _contents(bare) == _contents(reference)


async def test_open_sessions_are_never_pruned(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _build_for_pruning(path, seed=11)
    with sqlite3.connect(path) as db:
        everyone = {row[0] for row in db.execute("SELECT id FROM conversations")}
        opened = {
            row[0]
            for row in db.execute("SELECT id FROM conversations WHERE session_id IS NOT NULL")
        }
        # The last one the prune will come to opens a session while the prune runs.
        reopened = db.execute(
            "SELECT id FROM conversations WHERE session_id IS NULL"
            " ORDER BY updated_at DESC, rowid DESC LIMIT 1"
        ).fetchone()[0]
    assert opened
    session = Session(f"{reopened}/2", 1.0, 1.0, 1.0)
    async with open_sqlite_store(path, synchronous="OFF") as store:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: store.record(
                    _state(reopened, 60, session), [_entry(reopened, 59, "a human, please")]
                )
            )
            # A cutoff after everything: only an open session keeps a conversation.
            deleted = await store.prune(0, now=time.time() + DAY, chunk_rows=3)
        assert store.prune_chunks > 10
    with sqlite3.connect(path) as db:
        left = {row[0] for row in db.execute("SELECT id FROM conversations")}
    assert left == opened | {reopened}
    assert deleted == len(everyone) - len(left)


async def test_commits_are_acknowledged_between_the_chunks_of_a_prune(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    cutoff = _build_for_pruning(path)
    order: list[str] = []
    chunks_at_ack: list[int] = []
    async with open_sqlite_store(path, synchronous="OFF") as store:
        pruned = trio.Event()

        async def prune() -> None:
            await store.prune(0, now=cutoff, chunk_rows=4)
            order.append("prune finished")
            pruned.set()

        async def talk() -> None:
            seq = 1
            while not pruned.is_set():
                await store.record(_state("live", seq + 1), [_entry("live", seq, "hi")])
                order.append("ack")
                chunks_at_ack.append(store.prune_chunks)
                seq += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(prune)
            nursery.start_soon(talk)
        total = store.prune_chunks
    assert total > 30
    # The first commit asked for during the prune was acknowledged long before it ended,
    # and acknowledgements kept coming between its chunks, not after them all.
    assert order.index("ack") < order.index("prune finished")
    during = {n for n in chunks_at_ack if n < total}
    assert len(during) > total // 2, (sorted(during), total)


# -- the maintenance commands ---------------------------------------------------------------


def _switchover(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transport.cli", *args, "--data-dir", str(data_dir)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_transcript_and_prune_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_sqlite_store(database_path(data)) as store:
        await store.record(_state("c1", 3), [_entry("c1", 1, "hello"), _entry("c1", 2, "bye")])
    as_json = await trio.to_thread.run_sync(
        lambda: _switchover("transcript", "c1", "--format", "json", data_dir=data)
    )
    assert as_json.returncode == 0, as_json.stderr
    assert [e["content"]["text"] for e in json.loads(as_json.stdout)] == ["hello", "bye"]
    as_text = await trio.to_thread.run_sync(lambda: _switchover("transcript", "c1", data_dir=data))
    lines = as_text.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "1" and lines[0].endswith("hello")
    missing = await trio.to_thread.run_sync(
        lambda: _switchover("transcript", "nope", data_dir=data)
    )
    assert missing.returncode == 1 and "no conversation 'nope'" in missing.stderr

    kept = await trio.to_thread.run_sync(
        lambda: _switchover("prune", "--older-than-days", "1", data_dir=data)
    )
    assert kept.returncode == 0 and "deleted 0 conversations" in kept.stdout
    pruned = await trio.to_thread.run_sync(
        lambda: _switchover("prune", "--older-than-days", "0", data_dir=data)
    )
    assert pruned.returncode == 0 and "deleted 1 conversation " in pruned.stdout
    async with open_sqlite_store(database_path(data)) as store:
        assert await store.load("c1") is None
        # While a server holds the store, prune refuses rather than fight it.
        busy = await trio.to_thread.run_sync(
            lambda: _switchover("prune", "--older-than-days", "0", data_dir=data)
        )
    assert busy.returncode == 1 and "in use by another Switchover process" in busy.stderr


async def test_retention_runs_in_a_live_server(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "s.db") as store:
        await store.record(_state("old", 2), [_entry("old", 1, "long ago")])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: keep_pruning(store, 0.0, every=3600))
            with trio.fail_after(5):
                while await store.load("old") is not None:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


# -- recent messages and folds ----------------------------------------------------------------


async def test_folds_move_the_oldest_recent_messages_in_bounded_steps(tmp_path: Path) -> None:
    path = tmp_path / "fold.db"
    async with open_sqlite_store(path, fold_at=6, fold_rows=4) as store:
        for seq in range(1, 6):
            for conv in ("a", "b"):
                await store.record(_state(conv, seq + 1), [_entry(conv, seq, f"{conv}{seq}")])
        # The writer folds after releasing a commit, before the next one: this one's.
        await store.record_presence("alice", "online")
        # Ten rows written, a fold of four after each commit that left six or more.
        assert store.folds == 2
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM recent").fetchone() == (2,)
            assert db.execute("SELECT conversation_id, seq FROM recent").fetchall() == [
                ("a", 5),
                ("b", 5),
            ]
            # Moved sorted by conversation: a conversation's messages side by side.
            moved = db.execute("SELECT conversation_id, seq FROM messages ORDER BY rowid")
            assert moved.fetchall()[:4] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
        for conv in ("a", "b"):
            entries = await store.entries_after(conv, 0)
            assert [entry.content.content["text"] for entry in entries] == [
                f"{conv}{seq}" for seq in range(1, 6)
            ]
            page = await store.entries_page(conv, 2, 2)
            assert [entry.seq for entry in page] == [3, 4]
            loaded = await store.load(conv)
            assert loaded is not None and loaded.next_seq == 6
    with sqlite3.connect(path) as db:
        # A clean stop folds what is left.
        assert db.execute("SELECT count(*) FROM recent").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (10,)


def _left_in_recent(path: Path, seq: int, text: str, message_id: str | None) -> None:
    """A message of conversation ``c`` in ``recent``, as a killed server leaves its last
    commits' messages."""
    with sqlite3.connect(path) as db:
        db.execute(
            f"INSERT INTO recent ({MESSAGE_COLUMNS}) VALUES"
            " ('c', ?, 1000.0 + ?, 'user', 'text', ?, 'bot,user', NULL, NULL, NULL, ?)",
            (seq, seq, json.dumps({"text": text}), message_id),
        )


async def test_recent_messages_left_by_a_crash_are_folded_on_start(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    async with open_sqlite_store(path) as store:
        await store.record(_state("c", 2), [_entry("c", 1, "kept in messages")])
    _left_in_recent(path, 2, "in recent", "m-2")
    async with open_sqlite_store(path) as store:
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT count(*) FROM recent").fetchone() == (0,)
        entries = await store.entries_after("c", 0)
        assert [entry.content.content["text"] for entry in entries] == [
            "kept in messages",
            "in recent",
        ]
        assert await store.message_ids("c", 0) == [(2, "m-2")]
        loaded = await store.load("c")
        assert loaded is not None and loaded.next_seq == 3


async def test_a_message_numbered_twice_across_the_tables_keeps_the_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "twice.db"
    async with open_sqlite_store(path) as store:
        await store.record(_state("c", 2), [_entry("c", 1, "first")])
    # Impossible with one writer; a fold must still neither fail forever nor lose both.
    _left_in_recent(path, 1, "second", None)
    async with open_sqlite_store(path) as store:
        entries = await store.entries_after("c", 0)
        assert [entry.content.content["text"] for entry in entries] == ["first"]
    assert "already stored under the same numbers" in caplog.text


async def test_a_store_kept_busy_without_a_pause_still_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Calls that arrive during a commit are committed next with no scheduler pass between:
    # the writer must still hear that it is stopped between two commits. Each commit takes
    # a few milliseconds in the writer's thread (as an fsync does), so the callers of the
    # last one always call again while it runs.
    stored = [0]
    enough = trio.Event()
    refused = trio.Event()
    in_flight = trio.CapacityLimiter(64)

    async def write_once(store: SQLiteStore, conv: str) -> None:
        async with in_flight:
            try:
                await store.record(_state(conv, 2), [_entry(conv, 1, "busy")])
            except StoreUnavailable:
                refused.set()
                return
        stored[0] += 1
        if stored[0] >= 1_000:
            enough.set()

    async def keep_calling(store: SQLiteStore, nursery: trio.Nursery) -> None:
        # A new call as soon as one is answered: while a commit runs, the callers of the
        # last one are answered and call again, so every commit has a next one waiting.
        count = 0
        while not refused.is_set():
            await in_flight.acquire()
            in_flight.release()
            nursery.start_soon(write_once, store, f"c{count}")
            count += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(30):
        async with trio.open_nursery() as writers:
            async with open_sqlite_store(tmp_path / "busy.db", synchronous="OFF") as store:
                write = store._writer._write

                def slow_write(batch: list[Rows], answered: list[tuple[str, int]]) -> None:
                    time.sleep(0.003)
                    write(batch, answered)

                monkeypatch.setattr(store._writer, "_write", slow_write)
                writers.start_soon(keep_calling, store, writers)
                await enough.wait()
                assert store.committed_calls >= 1_000
            await refused.wait()


async def test_a_bug_in_a_commit_refuses_its_batch_and_the_writer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_sqlite_store(tmp_path / "bug.db") as store:
        writer = store._writer
        write = writer._write

        def broken_once(batch: object, answered: object) -> None:
            monkeypatch.setattr(writer, "_write", write)
            raise RuntimeError("a bug")

        monkeypatch.setattr(writer, "_write", broken_once)
        with pytest.raises(StoreUnavailable, match="the store failed"):
            await store.record(_state("c", 2), [_entry("c", 1, "lost")])
        await store.record(_state("c", 2), [_entry("c", 1, "kept")])
        entries = await store.entries_after("c", 0)
        assert [entry.content.content["text"] for entry in entries] == ["kept"]
    assert "the store's writer failed" in caplog.text


def test_writable_finds_a_lone_surrogate_in_any_row_and_passes_other_text() -> None:
    from transport.store.rows import Rows, writable

    def rows(text: str, where: str) -> Rows:
        conversation = ("c1", "demo", text if where == "conversation" else "u1", "{}")
        message = ("c1", 1, 1.0, "user", "text", text if where == "message" else "{}")
        change = ("UPDATE", (1.0, text if where == "session" else "idle", "c1/1"))
        return Rows(conversation, [message], [change], None)

    for where in ("conversation", "message", "session"):
        assert not writable(rows("secret \ud800 words", where)), where
        assert writable(rows("Grüße, 你好 🙂", where)), where
        assert writable(rows("plain", where)), where
