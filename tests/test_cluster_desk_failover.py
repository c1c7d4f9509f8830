"""The desk's owner dies or stops mid-session (docs/cluster.md, The desk): three Switchover
nodes as processes on a real valkey-server, an agent on one node holding two chats, one
whose conversation the other survivor owns, one owned by the desk's owner itself. The
desk's owner is SIGKILLed (then, in the second test, stopped with SIGTERM): a surviving node
takes the desk over within about a lease, the agent keeps both chats, messages keep flowing
both ways, in order and never echoed, and a new session is offered to the agent. Then the
agent's own node dies (one that does not run the desk, then the one that does): the agent
keeps its chat by coming back on another node within the grace period, or loses it to the
queue after it."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from transport.client import AgentClient, Frame, UserClient, connect_agent, connect_user

from .support.cluster import Node, cluster_health, node_processes
from .support.valkey import valkey_server

LEASE = 2.0
NODES = ("n1", "n2", "n3")
ALICE = "alice-token-for-the-desk-failover"


def _config(node_id: str, valkey: str, grace: float) -> str:
    return f"""
secret = "one-secret-shared-by-every-node"
[listeners]
ws_port = 0
http_port = 0
shutdown_timeout = 2.0
[store]
kind = "valkey"
addresses = ["{valkey}"]
node_id = "{node_id}"
partitions = 12
lease_seconds = {LEASE}
durability = "none"
[bots.demo]
adapter = "demo"
[bots.demo.settings]
session_timeout = 600.0
grace_period = {grace}
[agents.alice]
token = "{ALICE}"
bots = ["demo"]
name = "Alice"
"""


def cluster(tmp_path: Path, valkey: str, grace: float = 60.0) -> Any:
    """Every node started at once; each killed on leaving."""
    return node_processes(tmp_path, {n: _config(n, valkey, grace) for n in NODES})


async def _desk_owner(http: httpx.AsyncClient, nodes: list[Node], timeout: float) -> Node:
    """The node that says it runs the desk, polled until one does (bounded)."""
    with trio.fail_after(timeout):
        while True:
            for node in nodes:
                if (await cluster_health(http, node))["desk_owner"]:
                    return node
            await trio.sleep(0.05)


def _entry(sender: str, text: str | None = None) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or frame["sender"] != sender:
            return False
        return text is None or frame["content"].get("text") == text

    return check


async def _holding(agent: AgentClient, *conversations: str, timeout: float = 10) -> None:
    """Until the agent's latest desk view lists exactly these chats (other frames that
    arrive meanwhile are skipped)."""

    def shown() -> bool:
        view = agent.desk
        return view is not None and {h["conversation_id"] for h in view["chats"]} == set(
            conversations
        )

    with trio.fail_after(timeout):
        while not shown():
            await agent.wait_for(lambda f: f["type"] == "desk", timeout=timeout)


@attrs.define
class Chat:
    user: UserClient
    agent: AgentClient
    conversation: str
    user_frames: list[Frame]
    agent_frames: list[Frame]

    async def exchange(self, label: str, rounds: int = 3) -> None:
        for n in range(rounds):
            await self.agent.say(self.conversation, f"agent {label} {n}")
            await self.user.say_text(f"user {label} {n}")
        for n in range(rounds):
            await self.user.wait_for(_entry("agent", f"agent {label} {n}"), timeout=10)
            await self.agent.wait_for(_entry("user", f"user {label} {n}"), timeout=10)

    def check(self) -> None:
        """In order, never twice, never echoed, on both sides."""
        agent = [
            f
            for f in self.agent_frames
            if f["type"] == "entry" and f["conversation_id"] == self.conversation
        ]
        user = [f for f in self.user_frames if f["type"] == "entry"]
        for frames, own in ((agent, "agent"), (user, "user")):
            seqs = [f["seq"] for f in frames]
            assert seqs == sorted(set(seqs))
            assert all(f["sender"] != own for f in frames)


async def _desk_moves_mid_session(tmp_path: Path, stop: Callable[[Node], None]) -> float:
    """Returns how long after ``stop`` another node ran the desk."""
    with valkey_server(tmp_path / "valkey") as valkey:
        async with (
            cluster(tmp_path, valkey.address) as nodes,
            httpx.AsyncClient() as http,
            AsyncExitStack() as stack,
        ):
            owner = await _desk_owner(http, list(nodes.values()), 10)
            # The agent on one survivor, the conversation made on (owned by) the other.
            agent_node, conversation_node = (n for n in nodes.values() if n is not owner)
            user_frames: list[Frame] = []
            agent_frames: list[Frame] = []
            user = await stack.enter_async_context(
                connect_user(
                    conversation_node.ws_url, bot_id="demo", frame_check=user_frames.append
                )
            )
            agent = await stack.enter_async_context(
                connect_agent(agent_node.ws_url, ALICE, frame_check=agent_frames.append)
            )
            chat = Chat(user, agent, user.conversation_id, user_frames, agent_frames)
            await user.say_text("hello")
            await user.click("LIVECHAT_SESSION_START")
            await agent.set_presence("online")
            await agent.wait_for(
                lambda f: f["type"] == "transcript" and f["conversation_id"] == chat.conversation
            )
            await _holding(agent, chat.conversation)
            await chat.exchange("before")
            # A second chat, whose conversation the desk's owner owns (made there), its user
            # resumed on the other survivor: both the desk and the conversation move.
            async with connect_user(owner.ws_url, bot_id="demo") as first:
                await first.say_text("hello")
                await first.wait_for(_entry("bot"))
                resume = (first.resume_token, first.last_seq)
            other_frames: list[Frame] = []
            other = await stack.enter_async_context(
                connect_user(
                    conversation_node.ws_url,
                    resume_token=resume[0],
                    last_seq=resume[1],
                    frame_check=other_frames.append,
                )
            )
            moved = Chat(other, agent, other.conversation_id, other_frames, agent_frames)
            await other.click("LIVECHAT_SESSION_START")
            await agent.wait_for(
                lambda f: f["type"] == "transcript" and f["conversation_id"] == moved.conversation
            )
            await _holding(agent, chat.conversation, moved.conversation)
            await moved.exchange("before")

            stop(owner)
            stopped_at = time.monotonic()
            survivors = [agent_node, conversation_node]
            # Messages keep flowing while the desk changes hands.
            await chat.exchange("during", rounds=1)
            await _desk_owner(http, survivors, LEASE * 5)
            takeover = time.monotonic() - stopped_at
            healths = [await cluster_health(http, n) for n in survivors]
            assert sum(h["desk_owner"] for h in healths) == 1
            assert sum(h["desk_takeovers"] for h in healths) == 1
            # The agent kept the chat; the new desk shows it to the agent, and they talk on.
            await _holding(agent, chat.conversation, moved.conversation)
            await chat.exchange("after")
            await moved.exchange("after")
            # A new session is offered to the agent, through the new desk.
            second_frames: list[Frame] = []
            second = await stack.enter_async_context(
                connect_user(agent_node.ws_url, bot_id="demo", frame_check=second_frames.append)
            )
            await second.say_text("hi")
            await second.click("LIVECHAT_SESSION_START")
            await agent.wait_for(
                lambda f: (
                    f["type"] == "transcript" and f["conversation_id"] == second.conversation_id
                ),
                timeout=10,
            )
            await _holding(agent, chat.conversation, moved.conversation, second.conversation_id)
            await agent.say(second.conversation_id, "welcome")
            await second.wait_for(_entry("agent", "welcome"), timeout=10)
            # The first chat ends as usual.
            await agent.sign_off(chat.conversation)
            await user.wait_for(lambda f: f.get("metadata", {}).get("sign_off"), timeout=10)
            await user.click("LIVECHAT_SESSION_END")
            await _holding(agent, moved.conversation, second.conversation_id)
            chat.check()
            moved.check()
            return takeover


async def test_sigkill_of_the_desk_owner_mid_session(tmp_path: Path) -> None:
    with trio.fail_after(90):
        takeover = await _desk_moves_mid_session(tmp_path, lambda node: node.process.kill())
    # The lease runs out, then the next round of a survivor takes it.
    assert takeover < LEASE * 3


async def test_a_graceful_stop_of_the_desk_owner_hands_the_desk_over_at_once(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        takeover = await _desk_moves_mid_session(
            tmp_path, lambda node: node.process.send_signal(signal.SIGTERM)
        )
    assert takeover < LEASE * 3


GRACE = 3.0


async def _agent_node_dies(tmp_path: Path, *, comes_back: bool, runs_desk: bool) -> None:
    """The agent's node (``runs_desk``: the desk's too) is SIGKILLed while the agent holds a
    chat; it comes back on another node at once, or not at all."""
    with valkey_server(tmp_path / "valkey") as valkey:
        async with (
            cluster(tmp_path, valkey.address, grace=GRACE) as nodes,
            httpx.AsyncClient() as http,
            AsyncExitStack() as stack,
        ):
            desk_node = await _desk_owner(http, list(nodes.values()), 10)
            others = [n for n in nodes.values() if n is not desk_node]
            if runs_desk:
                agent_node, conversation_node, refuge = desk_node, others[0], others[1]
            else:
                agent_node, conversation_node, refuge = others[0], others[1], desk_node
            user_frames: list[Frame] = []
            user = await stack.enter_async_context(
                connect_user(
                    conversation_node.ws_url, bot_id="demo", frame_check=user_frames.append
                )
            )
            conversation = user.conversation_id
            async with connect_agent(agent_node.ws_url, ALICE) as agent:
                await user.say_text("hello")
                await user.click("LIVECHAT_SESSION_START")
                await agent.set_presence("online")
                await agent.wait_for(lambda f: f["type"] == "transcript")
                await _holding(agent, conversation)
                agent_node.process.kill()
                killed_at = time.monotonic()
                agent_node.process.wait()
            if comes_back:
                # Back at once on another node: the chat stays with the agent, through and
                # after the dead node's departure from the live nodes.
                again = await stack.enter_async_context(connect_agent(refuge.ws_url, ALICE))
                transcript = await again.wait_for(lambda f: f["type"] == "transcript")
                assert transcript["conversation_id"] == conversation
                await _holding(again, conversation)
                await trio.sleep(LEASE * 2 + GRACE)  # past the lease and the grace period
                await again.say(conversation, "still here")
                await user.wait_for(_entry("agent", "still here"), timeout=10)
                assert again.desk is not None
                assert [h["grace_until"] for h in again.desk["chats"]] == [None]
                assert not [f for f in user_frames if "agent_left" in str(f)]
                return
            # Nobody comes back: once the node has left the live nodes its agent counts as
            # disconnected, and the chat goes back to the queue when the grace period ends.
            # A new desk gives the chat back to its agent and holds grace periods for its first
            # lease, while the nodes send their agents again: a lease more.
            bound = GRACE + LEASE * (4 if runs_desk else 3)
            left = await user.wait_for(lambda f: "agent_left" in str(f), timeout=bound)
            waited = time.monotonic() - killed_at
            assert left["content"]["reason"] == "agent_left"
            assert GRACE <= waited < bound
            # The agent signs in on another node and is given the chat again.
            again = await stack.enter_async_context(connect_agent(refuge.ws_url, ALICE))
            await again.set_presence("online")
            transcript = await again.wait_for(lambda f: f["type"] == "transcript", timeout=10)
            assert transcript["conversation_id"] == conversation
            await again.say(conversation, "back again")
            await user.wait_for(_entry("agent", "back again"), timeout=10)


async def test_an_agent_whose_node_dies_keeps_its_chat_when_it_comes_back_within_the_grace(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await _agent_node_dies(tmp_path, comes_back=True, runs_desk=False)


async def test_an_agent_whose_node_dies_and_who_does_not_come_back_loses_its_chat_after_the_grace(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await _agent_node_dies(tmp_path, comes_back=False, runs_desk=False)


async def test_an_agent_on_the_desk_s_node_that_dies_keeps_its_chat_by_coming_back_elsewhere(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await _agent_node_dies(tmp_path, comes_back=True, runs_desk=True)


async def test_an_agent_on_the_desk_s_node_that_dies_and_stays_away_loses_its_chat_after_the_grace(
    tmp_path: Path,
) -> None:
    with trio.fail_after(90):
        await _agent_node_dies(tmp_path, comes_back=False, runs_desk=True)
