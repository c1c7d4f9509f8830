"""Shared fixtures: a recording sink and a switchboard with a desk and an echo bot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

import pytest
import trio
from hypothesis import HealthCheck, settings

from actors import (
    AgentProfile,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    Delivery,
    Desk,
    Entry,
    Switchboard,
    open_switchboard,
)
from transport.servers.websocket import LISTENERS

from .support.valkey import ValkeyCluster, valkey_cluster
from .support.ws import WsHarness, running_ws_server

# Property tests judge results, never speed: a loaded machine (two cores shared with browsers
# and subprocess servers) must not fail them on Hypothesis's timing checks.
settings.register_profile("switchover", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("switchover")


class RecordingSink:
    """Keeps what it is given and lets a test wait for a matching item."""

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self._changed = trio.Event()

    def deliver(self, item: Delivery) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    def entries(self) -> list[Entry]:
        return [item for item in self.items if isinstance(item, Entry)]

    async def wait_for(self, predicate: object, *, timeout: float = 5.0) -> Delivery:
        check = predicate if callable(predicate) else (lambda item: item == predicate)
        seen = 0
        with trio.fail_after(timeout):
            while True:
                for item in self.items[seen:]:
                    if check(item):
                        return item
                seen = len(self.items)
                await self._changed.wait()


async def open_watched(
    board: Switchboard,
    bot_id: str,
    *,
    user_id: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> tuple[str, RecordingSink]:
    """A new conversation with ``bot_id``, watched by a user's sink: its id and the sink."""
    state = await board.open_conversation(bot_id, user_id=user_id, metadata=metadata)
    user = RecordingSink()
    board.subscribe(state.conversation_id, user)
    return state.conversation_id, user


def notice(code: str) -> object:
    def check(item: Delivery) -> bool:
        return (
            isinstance(item, Entry)
            and item.content.content_type == "notice"
            and item.content.content.get("code") == code
        )

    return check


class EchoBot:
    """Replies ``echo: <text>`` and records every event it receives."""

    def __init__(self) -> None:
        self.events: list[BotEvent] = []
        self._arrived = trio.Event()

    async def wait_for_events(self, count: int, *, timeout: float = 5.0) -> list[BotEvent]:
        with trio.fail_after(timeout):
            while len(self.events) < count:
                await self._arrived.wait()
        return self.events

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        self.events.append(event)
        self._arrived.set()
        self._arrived = trio.Event()
        text = event.content.text_value
        return [Content.text(f"echo: {text}")] if text is not None else []


class StallingBot(EchoBot):
    """An echo bot that never answers the text or payload ``hang`` (as a process killed
    mid-call never would) and fails on ``fail`` (as a bot down after every retry)."""

    def __init__(self, hang: str = "hang") -> None:
        super().__init__()
        self.hang = hang

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        replies = await super().on_event(event)
        body = event.content.content
        if self.hang in (body.get("text"), body.get("payload")):
            await trio.sleep_forever()
        if event.content.text_value == "fail":
            raise RuntimeError("the bot is down")
        return replies


@pytest.fixture(autouse=True)
def own_working_directory(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run every test in an empty directory of its own: a server started with its defaults
    keeps its data in ``./data``, which must never land in the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def echo_bot() -> EchoBot:
    return EchoBot()


@pytest.fixture
async def board(echo_bot: EchoBot) -> AsyncIterator[Switchboard]:
    settings = BotSettings(session_timeout=3600, grace_period=30)
    desk = Desk(
        {"demo": settings},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=2),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=2),
        ],
    )
    async with open_switchboard({"demo": BotBinding(echo_bot, settings)}, {"desk": desk}) as board:
        yield board


@pytest.fixture(params=LISTENERS)
def listener(request: pytest.FixtureRequest) -> str:
    """Each WebSocket listener in turn."""
    name: str = request.param
    return name


@pytest.fixture
async def harness(listener: str) -> AsyncIterator[WsHarness]:
    """A WebSocket server on 127.0.0.1 with each listener in turn."""
    async with running_ws_server(listener=listener) as running:
        yield running


@pytest.fixture(scope="session")
def shared_valkey_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """One real Valkey Cluster of three masters for the run, started by the first test that
    asks for it (through ``tests/support/valkey.py``'s ``valkey_engine``, which empties it)."""
    with valkey_cluster(tmp_path_factory.mktemp("valkey-cluster")) as cluster:
        yield cluster
