"""The conformance scenarios of tests/test_conformance.py on two cluster nodes sharing a real
valkey-server: the user is on the node that does not own its conversation (every input of
theirs routed through the partition's inbound stream, every output read back from the log),
the agent on the owning node (the desk is per node, docs/cluster.md), the bot a real webhook.
Handoff, the bot hearing nothing during a session, the sign-off, the user's own end, and the
idle expiry reset by either side behave as on one node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from actors import SESSION_END, SESSION_START
from transport.client import AgentClient, Frame, UserClient, connect_agent, connect_user
from transport.cluster.keys import PartitionKeys, partition_of
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .fakes.asgi_server import serving
from .fakes.webhook_bot import SECRET as BOT_SECRET
from .fakes.webhook_bot import BotServer
from .support.cluster import node_settings
from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine

Valkey = ValkeyServer | ValkeyCluster

PARTITIONS = 8
ALICE_TOKEN = "alice-token-for-cluster-conformance"


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


def _entry(sender: str, **content: Any) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or frame["sender"] != sender:
            return False
        return all(frame["content"].get(k) == v for k, v in content.items())

    return check


def _notice(code: str) -> Callable[[Frame], bool]:
    return lambda f: _entry("system", code=code)(f) and f["content_type"] == "notice"


def _config(valkey: Valkey, node_id: str, bot_url: str, timeout: float) -> Any:
    return from_mapping(
        {
            **node_settings(valkey.addresses, node_id, PARTITIONS),
            "bots": {
                "shop": {
                    "adapter": "webhook",
                    "options": {"url": bot_url, "secret": BOT_SECRET},
                    "settings": {"session_timeout": timeout},
                }
            },
            "agents": {"alice": {"name": "Alice", "token": ALICE_TOKEN, "bots": ["shop"]}},
        }
    )


@attrs.define
class Cluster:
    owner: RunningServer
    other: RunningServer
    bot: BotServer
    user: UserClient
    agent: AgentClient

    @property
    def conversation_id(self) -> str:
        return self.user.conversation_id

    def bot_texts(self) -> list[str]:
        return [
            e["content"]["content"].get("text") or e["content"]["content"].get("payload")
            for e in self.bot.events
        ]

    async def bot_event(self, payload: str) -> dict[str, Any]:
        with trio.fail_after(10):
            while True:
                for event in self.bot.events:
                    if event["content"]["content"].get("payload") == payload:
                        return event
                await self.bot.wait_for_calls(self.bot.calls + 1)

    async def picks_up(self) -> list[str]:
        """The agent goes online and is handed the session: the user's texts it was shown."""
        await self.agent.set_presence("online")
        transcript = await self.agent.wait_for(
            lambda f: f["type"] == "transcript" and f["conversation_id"] == self.conversation_id
        )
        await self.user.wait_for(_notice("agent_joined"))
        return [
            e["content"]["text"]
            for e in transcript["entries"]
            if e["sender"] == "user" and e.get("session_id") and e["content_type"] == "text"
        ]


@asynccontextmanager
async def cluster(valkey: Valkey, timeout: float = 3600.0) -> AsyncIterator[Cluster]:
    """Two nodes started together; a user resumed on the node that does not own its
    conversation, after its first message to the bot; the agent on the owner."""
    bot = BotServer()
    async with AsyncExitStack() as stack:
        bot_url = await stack.enter_async_context(serving(bot))
        nursery = await stack.enter_async_context(trio.open_nursery())
        nodes: dict[str, RunningServer] = {}

        async def start(node_id: str) -> None:
            config = _config(valkey, node_id, bot_url, timeout)
            nodes[node_id] = await nursery.start(
                lambda task_status: run_server(
                    config, handle_signals=False, task_status=task_status
                )
            )

        async with trio.open_nursery() as starting:
            starting.start_soon(start, "a")
            starting.start_soon(start, "b")
        try:
            owner, other = nodes["a"], nodes["b"]
            async with connect_user(owner.ws_url, bot_id="shop", metadata={"name": "Uma"}) as u:
                token, last_seq = u.resume_token, u.last_seq
                conversation = u.conversation_id
            owned: Any = owner.services.board.store
            assert partition_of(conversation, PARTITIONS) in owned.leases.tokens
            user = await stack.enter_async_context(
                connect_user(other.ws_url, resume_token=token, last_seq=last_seq)
            )
            assert user.conversation_id == conversation
            agent = await stack.enter_async_context(connect_agent(owner.ws_url, ALICE_TOKEN))
            yield Cluster(owner, other, bot, user, agent)
        finally:
            for node in nodes.values():
                node.stop()


