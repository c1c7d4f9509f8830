"""The desk across cluster nodes (docs/cluster.md, The desk): one node runs the desk under a
lease, and an agent connected to any node is offered, and talks in, a session whose
conversation another node owns, with its user on a third; nothing echoed, repeated or
reordered. In-process nodes on a real valkey-server; the desk owner's death is in
tests/test_cluster_desk_failover.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from transport.client import Frame, RequestRefused, connect_agent, connect_user
from transport.cluster.keys import partition_of
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .support.cluster import node_settings
from .test_cluster_routing import AGENT_TOKEN, PARTITIONS, Valkey, _config, valkey

__all__ = ["valkey"]


BOB_TOKEN = "bob-token-for-the-cluster-desk"


def _with_bob(valkey: Valkey, node_id: str) -> Any:
    """The routing tests' config, with a second agent."""
    return from_mapping(
        {
            **node_settings(valkey.addresses, node_id, PARTITIONS),
            "bots": {"demo": {"adapter": "demo", "settings": {"session_timeout": 600.0}}},
            "agents": {
                "alice": {"token": AGENT_TOKEN, "bots": ["demo"], "name": "Alice"},
                "bob": {"token": BOB_TOKEN, "bots": ["demo"], "name": "Bob"},
            },
        }
    )


@asynccontextmanager
async def started(
    valkey: Valkey, *ids: str, config: Callable[[Valkey, str], Any] = _config
) -> AsyncIterator[dict[str, RunningServer]]:
    """Nodes started together, so they split the partitions."""
    nodes: dict[str, RunningServer] = {}
    async with trio.open_nursery() as nursery:

        async def start(node_id: str) -> None:
            nodes[node_id] = await nursery.start(
                lambda task_status: run_server(
                    config(valkey, node_id), handle_signals=False, task_status=task_status
                )
            )

        async with trio.open_nursery() as starting:
            for node_id in ids:
                starting.start_soon(start, node_id)
        yield nodes
        for node in nodes.values():
            node.stop()


def _owned(node: RunningServer) -> set[int]:
    store: Any = node.services.board.store
    return set(store.leases.tokens)


def _entry(sender: str, text: str | None = None) -> Callable[[Frame], bool]:
    def check(frame: Frame) -> bool:
        if frame["type"] != "entry" or frame["sender"] != sender:
            return False
        return text is None or frame["content"].get("text") == text

    return check


async def _desk_owners(nodes: dict[str, RunningServer]) -> list[str]:
    """The nodes whose /healthz says they run the desk, once one does (bounded wait)."""
    async with httpx.AsyncClient() as http:
        with trio.fail_after(10):
            while True:
                owners = []
                for node_id, node in nodes.items():
                    health = (await http.get(f"{node.http_url}/healthz")).json()["cluster"]
                    if health["desk_owner"]:
                        owners.append(node_id)
                if owners:
                    return owners
                await trio.sleep(0.05)


