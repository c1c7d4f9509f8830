"""A live WebSocket listener for tests: real sockets on 127.0.0.1, port 0.

:func:`running_ws_server` starts an in-memory switchboard with a desk (agents ``alice`` and
``bob``), a scripted bot ``demo``, a connected bot ``relay``, and the WebSocket server; it
yields a :class:`WsHarness` with the URL, the services and the bot. Every frame the clients
made by :meth:`WsHarness.user` and friends receive is checked against the protocol's schemas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from actors import (
    SESSION_END,
    SESSION_EXPIRED,
    AgentProfile,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    Desk,
    Store,
    open_switchboard,
)
from transport.bots.connected import ConnectedBot
from transport.bots.connections import BotConnections
from transport.client import (
    AgentClient,
    BotClient,
    Frame,
    UserClient,
    connect_agent,
    connect_bot,
    connect_user,
)
from transport.protocol.frames import server_frame_errors
from transport.protocol.limits import Limits
from transport.protocol.services import Services
from transport.servers.websocket import serve_websockets

AGENT_TOKENS = {"alice-token": "alice", "bob-token": "bob"}
BOT_TOKENS = {"demo-bot-token": "demo", "relay-bot-token": "relay"}


def check_frame(frame: Frame) -> None:
    """Fail loudly when the server sends a frame its own schemas refuse."""
    errors = list(server_frame_errors(frame))
    assert not errors, f"server frame breaks its schema: {errors} in {frame}"


class ScriptedBot:
    """Echoes text, greets back after a session, and floods on request.

    ``flood <count> <size>`` answers with ``count`` messages of ``size`` characters each.
    """

    def __init__(self) -> None:
        self.events: list[BotEvent] = []
        self._arrived = trio.Event()

    async def wait_for_event(self, predicate: Any, *, timeout: float = 5.0) -> BotEvent:
        seen = 0
        with trio.fail_after(timeout):
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                await self._arrived.wait()

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        self.events.append(event)
        self._arrived.set()
        self._arrived = trio.Event()
        content = event.content
        if content.is_payload(SESSION_END):
            return [Content.text("Welcome back! How else can I help?")]
        if content.is_payload(SESSION_EXPIRED):
            return [Content.text("Sorry, nobody could answer in time.")]
        text = content.text_value
        if text is None:
            return []
        if text.startswith("flood "):
            _, count, size = text.split()
            return [Content.text(f"{i:06d}".ljust(int(size), "x")) for i in range(int(count))]
        return [Content.text(f"echo: {text}")]


@attrs.frozen
class WsHarness:
    url: str
    services: Services
    bot: ScriptedBot
    listener: str = "fast"

    @property
    def desk(self) -> Desk:
        return self.services.desk

    def user(self, **options: Any) -> AbstractAsyncContextManager[UserClient]:
        options.setdefault("frame_check", check_frame)
        return connect_user(self.url, **options)

    def agent(
        self, agent_id: str = "alice", **options: Any
    ) -> AbstractAsyncContextManager[AgentClient]:
        options.setdefault("frame_check", check_frame)
        token = {v: k for k, v in AGENT_TOKENS.items()}[agent_id]
        return connect_agent(self.url, token, **options)

    def connected_bot(
        self, bot_id: str = "relay", **options: Any
    ) -> AbstractAsyncContextManager[BotClient]:
        options.setdefault("frame_check", check_frame)
        token = {v: k for k, v in BOT_TOKENS.items()}[bot_id]
        return connect_bot(self.url, token, **options)


@asynccontextmanager
async def running_ws_server(
    *,
    limits: Limits | None = None,
    settings: BotSettings | None = None,
    capacity: int = 2,
    extra: Mapping[str, Any] | None = None,
    listener: str = "fast",
    store: Store | None = None,
    close_grace: float = 5.0,
    connect_wait: float = 30.0,
    ack_timeout: float = 10.0,
    hibernate_after: float | None = 600.0,
) -> AsyncIterator[WsHarness]:
    """Serve the WebSocket protocol on an ephemeral port of 127.0.0.1 for the block, on the
    ``listener`` implementation named (see transport.servers.websocket.LISTENERS). ``connect_wait``
    and ``ack_timeout`` are the connected bot ``relay``'s; ``hibernate_after`` the switchboard's."""
    settings = settings or BotSettings(session_timeout=3600, grace_period=30)
    bot = ScriptedBot()
    registry = BotConnections()
    bots = {
        "demo": BotBinding(bot, settings),
        "relay": BotBinding(
            ConnectedBot("relay", registry, connect_wait=connect_wait, ack_timeout=ack_timeout),
            settings,
        ),
    }
    desk = Desk(
        {bot_id: settings for bot_id in bots},
        [
            AgentProfile("alice", "Alice", frozenset(bots), capacity=capacity),
            AgentProfile("bob", "Bob", frozenset(bots), capacity=capacity),
        ],
    )
    async with (
        open_switchboard(bots, {"desk": desk}, store, hibernate_after=hibernate_after) as board,
        trio.open_nursery() as nursery,
    ):
        services = Services(
            board=board,
            desk=desk,
            secret="test-secret",
            agent_tokens=AGENT_TOKENS,
            bot_tokens=BOT_TOKENS,
            limits=limits or Limits(rate=1000.0, burst=1000),
            bot_connections=registry,
            **dict(extra or {}),
        )
        serve = partial(serve_websockets, listener=listener, close_grace=close_grace)
        port: int = await nursery.start(serve, services, "127.0.0.1", 0)
        try:
            yield WsHarness(f"ws://127.0.0.1:{port}/", services, bot, listener)
        finally:
            nursery.cancel_scope.cancel()


async def close_code_after(url: str, *frames: str | bytes) -> int | None:
    """Send ``frames`` on a new connection and return the code it is closed with."""
    async with open_websocket_url(url) as ws:
        for raw in frames:
            await ws.send_message(raw)
        with trio.fail_after(5):
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code if closed.reason else None


def hello(**fields: Any) -> str:
    return json.dumps({"type": "hello", "v": 1, **fields})
