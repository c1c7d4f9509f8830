"""What the running server sets up from its config: retention on the SQLite store, and bots
that connect over WebSocket (adapter "connected"), against the real server over sockets."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import SESSION_END, SESSION_START, ConversationState, Store
from transport.client import Frame, connect_agent, connect_bot, connect_user
from transport.config import from_mapping
from transport.errors import ConfigError
from transport.protocol.frames import server_frame_errors
from transport.servers.runtime import RunningServer, build_bindings, run_server
from transport.store.sqlite import database_path, open_sqlite_store

AGENT_TOKEN = "alice-token-for-runtime-tests"
BOT_TOKEN = "relay-token-for-runtime-tests"


def check_schema(frame: Frame) -> None:
    errors = list(server_frame_errors(frame))
    assert not errors, (frame, errors)


@asynccontextmanager
async def serving(config: Mapping[str, Any], **options: Any) -> AsyncIterator[RunningServer]:
    """The real server on ephemeral ports of 127.0.0.1 for the block."""
    data = {"listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0}, **config}
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(
                from_mapping(data), handle_signals=False, task_status=task_status, **options
            )
        )
        yield running
        running.stop()


# -- retention --------------------------------------------------------------------------------


def _backdate(path: Path, conversation_id: str, days: float) -> None:
    """Make a conversation look untouched for ``days`` days, as if written back then."""
    with sqlite3.connect(path, timeout=5) as db:
        db.execute(
            "UPDATE conversations SET updated_at = ? WHERE id = ?",
            (time.time() - days * 86400.0, conversation_id),
        )


async def _wait_until_gone(store: Store, conversation_id: str) -> None:
    with trio.fail_after(5):
        while await store.load(conversation_id) is not None:  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_a_server_with_retention_prunes_old_conversations(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = database_path(data_dir)
    data_dir.mkdir()
    async with open_sqlite_store(path) as seeding:
        for conversation_id in ("old", "recent"):
            await seeding.record(ConversationState(conversation_id, "demo", "u", {}, 1), [])
    await trio.to_thread.run_sync(_backdate, path, "old", 30)

    config = {"store": {"data_dir": str(data_dir), "retention_days": 7}}
    async with serving(config, prune_every=0.05) as server:
        store = server.services.board.store
        await _wait_until_gone(store, "old")
        assert await store.load("recent") is not None
        # Later rounds keep pruning: what grows old while the server runs goes too.
        await trio.to_thread.run_sync(_backdate, path, "recent", 8)
        await _wait_until_gone(store, "recent")


async def test_without_retention_nothing_is_pruned(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = database_path(data_dir)
    data_dir.mkdir()
    async with open_sqlite_store(path) as seeding:
        await seeding.record(ConversationState("old", "demo", "u", {}, 1), [])
    await trio.to_thread.run_sync(_backdate, path, "old", 3650)
    async with serving({"store": {"data_dir": str(data_dir)}}, prune_every=0.01) as server:
        # A user's whole exchange with the bot takes longer than many pruning rounds would.
        async with connect_user(server.ws_url) as user:
            await user.say_text("hello")
            await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "bot")
        assert await server.services.board.store.load("old") is not None


# -- connected bots ---------------------------------------------------------------------------


def _text(sender: str, said: str) -> Callable[[Frame], bool]:
    return lambda f: (
        f["type"] == "entry" and f["sender"] == sender and f["content"].get("text") == said
    )


def _event(payload_or_text: str) -> Callable[[Frame], bool]:
    return lambda f: f["type"] == "event" and payload_or_text in f["content"].values()


def _notice(code: str) -> Callable[[Frame], bool]:
    return lambda f: (
        f["type"] == "entry" and f["content_type"] == "notice" and f["content"]["code"] == code
    )


CONNECTED = {
    "bots": {
        "relay": {"adapter": "connected", "token": BOT_TOKEN, "options": {"connect_wait": 0.5}}
    },
    "agents": {"alice": {"name": "Alice", "token": AGENT_TOKEN}},
}


async def test_a_connected_bot_talks_hands_over_and_gets_its_user_back() -> None:
    async with serving(CONNECTED) as server:
        url = server.ws_url
        with trio.fail_after(15):
            async with (
                connect_bot(url, BOT_TOKEN, frame_check=check_schema) as bot,
                connect_user(url, metadata={"name": "Uma"}, frame_check=check_schema) as user,
            ):
                assert bot.bot_id == "relay"
                conv = user.conversation_id

                # The bot hears the user over its connection and answers by pushing.
                await user.say_text("hi there")
                heard = await bot.wait_for(_event("hi there"))
                assert heard["conversation_id"] == conv and heard["bot_id"] == "relay"
                assert heard["metadata"] == {"name": "Uma"}
                seq = await bot.push_text(conv, "Hello Uma, I am the relay bot.")
                await bot.ack_event(heard["event_id"])
                said = await user.wait_for(_text("bot", "Hello Uma, I am the relay bot."))
                assert said["seq"] == seq

                # The user asks for a human, and an agent takes over.
                await user.click(SESSION_START)
                await user.wait_for(lambda f: f["type"] == "queue")
                async with connect_agent(url, AGENT_TOKEN, frame_check=check_schema) as agent:
                    await agent.set_presence("online")
                    await agent.wait_for(lambda f: f["type"] == "transcript")
                    await agent.say(conv, "Alice here.")
                    await user.wait_for(_text("agent", "Alice here."))
                    await agent.sign_off(conv)
                    await user.click(SESSION_END)
                    await user.wait_for(_notice("session_ended"))

                # The bot has the user again, and says so.
                back = await bot.wait_for(_event(SESSION_END))
                await bot.push_text(conv, "Welcome back!")
                await bot.ack_event(back["event_id"])
                await user.wait_for(_text("bot", "Welcome back!"))

            # With the bot gone (for longer than its connect_wait), its users are told it is
            # unavailable.
            async with connect_user(url, frame_check=check_schema) as alone:
                await alone.say_text("anyone?")
                told = await alone.wait_for(
                    lambda f: f.get("metadata", {}).get("code") == "bot_unavailable"
                )
                assert told["sender"] == "system"


def test_the_connected_adapter_refuses_unknown_options() -> None:
    config = from_mapping(
        {"bots": {"relay": {"adapter": "connected", "token": BOT_TOKEN, "options": {"url": "x"}}}}
    )
    with pytest.raises(ConfigError, match=r"bots\.relay\.options\.url: unknown option"):
        build_bindings(config)