async def _handed_over(world: Cluster) -> None:
    await world.user.say_text("hello bot")
    await world.bot.wait_for_calls(1)
    await world.user.click(SESSION_START)
    await world.user.wait_for(_notice("session_started"))


async def _remembered_inputs(world: Cluster) -> int:
    """How many routed inputs of the conversation's partition the owner's commits stored."""
    store: Any = world.owner.services.board.store
    key = PartitionKeys(partition_of(world.conversation_id, PARTITIONS)).inputs
    return int(await store.engine.command(["HLEN", key], key=key))


async def test_handoff_across_nodes_messages_both_ways_in_order_and_the_bot_hears_nothing(
    valkey: Valkey,
) -> None:
    async with cluster(valkey) as world:
        user = world.user
        await _handed_over(world)
        await user.say_text("anyone there?")
        shown = await world.picks_up()
        assert shown == ["anyone there?"]
        for n in range(3):
            await user.say_text(f"user {n}")
        for n in range(3):
            heard = await world.agent.wait_for(_entry("user", text=f"user {n}"))
            assert heard["conversation_id"] == world.conversation_id
        for n in range(3):
            await world.agent.say(world.conversation_id, f"agent {n}")
        seqs = [(await user.wait_for(_entry("agent", text=f"agent {n}")))["seq"] for n in range(3)]
        assert seqs == sorted(seqs)
        assert world.bot_texts() == ["hello bot"]
        # Every input of the user went through the owner's commits, each stored once.
        assert await _remembered_inputs(world) >= 6


async def test_the_sign_off_across_nodes_the_user_ignores_then_confirms(
    valkey: Valkey,
) -> None:
    async with cluster(valkey) as world:
        user = world.user
        await _handed_over(world)
        await world.picks_up()
        await world.agent.sign_off(world.conversation_id)
        offer = await user.wait_for(lambda f: _entry("system")(f) and f.get("metadata"))
        assert offer["metadata"]["sign_off"] is True
        await user.say_text("one more thing")
        await world.agent.wait_for(_entry("user", text="one more thing"))
        await world.agent.say(world.conversation_id, "sure")
        await user.wait_for(_entry("agent", text="sure"))
        await user.click(SESSION_END)
        await user.wait_for(_notice("session_ended"))
        ended = await world.agent.wait_for(_notice("session_ended"))
        assert ended["content"]["reason"] == "user_ended"
        event = await world.bot_event(SESSION_END)
        assert event["metadata"]["reason"] == "user_ended"
        assert world.bot_texts() == ["hello bot", SESSION_END]


async def test_the_user_ends_alone_while_waiting_across_nodes(valkey: Valkey) -> None:
    async with cluster(valkey) as world:
        await _handed_over(world)
        await world.user.click(SESSION_END)
        await world.user.wait_for(_notice("session_ended"))
        event = await world.bot_event(SESSION_END)
        assert event["metadata"]["reason"] == "user_ended"
        # Back with the bot, still through the other node.
        await world.user.say_text("hi again")
        await world.bot.wait_for_calls(3)
        assert world.bot_texts()[-1] == "hi again"


async def test_the_idle_expiry_across_nodes_is_reset_by_either_side(valkey: Valkey) -> None:
    timeout = 1.5
    async with cluster(valkey, timeout=timeout) as world:
        user = world.user
        await _handed_over(world)
        await world.picks_up()
        # Each side speaks after most of the timeout has passed since the last activity:
        # without the reset, the session would have expired before the next one.
        await trio.sleep(timeout * 0.6)
        await user.say_text("still here")
        await world.agent.wait_for(_entry("user", text="still here"))
        await trio.sleep(timeout * 0.6)
        await world.agent.say(world.conversation_id, "me too")
        await user.wait_for(_entry("agent", text="me too"))
        last = trio.current_time()
        expired = await user.wait_for(_notice("session_expired"), timeout=10)
        assert trio.current_time() - last >= timeout * 0.6
        assert expired["content"]["reason"] == "idle_timeout"
        event = await world.bot_event("LIVECHAT_SESSION_EXPIRED")
        assert event["metadata"]["reason"] == "idle_timeout"
        told = await world.agent.wait_for(_notice("session_expired"))
        assert told["content"]["reason"] == "idle_timeout"
        # Ended once: the user's side of the log holds one expiry notice.
        store: Any = world.owner.services.board.store
        entries = await store.entries_after(world.conversation_id, 0)
        notices = [e for e in entries if e.content.content.get("code") == "session_expired"]
        assert len([e for e in notices if "user" in {p.value for p in e.audience}]) == 1
