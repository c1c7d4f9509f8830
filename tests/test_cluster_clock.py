"""A cluster node's core reads the engine's clock, not its own (transport/cluster/clock.py): a
node whose clock is off, on a real valkey-server, takes over a waiting session stamped by a
node on time and expires it at the engine's deadline, once, without an early expiry refused."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import SESSION_START
from transport.client import Frame, connect_user
from transport.cluster.clock import EngineClock
from transport.cluster.engine import connect
from transport.cluster.keys import PartitionKeys, partition_of
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer
from .support.cluster import node_settings
from .support.valkey import valkey_server

PARTITIONS = 4
TIMEOUT = 3.0
SKEW = 2.0
#: How late an expiry may land after the engine's deadline: the alarm, one commit, the
#: notice to the user (generous for a loaded machine; a skewed clock is off by SKEW).
LATE = 0.6


def _config(valkey: str, node_id: str, bot_url: str) -> Any:
    return from_mapping(
        {
            **node_settings([valkey], node_id, PARTITIONS),
            "bots": {
                "shop": {
                    "adapter": "webhook",
                    "options": {"url": bot_url, "secret": BOT_SECRET},
                    "settings": {"session_timeout": TIMEOUT},
                }
            },
        }
    )


@asynccontextmanager
async def running(config: Any) -> AsyncIterator[RunningServer]:
    """A node for the block; stopped gracefully (its leases given up) on leaving."""
    async with trio.open_nursery() as nursery:
        node: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        yield node
        node.stop()


def _expired(frame: Frame) -> bool:
    return frame["type"] == "entry" and frame["content"].get("code") == "session_expired"


@pytest.mark.parametrize("skew", [-SKEW, SKEW], ids=["behind", "ahead"])
async def test_a_node_whose_clock_is_off_expires_a_session_at_the_engines_deadline(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    skew: float,
) -> None:
    bot = BotServer()
    with valkey_server(tmp_path / "valkey") as valkey:
        async with AsyncExitStack() as stack:
            bot_url = await stack.enter_async_context(serving(bot))
            engine = await connect([valkey.address])
            stack.push_async_callback(engine.close)
            # A node on time opens a session that waits for an agent (there is none), stops.
            async with (
                running(_config(valkey.address, "on-time", bot_url)) as first,
                connect_user(first.ws_url, bot_id="shop") as user,
            ):
                await user.say_text("hello")
                await bot.wait_for_calls(1)
                await user.click(SESSION_START)
                await user.wait_for(lambda f: f["content"].get("code") == "session_started")
                token, conversation = user.resume_token, user.conversation_id
            key = PartitionKeys(partition_of(conversation, PARTITIONS)).deadlines
            deadline = float(await engine.command(["ZSCORE", key, conversation], key=key))

            # The next node's own clock is off by ``skew``; it takes the partitions over.
            real = time.time
            monkeypatch.setattr(time, "time", lambda: real() + skew)
            caplog.set_level(logging.ERROR, logger="switchover")
            async with (
                running(_config(valkey.address, "skewed", bot_url)) as second,
                connect_user(second.ws_url, resume_token=token, last_seq=0) as again,
            ):
                store: Any = second.services.board.store
                assert isinstance(store.clock, EngineClock)
                assert store.clock.skew() == pytest.approx(-skew, abs=0.1)
                async with httpx.AsyncClient() as http:
                    health = (await http.get(f"{second.http_url}/healthz")).json()["cluster"]
                    scraped = (await http.get(f"{second.http_url}/metrics")).text
                assert health["engine_clock_ahead"] == pytest.approx(-skew, abs=0.1)
                assert "switchover_cluster_engine_clock_ahead_seconds" in scraped
                await again.wait_for(_expired, timeout=TIMEOUT + SKEW * 2)
                late = await engine.now_ms() / 1000 - deadline
                event = await _bot_event(bot, "LIVECHAT_SESSION_EXPIRED")
                assert event["conversation_id"] == conversation
            assert 0 <= late <= LATE, late
            expiries = [
                e
                for e in bot.events
                if e["content"]["content"].get("payload") == "LIVECHAT_SESSION_EXPIRED"
            ]
            assert len(expiries) == 1
            # Its alarm rang by the engine's clock: no expiry was proposed early and refused.
            assert not [r for r in caplog.records if "EARLY" in r.getMessage()]


async def _bot_event(bot: BotServer, payload: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            for event in bot.events:
                if event["content"]["content"].get("payload") == payload:
                    return event
            await bot.wait_for_calls(bot.calls + 1)


async def test_the_engine_clock_reads_the_middle_of_each_round_trip_smoothed() -> None:
    clock = EngineClock(local=lambda: 1000.0)
    assert clock.now() == 1000.0 and clock.skew() is None  # nothing measured: its own
    clock.sample(500.0, sent=10.0, received=10.2)  # the engine read 500 at 10.1
    assert clock.to_trio(500.0) == pytest.approx(10.1)
    assert clock.now() - trio.current_time() == pytest.approx(489.9)
    clock.sample(502.0, sent=10.0, received=10.2)  # two seconds off: a step, taken at once
    assert clock.to_trio(502.0) == pytest.approx(10.1)
    clock.sample(502.5, sent=10.0, received=10.2)  # half a second off: a fifth of it
    assert clock.to_trio(502.0) == pytest.approx(10.0)
    for _ in range(5):
        clock.sample(400.0, sent=10.0, received=11.0)  # too slow a round trip to trust
    assert clock.to_trio(502.0) == pytest.approx(10.0)
    assert (clock.samples, clock.dropped) == (3, 5)
    clock.sample(502.0, sent=10.0, received=11.0)  # ...unless every one is that slow
    assert clock.to_trio(502.0) == pytest.approx(10.1)
    assert (clock.samples, clock.dropped) == (4, 5)
    assert clock.skew() == pytest.approx(clock.now() - 1000.0)
