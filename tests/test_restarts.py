"""Restarts nobody notices: agents' presence kept across a restart, the grace period of the
chats they held counted from when the server is ready again, and an agent who reconnects
sent each chat it holds (the user's details and the transcript) without claiming it again.

The core runs on a real SQLite file under trio's MockClock, moving with real time
(``rate = 1``, so a wait that never ends still times out) and jumped ahead by hand across
grace periods: the store's reads and writes run in threads, which an autojumping clock
would leap over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from actors import (
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotSettings,
    Content,
    Desk,
    DeskStatus,
    Entry,
    MemoryStore,
    Party,
    Presence,
    Switchboard,
    Transcript,
    UserSays,
    open_switchboard,
)
from actors.machines import routing as rt
from actors.model.agent_request import AgentRequest
from transport.servers.runtime import restore_presences
from transport.store.sqlite import SQLiteStore, open_sqlite_store

from .conftest import EchoBot, RecordingSink, notice

GRACE = 30.0
SETTINGS = BotSettings(session_timeout=3600.0, grace_period=GRACE)
AGENTS = [
    AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=2),
    AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=2),
]


def _desk(board: Switchboard) -> Desk:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    return desk


@asynccontextmanager
async def server(store: SQLiteStore, bot: EchoBot) -> AsyncIterator[Switchboard]:
    """The core as ``switchover serve`` runs it: presence restored before the desk starts,
    and a desk whose grace periods wait until it is told the server is ready."""
    desk = Desk({"demo": SETTINGS}, AGENTS, wait_for_ready=True)
    await restore_presences(desk, store)
    async with open_switchboard({"demo": BotBinding(bot, SETTINGS)}, {"desk": desk}, store) as b:
        yield b


async def _before_the_crash(path: Path, bot: EchoBot) -> str:
    """Uma talks to the bot, asks for a human, and Alice (online) takes the chat and
    answers. Returns the conversation's id."""
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        server(store, bot) as board,
    ):
        desk = _desk(board)
        desk.ready()
        state = await board.open_conversation("demo", metadata={"name": "Uma"})
        conv = state.conversation_id
        await board.ask(conv, UserSays(Content.text("my parcel is late")))
        await bot.wait_for_events(1)
        alice = RecordingSink()
        desk.attach("alice", alice)
        desk.set_presence("alice", Presence.ONLINE)
        # What the agent's connection does with a presence frame (transport/protocol/peer.py).
        await store.record_presence("alice", "online")
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await alice.wait_for(notice("agent_joined"))
        said = await board.ask(conv, AgentSays("alice", Content.text("Alice here, let me look")))
        assert isinstance(said, Accepted)
    return conv


def _held(status: DeskStatus) -> dict[str, float | None]:
    return {chat.conversation_id: chat.grace_until for chat in status.chats}


# -- the routing alone ----------------------------------------------------------------------


def test_no_grace_period_runs_out_while_the_server_is_starting() -> None:
    routing = rt.Routing([rt.Agent("alice", "Alice", frozenset({"demo"}), 2)], {"demo": SETTINGS})
    routing.starting = True
    routing.request(AgentRequest("c1", "c1/1", "demo", 0.0, held_by="alice"), 100.0)
    assert routing.next_deadline() is None
    assert routing.expire_grace(1000.0) == []
    assert routing.holder_of("c1") is routing.agents["alice"]
    routing.started(1000.0)  # ready after a slow start: the grace period counts from here
    assert routing.next_deadline() == 1000.0 + GRACE
    assert routing.expire_grace(1000.0 + GRACE - 0.001) == []
    (requeued,) = [e for e in routing.expire_grace(1000.0 + GRACE) if isinstance(e, rt.Requeued)]
    assert (requeued.conversation_id, requeued.reason) == ("c1", "agent_left")
    # Told again, it changes nothing: a grace period that began since runs as it is.
    routing.request(AgentRequest("c2", "c2/1", "demo", 0.0, held_by="alice"), 2000.0)
    assert routing.started(2010.0) == []
    assert routing.next_deadline() == 2000.0 + GRACE


def test_restored_presences_skip_unknown_agents_and_values() -> None:
    desk = Desk({"demo": SETTINGS}, AGENTS)
    assert desk.restore_presences({"alice": "away", "bob": "asleep", "carol": "online"}) == 1
    assert desk.status_of("alice").presence == "away"
    assert desk.status_of("bob").presence == "offline"


async def test_the_memory_store_keeps_no_presence() -> None:
    desk = Desk({"demo": SETTINGS}, AGENTS)
    await restore_presences(desk, MemoryStore())
    assert desk.status_of("alice").presence == "offline"


# -- a restart on a real file ---------------------------------------------------------------


