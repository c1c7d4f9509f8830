"""The connected bots' registry on its own: an event is delivered once the bot acknowledges
it, moves to another connection when its own closes, waits for the bot to (re)connect within
``connect_wait``, and fails by the documented rules. Fake connections, trio's MockClock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from transport.bots import build_bot
from transport.bots.connected import ConnectedBot
from transport.bots.connections import (
    MAX_SENDS,
    BotConnections,
    BotNotAcknowledging,
    BotNotConnected,
)
from transport.errors import ConfigError


class Outlet:
    """A connection that keeps what it is sent; ``open = False`` once it is closing."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.open = True

    def send_frame(self, text: str) -> bool:
        if not self.open:
            return False
        self.frames.append(text)
        return True


class Outcome:
    """What became of one delivery: ``None`` while under way, else ``"acked"`` or the
    exception, and when (on the mock clock)."""

    def __init__(self) -> None:
        self.result: object = None
        self.at: float | None = None


def start(nursery: trio.Nursery, deliver: Callable[[], Awaitable[None]]) -> Outcome:
    outcome = Outcome()

    async def run() -> None:
        try:
            await deliver()
            outcome.result = "acked"
        except BotNotConnected as exc:
            outcome.result = exc
        outcome.at = trio.current_time()

    nursery.start_soon(run)
    return outcome


def delivering(
    registry: BotConnections, event_id: str = "c1:1", **timing: Any
) -> Callable[[], Awaitable[None]]:
    async def deliver() -> None:
        await registry.deliver("relay", event_id, f"frame {event_id}", **timing)

    return deliver


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_an_event_is_done_when_the_bot_acknowledges_it(autojump_clock: object) -> None:
    registry = BotConnections()
    old, new = Outlet(), Outlet()
    registry.add("relay", old)
    registry.add("relay", new)
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry))
        await settle()
        assert (old.frames, new.frames) == (["frame c1:1"], [])  # the oldest connection
        assert registry.unacknowledged("relay") == ["c1:1"]
        assert not registry.acknowledge("other-bot", "c1:1"), "another bot's ack is ignored"
        assert not registry.acknowledge("relay", "c9:9"), "an unknown id is ignored"
        await settle()
        assert outcome.result is None
        assert registry.acknowledge("relay", "c1:1")
    assert outcome.result == "acked" and outcome.at == 0.0
    assert registry.unacknowledged("relay") == []
    assert not registry.acknowledge("relay", "c1:1"), "acknowledging twice changes nothing"


async def test_a_closed_connection_hands_its_event_to_the_next(autojump_clock: object) -> None:
    registry = BotConnections()
    first, closing, second = Outlet(), Outlet(), Outlet()
    for outlet in (first, closing, second):
        registry.add("relay", outlet)
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry))
        await settle()
        closing.open = False  # closing, not yet removed: it refuses frames
        registry.remove("relay", first)
        await settle()
        assert (first.frames, closing.frames, second.frames) == (["frame c1:1"], [], ["frame c1:1"])
        registry.acknowledge("relay", "c1:1")
    assert outcome.result == "acked"


async def test_with_no_connection_an_event_waits_for_the_bot_to_connect(
    autojump_clock: object,
) -> None:
    registry = BotConnections()
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry, connect_wait=30.0))
        await trio.sleep(29.0)
        assert outcome.result is None and registry.unacknowledged("relay") == ["c1:1"]
        bot = Outlet()
        registry.add("relay", bot)
        await settle()
        assert bot.frames == ["frame c1:1"]
        # It drops the connection unacknowledged: a fresh window for the next one.
        registry.remove("relay", bot)
        await trio.sleep(29.0)
        again = Outlet()
        registry.add("relay", again)
        await settle()
        assert again.frames == ["frame c1:1"]
        registry.acknowledge("relay", "c1:1")
    assert outcome.result == "acked" and outcome.at == 58.0