async def test_an_agent_on_one_node_takes_a_session_owned_by_another_with_its_user_on_a_third(
    valkey: Valkey,
) -> None:
    async with started(valkey, "a", "b", "c") as nodes:
        owners = await _desk_owners(nodes)
        assert len(owners) == 1
        async with httpx.AsyncClient() as http:
            for node_id, node in nodes.items():
                scraped = (await http.get(f"{node.http_url}/metrics")).text
                owner = 1.0 if node_id == owners[0] else 0.0
                assert f"switchover_cluster_desk_owner {owner}" in scraped
        # c runs the desk; the agent is on a; the conversation is made on b (so b owns it),
        # and its user then goes on through c.
        c = nodes[owners[0]]
        a, b = (node for node_id, node in sorted(nodes.items()) if node_id != owners[0])
        async with connect_user(b.ws_url, bot_id="demo") as first:
            conversation = first.conversation_id
            await first.say_text("hello")
            await first.wait_for(_entry("bot"))
            token, last_seq = first.resume_token, first.last_seq
        assert partition_of(conversation, PARTITIONS) in _owned(b)
        assert partition_of(conversation, PARTITIONS) not in _owned(a) | _owned(c)
        user_frames: list[Frame] = []
        agent_frames: list[Frame] = []
        async with (
            connect_user(
                c.ws_url, resume_token=token, last_seq=last_seq, frame_check=user_frames.append
            ) as user,
            connect_agent(a.ws_url, AGENT_TOKEN, frame_check=agent_frames.append) as agent,
        ):
            await user.click("LIVECHAT_SESSION_START")
            # The desk on a (its queue of bots) shows the waiting session before anyone
            # takes it: the agent is still offline.
            waiting = await agent.wait_for(
                lambda f: (
                    f["type"] == "desk"
                    and [w["conversation_id"] for w in f["queue"]] == [conversation]
                )
            )
            assert waiting["chats"] == []
            await user.say_text("is anyone there?")
            # What the user wrote while waiting is shown in the queue, in short.
            shown = await agent.wait_for(
                lambda f: (
                    f["type"] == "desk"
                    and [w["last_message"] for w in f["queue"]] == ["is anyone there?"]
                )
            )
            assert shown["queue"][0]["conversation_id"] == conversation
            await agent.set_presence("online")
            transcript = await agent.wait_for(lambda f: f["type"] == "transcript")
            assert transcript["conversation_id"] == conversation
            assert "is anyone there?" in [e["content"].get("text") for e in transcript["entries"]]
            with trio.fail_after(5):
                while not (agent.desk and agent.desk["chats"]):
                    await agent.wait_for(lambda f: f["type"] == "desk")
            held = agent.desk
            assert [h["conversation_id"] for h in held["chats"]] == [conversation]
            assert held["queue"] == []
            # The user left b and is on c: the desk counts its clients across nodes.
            assert held["chats"][0]["user_connected"] is True
            await user.wait_for(lambda f: _entry("system")(f) and "agent_joined" in str(f))
            said = []
            for n in range(5):
                said.append(await agent.say(conversation, f"agent {n}"))
                said.append(await user.say_text(f"user {n}"))
            for n in range(5):
                await user.wait_for(_entry("agent", f"agent {n}"))
                await agent.wait_for(_entry("user", f"user {n}"))
            await agent.sign_off(conversation)
            await user.wait_for(lambda f: f.get("metadata", {}).get("sign_off"))
            await user.click("LIVECHAT_SESSION_END")
            await user.wait_for(
                lambda f: _entry("system")(f) and f["content"].get("code") == "session_ended"
            )
            await agent.wait_for(
                lambda f: _entry("system")(f) and f["content"].get("code") == "session_ended"
            )
            await agent.wait_for(lambda f: f["type"] == "desk" and f["chats"] == [])
        agent_entries = [f for f in agent_frames if f["type"] == "entry"]
        agent_seqs = [f["seq"] for f in agent_entries]
        assert agent_seqs == sorted(set(agent_seqs))  # in order, never twice
        assert all(f["sender"] != "agent" for f in agent_entries)  # no echo of its own
        assert [f["content"]["text"] for f in agent_entries if f["sender"] == "user"] == [
            f"user {n}" for n in range(5)
        ]
        user_entries = [f for f in user_frames if f["type"] == "entry"]
        user_seqs = [f["seq"] for f in user_entries]
        assert user_seqs == sorted(set(user_seqs))
        assert all(f["sender"] != "user" for f in user_entries)
        assert [f["content"]["text"] for f in user_entries if f["sender"] == "agent"] == [
            f"agent {n}" for n in range(5)
        ]
        # Every seq of the chat was written by one side and delivered to the other.
        assert set(said) <= set(agent_seqs) | set(user_seqs)


async def test_a_transfer_between_agents_on_two_nodes_moves_the_chat_and_what_each_may_do(
    valkey: Valkey,
) -> None:
    async with started(valkey, "a", "b", config=_with_bob) as nodes:
        a, b = nodes["a"], nodes["b"]
        async with (
            connect_user(a.ws_url, bot_id="demo") as user,
            connect_agent(a.ws_url, AGENT_TOKEN) as alice,
            connect_agent(b.ws_url, BOB_TOKEN) as bob,
        ):
            conversation = user.conversation_id
            await alice.set_presence("online")
            await user.say_text("hello")
            await user.wait_for(_entry("bot"))
            await user.click("LIVECHAT_SESSION_START")
            await alice.wait_for(lambda f: f["type"] == "transcript")
            await alice.say(conversation, "Alice here")
            await user.wait_for(_entry("agent", "Alice here"))
            await bob.set_presence("online")

            def bob_online() -> bool:
                view = alice.desk
                return view is not None and any(
                    c["agent_id"] == "bob" and c["presence"] == "online" for c in view["colleagues"]
                )

            # Alice's desk shows Bob online once the desk has his presence (from another node,
            # it may come after Alice's next request).
            with trio.fail_after(5):
                while not bob_online():
                    await alice.wait_for(lambda f: f["type"] == "desk")
            # Alice, on a, hands the chat to Bob, on b: both see it move.
            await alice.transfer(conversation, "bob")
            transcript = await bob.wait_for(lambda f: f["type"] == "transcript")
            assert transcript["conversation_id"] == conversation
            assert "Alice here" in [e["content"].get("text") for e in transcript["entries"]]
            joined = await user.wait_for(lambda f: _entry("system")(f) and "Bob" in str(f))
            assert joined["content"]["code"] == "agent_joined"
            told = await alice.wait_for(lambda f: _entry("system")(f) and "bob" in str(f))
            assert told["content"]["code"] == "transferred"
            with trio.fail_after(5):
                while not (bob.desk and bob.desk["chats"]):
                    await bob.wait_for(lambda f: f["type"] == "desk")
                while alice.desk is None or alice.desk["chats"]:
                    await alice.wait_for(lambda f: f["type"] == "desk")
            await bob.say(conversation, "Bob here")
            await user.wait_for(_entry("agent", "Bob here"))
            await user.say_text("thanks Bob")
            heard = await bob.wait_for(_entry("user"))
            assert heard["content"]["text"] == "thanks Bob"
            # Alice no longer holds the chat: her node refuses what she writes to it.
            try:
                await alice.say(conversation, "still me?")
            except RequestRefused as refused:
                assert refused.code == "not_assigned"
            else:
                raise AssertionError("alice wrote to a chat she no longer holds")


