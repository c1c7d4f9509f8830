"""The SQLite store against the memory store, the model, over random conversations.

The SQLite store does not write everything the way it is given: a message in bot mode or in a
live session leaves its conversation's row alone, and loading derives ``next_seq`` and the
session's ``last_activity`` from the messages written after the row; what the bot is owed
lives in an outbox of its own; caches in memory decide which rows to skip, and a restart
empties them. Hypothesis drives the pure lifecycle through random events (users, agents, the
desk, the bot, the clock, answers from the bot, restarts of the store) and records every
transition in both stores, the way the conversation actor does; after every step the file
must give back exactly what the model holds: states, transcripts, open sessions and, after
each restart, the bot's backlog.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, example, given, settings

from actors import (
    SESSION_END,
    SESSION_START,
    AgentSays,
    AgentSignsOff,
    BotSays,
    BotSettings,
    Content,
    ConversationState,
    Entry,
    Lifecycle,
    MemoryStore,
    UserSays,
)
from actors.model import effects as fx
from actors.model.events import (
    AgentAssigned,
    Event,
    QueuePositionChanged,
    ReturnedToQueue,
    TimerFired,
)
from transport.store.sqlite import SQLiteStore, open_sqlite_store

SETTINGS = BotSettings(session_timeout=100.0, queue_timeout=60.0)
CONVERSATIONS = ("c1", "c2")
AGENTS = ("alice", "bob")

# Mostly the first conversation, so that one conversation goes through long sequences; the
# second one interleaves its rows and its bot's backlog with it.
conversation = st.sampled_from(("c1", "c1", "c1", "c2"))
actions = st.lists(
    st.one_of(
        st.tuples(st.just("user"), conversation),
        st.tuples(st.just("start"), conversation),
        st.tuples(st.just("end"), conversation),
        st.tuples(st.just("assign"), conversation, st.sampled_from(AGENTS)),
        st.tuples(st.just("agent"), conversation, st.sampled_from(AGENTS)),
        st.tuples(st.just("sign_off"), conversation),
        st.tuples(st.just("position"), conversation, st.integers(1, 3)),
        st.tuples(st.just("requeue"), conversation),
        st.tuples(st.just("bot"), conversation),
        # Time moves by whole seconds or not at all: equal times are the edge of the
        # "the newest message says the last activity" rule.
        st.tuples(st.just("tick"), st.sampled_from([0.0, 1.0, 30.0, 70.0, 120.0])),
        st.tuples(st.just("answer"), conversation),
        st.tuples(st.just("restart")),
    ),
    min_size=10,
    max_size=40,
)


def _event(action: tuple[Any, ...], state: ConversationState) -> Event | None:
    """The event an action means for the conversation as it is now (None: not applicable)."""
    kind = action[0]
    session = state.session
    if kind == "user":
        return UserSays(Content.text(f"user {state.next_seq}"))
    if kind == "start":
        return UserSays(Content.payload(SESSION_START))
    if kind == "end":
        return UserSays(Content.payload(SESSION_END))
    if kind == "bot":
        return BotSays((Content.text(f"bot {state.next_seq}"),))
    if session is None:
        return None
    if kind == "assign":
        return AgentAssigned(session.session_id, action[2], action[2].title())
    if kind == "agent":
        return AgentSays(action[2], Content.text(f"agent {state.next_seq}"))
    if kind == "sign_off" and session.agent_id is not None:
        return AgentSignsOff(session.agent_id)
    if kind == "position":
        return QueuePositionChanged(session.session_id, action[2])
    if kind == "requeue" and session.agent_id is not None:
        return ReturnedToQueue(session.session_id, session.agent_id, "grace_expired")
    return None


def _plain(entries: list[Entry]) -> list[Any]:
    """Entries as the JSON they are stored as (tuples and lists compare alike)."""
    return [json.loads(json.dumps(entry.to_json())) for entry in entries]


class Reopening:
    """The SQLite store on one file, which the test closes and opens again (a restart)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._context: AbstractAsyncContextManager[SQLiteStore] | None = None
        self.store: SQLiteStore | None = None
        self.folds = 0

    async def open(self) -> SQLiteStore:
        # NORMAL: the same code path as FULL without an fsync per commit, for speed. Recent
        # messages are folded into the big table every few rows, two at a time, so reads
        # meet conversations split across both tables.
        context = open_sqlite_store(
            self.path,
            settings={"demo": SETTINGS},
            synchronous="NORMAL",
            fold_at=3,
            fold_rows=2,
        )
        store = await context.__aenter__()
        self._context = context
        self.store = store
        return store

    async def close(self) -> None:
        if self.store is not None:
            self.folds += self.store.folds
        context, self._context = self._context, None
        if context is not None:
            await context.__aexit__(None, None, None)