async def test_an_event_fails_when_no_connection_opens_within_the_window(
    autojump_clock: object,
) -> None:
    registry = BotConnections()
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry, connect_wait=30.0))
        closing = Outlet()
        closing.open = False
        registry.add("relay", closing)  # a connection that refuses frames does not count
    assert isinstance(outcome.result, BotNotConnected)
    assert not isinstance(outcome.result, BotNotAcknowledging)
    assert outcome.at == 30.0
    assert registry.unacknowledged("relay") == []


async def test_once_a_window_passed_the_bots_events_fail_at_once_until_it_connects(
    autojump_clock: object,
) -> None:
    registry = BotConnections()
    with pytest.raises(BotNotConnected, match="no open connection for 30 s"):
        await delivering(registry, "c1:1", connect_wait=30.0)()
    assert trio.current_time() == 30.0
    with pytest.raises(BotNotConnected, match="away"):
        await delivering(registry, "c1:2", connect_wait=30.0)()
    assert trio.current_time() == 30.0, "no second window"
    async with trio.open_nursery() as nursery:
        bot = Outlet()
        registry.add("relay", bot)
        outcome = start(nursery, delivering(registry, "c1:3"))
        await settle()
        registry.remove("relay", bot)  # back, then gone again: a fresh window
        await trio.sleep(29.0)
        registry.add("relay", Outlet())
        await settle()
        registry.acknowledge("relay", "c1:3")
    assert outcome.result == "acked"


async def test_an_event_fails_when_its_connection_does_not_acknowledge_in_time(
    autojump_clock: object,
) -> None:
    registry = BotConnections()
    registry.add("relay", Outlet())
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry, ack_timeout=10.0))
    assert isinstance(outcome.result, BotNotAcknowledging) and outcome.at == 10.0
    assert not registry.acknowledge("relay", "c1:1"), "a late ack changes nothing"


async def test_an_event_lost_on_every_connection_fails_after_max_sends(
    autojump_clock: object,
) -> None:
    registry = BotConnections()
    async with trio.open_nursery() as nursery:
        outcome = start(nursery, delivering(registry))
        for _ in range(MAX_SENDS):
            crashing = Outlet()
            registry.add("relay", crashing)
            await settle()
            assert crashing.frames == ["frame c1:1"]
            registry.remove("relay", crashing)
    assert isinstance(outcome.result, BotNotAcknowledging)


async def test_the_events_awaiting_acknowledgement_are_bounded(autojump_clock: object) -> None:
    registry = BotConnections(max_unacked=2)
    async with trio.open_nursery() as nursery:
        first = start(nursery, delivering(registry, "c1:1"))
        second = start(nursery, delivering(registry, "c2:1"))
        await settle()
        with pytest.raises(BotNotConnected, match="awaiting acknowledgement"):
            await registry.deliver("relay", "c3:1", "frame c3:1")
        bot = Outlet()
        registry.add("relay", bot)
        await settle()
        assert sorted(bot.frames) == ["frame c1:1", "frame c2:1"]
        for event_id in ("c1:1", "c2:1"):
            registry.acknowledge("relay", event_id)
    assert first.result == second.result == "acked"


def test_the_connected_adapter_reads_its_options() -> None:
    registry = BotConnections()
    bot = build_bot(
        "relay", "connected", {"connect_wait": 5, "ack_timeout": 2.5}, connections=registry
    )
    assert isinstance(bot, ConnectedBot)
    assert (bot.connect_wait, bot.ack_timeout) == (5.0, 2.5)
    default = build_bot("relay", "connected", {}, connections=registry)
    assert isinstance(default, ConnectedBot)
    assert (default.connect_wait, default.ack_timeout) == (30.0, 10.0)
    with pytest.raises(ConfigError) as bad:
        build_bot("relay", "connected", {"connect_wait": 0, "url": "x"}, connections=registry)
    assert "bots.relay.options.connect_wait: must be a positive number" in str(bad.value)
    assert "bots.relay.options.url: unknown option" in str(bad.value)