async def test_presence_survives_a_restart_and_a_returning_agent_keeps_the_chat(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1.0
    path = tmp_path / "switchover.db"
    bot = EchoBot()
    conv = await _before_the_crash(path, bot)
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        server(store, bot) as board,
    ):
        desk = _desk(board)
        await trio.testing.wait_all_tasks_blocked()  # the desk has the restored sessions
        # Alice is online as she left it, not connected yet, and holds Uma's chat again.
        assert desk.status_of("alice").presence == "online"
        assert desk.holds("alice", conv)
        mock_clock.jump(10 * GRACE)  # a slow start: longer than the grace period
        desk.ready()
        mock_clock.jump(GRACE - 5)
        user = RecordingSink()
        board.subscribe(conv, user, after_seq=0)

        alice = RecordingSink()
        desk.attach("alice", alice)
        # She is sent the chat as at pickup: who the user is, and everything said before
        # the handoff too, without claiming it.
        transcript = await alice.wait_for(lambda i: isinstance(i, Transcript))
        assert isinstance(transcript, Transcript)
        assert transcript.conversation_id == conv
        assert transcript.user_metadata == {"name": "Uma"}
        texts = [e.content.text_value for e in transcript.entries]
        assert "my parcel is late" in texts and "Alice here, let me look" in texts
        status = await alice.wait_for(
            lambda i: isinstance(i, DeskStatus) and _held(i) == {conv: None}
        )
        assert isinstance(status, DeskStatus)
        assert status.presence == "online"
        assert status.grace_period == GRACE

        mock_clock.jump(10 * GRACE)  # long past any grace period: the chat stays hers
        await trio.testing.wait_all_tasks_blocked()
        assert desk.holds("alice", conv)
        said = await board.ask(conv, AgentSays("alice", Content.text("Found it: it is on its way")))
        assert isinstance(said, Accepted)
        await user.wait_for(
            lambda i: isinstance(i, Entry) and i.content.text_value == "Found it: it is on its way"
        )
        await board.ask(conv, UserSays(Content.text("thanks!")))
        await alice.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "thanks!")
        assert not [e for e in user.entries() if notice("agent_left")(e)]


async def test_the_grace_period_after_a_restart_counts_from_when_the_server_is_ready(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.rate = 1.0
    path = tmp_path / "switchover.db"
    bot = EchoBot()
    conv = await _before_the_crash(path, bot)
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        server(store, bot) as board,
    ):
        desk = _desk(board)
        user = RecordingSink()
        board.subscribe(conv, user, after_seq=0)
        mock_clock.jump(10 * GRACE)  # the start-up takes longer than the grace period
        await trio.testing.wait_all_tasks_blocked()
        assert desk.holds("alice", conv)
        ready_at = board.clock.now()
        desk.ready()
        await trio.testing.wait_all_tasks_blocked()
        (grace_until,) = _held(desk.status_of("alice")).values()
        assert grace_until is not None and ready_at <= grace_until - GRACE < ready_at + 1.0
        mock_clock.jump(GRACE - 1)
        await trio.testing.wait_all_tasks_blocked()
        assert desk.holds("alice", conv)
        # Alice does not come back: the usual rule, the chat goes back to the queue.
        mock_clock.jump(2)
        left = await user.wait_for(notice("agent_left"))
        assert isinstance(left, Entry) and left.sender is Party.SYSTEM
        assert left.at >= ready_at + GRACE
        assert not desk.holds("alice", conv)


async def test_an_agent_still_connected_when_the_desk_restarts_is_sent_its_chats_again(
    autojump_clock: object,
) -> None:
    """A desk task that dies starts again from nothing and is rebuilt by the conversations'
    re-assertions; the agent who stayed connected is sent each chat given back to it."""
    bot = EchoBot()
    desk = Desk({"demo": SETTINGS}, AGENTS)
    async with open_switchboard({"demo": BotBinding(bot, SETTINGS)}, {"desk": desk}) as board:
        state = await board.open_conversation("demo", metadata={"name": "Uma"})
        conv = state.conversation_id
        await board.ask(conv, UserSays(Content.text("hello")))
        alice = RecordingSink()
        desk.attach("alice", alice)
        desk.set_presence("alice", Presence.ONLINE)
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await alice.wait_for(lambda i: isinstance(i, Transcript))  # the pickup
        transcripts: list[Transcript] = []

        def second_transcript(item: object) -> bool:
            if isinstance(item, Transcript):
                transcripts.append(item)
            return len(transcripts) == 2

        desk._send.send_nowait(object())  # type: ignore[arg-type]  # the desk task dies
        again = await alice.wait_for(second_transcript, timeout=120)
        assert isinstance(again, Transcript) and again.conversation_id == conv
        assert "hello" in [e.content.text_value for e in again.entries]
        assert desk.holds("alice", conv)