async def test_a_claim_across_nodes_and_the_refusal_of_a_second_one(valkey: Valkey) -> None:
    async with started(valkey, "a", "b", config=_with_bob) as nodes:
        a, b = nodes["a"], nodes["b"]
        async with (
            connect_user(b.ws_url, bot_id="demo") as user,
            connect_agent(a.ws_url, AGENT_TOKEN) as alice,
            connect_agent(b.ws_url, BOB_TOKEN) as bob,
        ):
            conversation = user.conversation_id
            await alice.set_presence("away")
            await bob.set_presence("away")
            await user.say_text("hello")
            await user.wait_for(_entry("bot"))
            await user.click("LIVECHAT_SESSION_START")
            for agent in (alice, bob):
                await agent.wait_for(
                    lambda f: (
                        f["type"] == "desk"
                        and [w["conversation_id"] for w in f["queue"]] == [conversation]
                    )
                )
            # Away agents are offered nothing; Alice, on a, takes the chat by hand.
            await alice.claim(conversation)
            transcript = await alice.wait_for(lambda f: f["type"] == "transcript")
            assert transcript["conversation_id"] == conversation
            # Bob's claim, on b, comes too late: his own connection is told, with his
            # claim's id.
            frame = {"type": "claim", "conversation_id": conversation, "id": "bob-claim"}
            await bob.request(frame)
            refused = await bob.wait_for(lambda f: f["type"] == "error")
            assert (refused["code"], refused["id"]) == ("not_waiting", "bob-claim")
            await alice.say(conversation, "mine")
            await user.wait_for(_entry("agent", "mine"))


def test_the_desk_s_requests_and_deliveries_cross_nodes_as_they_were() -> None:
    from actors.model.agent_request import AgentRequest
    from actors.model.content import Content
    from actors.model.deliveries import Colleague, DeskStatus, HeldChat, Transcript, WaitingItem
    from actors.model.effects import Refusal
    from actors.model.records import Entry, Party
    from actors.model.settings import BotSettings, CannedResponse
    from transport.cluster.codec import desk_from_json, desk_json, message_from_json

    entry = Entry(
        "c1", 3, 1.5, Party.USER, Content.text("hi"), frozenset({Party.AGENT, Party.USER}), "alice"
    )
    values = [
        entry,
        Transcript("c1", "s1", "demo", "u1", {"name": "Uma"}, (entry,), truncated=True),
        DeskStatus(
            "alice",
            "Alice",
            "online",
            3,
            (HeldChat("c1", "s1", "demo", None, True, 2.0),),
            (WaitingItem("c2", "demo", 1.0, 1, "Ann", "help", 1.0),),
            (Colleague("bob", "Bob", "offline", 2),),
            {"demo": (CannedResponse("hi", "Hello!"),)},
            grace_period=60.0,
        ),
        Refusal("cannot_claim", "taken", "c2"),
        ["request", AgentRequest("c1", "s1", "demo", 1.0, "alice", (2, 1), "Uma")],
        ["settings", "demo", BotSettings(grace_period=5.0)],
    ]
    for value in values:
        assert desk_from_json(desk_json(value)) == value
    # Only the desk's classes are rebuilt: a name from elsewhere is refused, and the
    # events' reader knows none of the deliveries.
    forged = desk_json(entry).replace("Entry", "Path")
    for text, read in ((forged, desk_from_json), (desk_json(entry), message_from_json)):
        try:
            read(text)
        except KeyError:
            pass
        else:
            raise AssertionError(f"{text} was read")


def test_an_input_served_by_the_node_it_came_from_is_not_sent_back_to_its_writer() -> None:
    """A node that took a conversation over while an input of its own agent was on its way
    to the last owner serves it with the connection's reference as origin: that connection
    is skipped, the agent's other connection is not."""
    from actors import AgentProfile, BotSettings
    from actors.model.content import Content
    from actors.model.deliveries import Delivery
    from actors.model.records import Entry, Party
    from transport.cluster.desk import ClusterDesk
    from transport.cluster.routing import RemoteOrigin

    class Collected:
        def __init__(self) -> None:
            self.items: list[Delivery] = []

        def deliver(self, item: Delivery) -> None:
            self.items.append(item)

    desk = ClusterDesk(
        {"demo": BotSettings()},
        [AgentProfile("alice", "Alice", frozenset({"demo"}))],
        node_id="a",
    )
    wrote, other = Collected(), Collected()
    desk.attach("alice", wrote)
    desk.attach("alice", other)
    ref = desk._origin_ref(wrote)
    assert ref is not None and ref != desk._origin_ref(other)
    entry = Entry("c1", 4, 1.0, Party.AGENT, Content.text("hi"), frozenset({Party.AGENT}), "alice")
    desk.deliver("alice", entry, skip=RemoteOrigin(ref))
    assert (wrote.items, other.items) == ([], [entry])
