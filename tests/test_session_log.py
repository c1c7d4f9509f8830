"""The operators' log of livechat sessions: one line per step (started, picked up,
transferred, returned to the queue, signed off, ended, expired), with its ids, never what
anyone wrote; in the core on MockClock, and as JSON from a real server process."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import (
    IDLE_TIMEOUT,
    QUEUE_TIMEOUT,
    SESSION_END,
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotSettings,
    Content,
    Desk,
    Presence,
    Switchboard,
    Transcript,
    UserSays,
    open_switchboard,
)
from actors.model.events import AgentEndsSession, AgentSignsOff, AgentTransfers
from actors.trio.session_log import FIELD_LIMIT
from transport.client import connect_agent, connect_user

from .conftest import EchoBot, RecordingSink, notice
from .support.process import serving_process

HOUR = 3600.0
SECRET_WORDS = "my card number is 4111"


class SessionLines:
    """What the ``switchover.sessions`` logger wrote during the test."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.caplog = caplog

    @property
    def records(self) -> list[logging.LogRecord]:
        return [r for r in self.caplog.records if r.name == "switchover.sessions"]


@pytest.fixture
def session_lines(caplog: pytest.LogCaptureFixture) -> SessionLines:
    caplog.set_level(logging.INFO, logger="switchover.sessions")
    return SessionLines(caplog)


def steps(lines: SessionLines, conversation_id: str) -> list[dict[str, Any]]:
    """Each session line about ``conversation_id``: its message and its fields."""
    found = []
    for record in lines.records:
        fields = dict(vars(record))
        if fields.get("conversation_id") != conversation_id:
            continue
        line = {"message": record.getMessage()}
        for key in ("session_id", "bot_id", "agent_id", "reason", "from_agent", "to_agent"):
            if key in fields:
                line[key] = fields[key]
        found.append(line)
    return found


@asynccontextmanager
async def running(settings: BotSettings) -> AsyncIterator[tuple[Switchboard, Desk]]:
    desk = Desk(
        {"demo": settings},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=1),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=1),
        ],
    )
    async with open_switchboard({"demo": BotBinding(EchoBot(), settings)}, {"desk": desk}) as board:
        yield board, desk


async def start_session(board: Switchboard) -> str:
    state = await board.open_conversation("demo")
    conversation = state.conversation_id
    assert await board.ask(conversation, UserSays(Content.payload(SESSION_START))) == Accepted(1)
    return conversation


async def online(desk: Desk, agent_id: str) -> RecordingSink:
    sink = RecordingSink()
    desk.attach(agent_id, sink)
    desk.set_presence(agent_id, Presence.ONLINE)
    return sink


def picked_up(item: object) -> bool:
    return isinstance(item, Transcript)


async def test_each_step_of_a_session_is_one_line_with_its_ids(
    session_lines: SessionLines,
) -> None:
    async with running(BotSettings(session_timeout=HOUR)) as (board, desk):
        alice = await online(desk, "alice")
        conversation = await start_session(board)
        session = f"{conversation}/1"
        await alice.wait_for(picked_up)
        said = await board.ask(conversation, UserSays(Content.text(SECRET_WORDS)))
        assert isinstance(said, Accepted)
        assert isinstance(await board.ask(conversation, AgentSignsOff("alice")), Accepted)
        ended = await board.ask(conversation, UserSays(Content.payload(SESSION_END)))
        assert isinstance(ended, Accepted)
    ids = {"session_id": session, "bot_id": "demo"}
    assert steps(session_lines, conversation) == [
        {"message": "livechat session started", **ids},
        {"message": "agent picked up the session", **ids, "agent_id": "alice"},
        {"message": "agent signed off", **ids, "agent_id": "alice"},
        {"message": "livechat session ended", **ids, "agent_id": "alice", "reason": "user_ended"},
    ]
    assert all(record.levelno == logging.INFO for record in session_lines.records)
    assert not any(SECRET_WORDS in record.getMessage() for record in session_lines.records)
    assert not any(SECRET_WORDS in str(vars(record)) for record in session_lines.records)