async def _agree(model: MemoryStore, store: SQLiteStore, backlog_too: bool) -> None:
    for conversation_id in CONVERSATIONS:
        assert await store.load(conversation_id) == await model.load(conversation_id)
        stored = await store.entries_after(conversation_id, 0)
        assert _plain(stored) == _plain(await model.entries_after(conversation_id, 0))
        middle = len(stored) // 2
        assert _plain(await store.entries_after(conversation_id, middle)) == _plain(stored[middle:])
    assert sorted(s.conversation_id for s in await store.open_sessions()) == sorted(
        s.conversation_id for s in await model.open_sessions()
    )
    for state in await store.open_sessions():
        assert state == await model.load(state.conversation_id)
    if backlog_too:
        assert _plain(await store.bot_backlog()) == _plain(await model.bot_backlog())


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(actions)
# The paths where the file holds less than it is given, always tried: live messages after
# the row (the last activity comes from them), bot-mode messages (next_seq from them), each
# across a restart, and the bot's answers noted but not yet committed when the store closes.
@example(
    [
        ("start", "c1"),
        ("assign", "c1", "alice"),
        ("tick", 30.0),
        ("user", "c1"),
        ("tick", 1.0),
        ("agent", "c1", "alice"),
        ("restart",),
        ("tick", 30.0),
        ("user", "c1"),
        ("tick", 0.0),
        ("agent", "c1", "alice"),
    ]
)
@example(
    [
        ("user", "c1"),
        ("bot", "c1"),
        ("tick", 1.0),
        ("user", "c2"),
        ("user", "c1"),
        ("answer", "c1"),
        ("restart",),
        ("user", "c1"),
        ("answer", "c1"),
        ("start", "c1"),
        ("tick", 120.0),
    ]
)
async def test_the_file_gives_back_what_the_model_holds(script: list[tuple[Any, ...]]) -> None:
    lifecycle = Lifecycle(SETTINGS)
    model = MemoryStore()
    now = 1_000_000.0
    states = {
        cid: ConversationState(cid, "demo", f"user-{cid}", {"name": cid}) for cid in CONVERSATIONS
    }
    with tempfile.TemporaryDirectory(prefix="switchover-model-") as directory:
        files = Reopening(Path(directory) / "model.db")
        store = await files.open()
        try:
            for state in states.values():
                await model.record(state, [])
                await store.record(state, [])
            for action in script:
                kind = action[0]
                if kind == "restart":
                    # Closing writes the answers noted since the last commit; the new store
                    # starts with empty caches, so it must find everything in the file.
                    await files.close()
                    store = await files.open()
                    await _agree(model, store, backlog_too=True)
                    continue
                if kind == "answer":
                    owed = [e for e in await model.bot_backlog() if e.conversation_id == action[1]]
                    if owed:
                        model.bot_done(owed[0].conversation_id, owed[0].seq)
                        store.bot_done(owed[0].conversation_id, owed[0].seq)
                    continue
                if kind == "tick":
                    now += action[1]
                    events = [(cid, TimerFired()) for cid in CONVERSATIONS]
                else:
                    event = _event(action, states[action[1]])
                    events = [] if event is None else [(action[1], event)]
                for cid, event in events:
                    transition = lifecycle.handle(states[cid], event, now)
                    if transition.state is states[cid]:
                        continue
                    entries = [e.entry for e in transition.effects if isinstance(e, fx.Emit)]
                    await model.record(transition.state, entries)
                    await store.record(transition.state, entries)
                    states[cid] = transition.state
                await _agree(model, store, backlog_too=False)
            await files.close()
            store = await files.open()
            await _agree(model, store, backlog_too=True)
        finally:
            await files.close()
        written = 0
        for cid in CONVERSATIONS:
            written += len(await model.entries_after(cid, 0))
        if written > 3 * (1 + sum(action[0] == "restart" for action in script)):
            # Some store wrote more than three messages: at least one fold happened.
            assert files.folds > 0