async def test_transfers_returns_to_the_queue_and_an_agent_ending_the_chat(
    session_lines: SessionLines,
) -> None:
    async with running(BotSettings(session_timeout=HOUR)) as (board, desk):
        alice = await online(desk, "alice")
        conversation = await start_session(board)
        session = f"{conversation}/1"
        await alice.wait_for(picked_up)
        bob = await online(desk, "bob")
        assert await board.ask(conversation, AgentTransfers("alice", "bob")) == Accepted()
        await bob.wait_for(picked_up)
        # Bob, away, sends it back to the queue; alice (free again) gets it, then ends the
        # chat herself.
        desk.set_presence("bob", Presence.AWAY)
        assert await board.ask(conversation, AgentTransfers("bob", None)) == Accepted()
        await alice.wait_for(lambda _: sum(picked_up(item) for item in alice.items) == 2)
        ends = AgentEndsSession(session, "alice", "x" * (FIELD_LIMIT * 3))
        assert isinstance(await board.ask(conversation, ends), Accepted)
    ids = {"session_id": session, "bot_id": "demo"}
    lines = steps(session_lines, conversation)
    assert lines[:4] == [
        {"message": "livechat session started", **ids},
        {"message": "agent picked up the session", **ids, "agent_id": "alice"},
        {"message": "session transferred", **ids, "from_agent": "alice", "to_agent": "bob"},
        {
            "message": "session returned to the queue",
            **ids,
            "agent_id": "bob",
            "reason": "transferred",
        },
    ]
    assert lines[4] == {"message": "agent picked up the session", **ids, "agent_id": "alice"}
    last = lines[5]
    assert (last["message"], last["agent_id"]) == ("livechat session ended", "alice")
    # A reason too long for a log line is cut, and says so.
    assert len(last["reason"]) == FIELD_LIMIT and last["reason"].endswith("…")
    assert len(lines) == 6


async def test_expiries_say_why(session_lines: SessionLines, autojump_clock: object) -> None:
    settings = BotSettings(session_timeout=HOUR, queue_timeout=300.0)
    async with running(settings) as (board, desk):
        expired: Any = notice("session_expired")
        waiting = await start_session(board)
        user = RecordingSink()
        board.subscribe(waiting, user)
        await user.wait_for(notice("session_expired"), timeout=400)
        alice = await online(desk, "alice")
        idle = await start_session(board)
        await alice.wait_for(picked_up)
        board.subscribe(idle, user)
        said = await board.ask(idle, AgentSays("alice", Content.text("hello?")))
        assert isinstance(said, Accepted)
        await user.wait_for(
            lambda item: expired(item) and getattr(item, "conversation_id", None) == idle,
            timeout=2 * HOUR,
        )
    assert steps(session_lines, waiting)[-1] == {
        "message": "livechat session expired",
        "session_id": f"{waiting}/1",
        "bot_id": "demo",
        "reason": QUEUE_TIMEOUT,
    }
    assert steps(session_lines, idle)[-1] == {
        "message": "livechat session expired",
        "session_id": f"{idle}/1",
        "bot_id": "demo",
        "agent_id": "alice",
        "reason": IDLE_TIMEOUT,
    }


async def test_a_server_in_json_mode_writes_each_step_as_an_object(tmp_path: Path) -> None:
    config = """
[logging]
format = "json"
[listeners]
ws_port = 0
http_port = 0
[bots.demo]
adapter = "demo"
[agents.alice]
name = "Alice"
token = "alice-token-for-json-logs"
"""
    async with serving_process(tmp_path, 1, config) as server:
        with trio.fail_after(20):
            async with connect_agent(server.ws_url, "alice-token-for-json-logs") as agent:
                await agent.set_presence("online")
                async with connect_user(server.ws_url, bot_id="demo") as user:
                    await user.click(SESSION_START)
                    transcript = await agent.wait_for(lambda f: f["type"] == "transcript")
                    conversation = transcript["conversation_id"]
                    await agent.sign_off(conversation)
                    await user.wait_for(lambda f: f.get("metadata", {}).get("sign_off", False))
                    await user.click(SESSION_END)
                    await user.wait_for(
                        lambda f: (
                            f["type"] == "entry" and f["content"].get("code") == "session_ended"
                        )
                    )
    log = (tmp_path / "server-1.log").read_text().splitlines()
    objects = [json.loads(line) for line in log if line.startswith("{")]
    lines = [o for o in objects if o["logger"] == "switchover.sessions"]
    assert [(o["message"], o.get("agent_id")) for o in lines] == [
        ("livechat session started", None),
        ("agent picked up the session", "alice"),
        ("agent signed off", "alice"),
        ("livechat session ended", "alice"),
    ]
    for line in lines:
        assert line["level"] == "info"
        assert line["conversation_id"] == conversation
        assert line["session_id"] == f"{conversation}/1"
        assert line["bot_id"] == "demo"
    assert lines[-1]["reason"] == "user_ended"
