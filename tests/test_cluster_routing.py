"""Two cluster nodes in one process on a real valkey-server: a user resumes on the node
that does not own its conversation and goes on there, through a whole livechat session with
an agent on the owner node: inputs are routed to the owner, outputs come back from the log,
never echoed to the client that wrote them, never twice, in order (docs/cluster.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.model import effects as fx
from transport.client import Frame, connect_agent, connect_user
from transport.cluster import routing
from transport.cluster.codec import message_json
from transport.cluster.keys import PartitionKeys, partition_of
from transport.cluster.routing import Router, _Pending
from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

from .support.cluster import node_settings
from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine
from .test_cluster_store import node

PARTITIONS = 8
AGENT_TOKEN = "alice-token-for-cluster-routing"


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


Valkey = ValkeyServer | ValkeyCluster


def _config(valkey: Valkey, node_id: str) -> Any:
    return from_mapping(
        {
            **node_settings(valkey.addresses, node_id, PARTITIONS),
            "bots": {"demo": {"adapter": "demo", "settings": {"session_timeout": 600.0}}},
            "agents": {"alice": {"token": AGENT_TOKEN, "bots": ["demo"], "name": "Alice"}},
        }
    )


@asynccontextmanager
async def two_nodes(valkey: Valkey) -> AsyncIterator[dict[str, RunningServer]]:
    """Nodes a and b started together, so they split the partitions."""
    nodes: dict[str, RunningServer] = {}
    async with trio.open_nursery() as nursery:

        async def start(node_id: str) -> None:
            nodes[node_id] = await nursery.start(
                lambda task_status: run_server(
                    _config(valkey, node_id), handle_signals=False, task_status=task_status
                )
            )

        async with trio.open_nursery() as starting:
            starting.start_soon(start, "a")
            starting.start_soon(start, "b")
        yield nodes
        for node in nodes.values():
            node.stop()


def _entry(sender: str) -> Any:
    return lambda f: f["type"] == "entry" and f["sender"] == sender


def _owned(node: RunningServer) -> set[int]:
    store: Any = node.services.board.store
    return set(store.leases.tokens)


async def test_a_session_through_the_node_that_does_not_own_the_conversation(
    valkey: Valkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On a cluster the owner reads an inbound stream when its bell rings: no sweep helps.
    monkeypatch.setattr(routing, "_SWEEP_SECONDS", 3600.0)
    async with two_nodes(valkey) as nodes:
        a, b = nodes["a"], nodes["b"]
        assert _owned(a) and _owned(b) and not _owned(a) & _owned(b)
        if isinstance(valkey, ValkeyCluster):  # the partitions are spread over every shard
            shards = {valkey.shard_of(PartitionKeys(p).lease) for p in range(PARTITIONS)}
            assert shards == set(valkey.servers)
        async with connect_user(a.ws_url, bot_id="demo") as first:
            conversation = first.conversation_id
            assert partition_of(conversation, PARTITIONS) in _owned(a)
            await first.say_text("hello")
            await first.wait_for(_entry("bot"))
            token, last_seq = first.resume_token, first.last_seq

        frames: list[Frame] = []
        async with connect_user(
            b.ws_url, resume_token=token, last_seq=last_seq, frame_check=frames.append
        ) as user:
            # Through b: the input goes to a, the bot's answer comes back from the log.
            said = await user.say_text("hello from b")
            assert said is not None and said > last_seq
            await user.wait_for(lambda f: _entry("bot")(f) and f["seq"] > said)
            await user.click("LIVECHAT_SESSION_START")
            async with connect_agent(a.ws_url, AGENT_TOKEN) as agent:
                await agent.set_presence("online")
                transcript = await agent.wait_for(lambda f: f["type"] == "transcript")
                assert transcript["conversation_id"] == conversation
                texts = [e["content"].get("text") for e in transcript["entries"]]
                assert "hello from b" in texts
                await agent.say(conversation, "Alice here")
                joined = await user.wait_for(
                    lambda f: _entry("agent")(f) and f["content"]["text"] == "Alice here"
                )
                mine = await user.say_text("thanks Alice")
                heard = await agent.wait_for(_entry("user"))
                assert (heard["seq"], heard["content"]["text"]) == (mine, "thanks Alice")
                await agent.sign_off(conversation)
                await user.wait_for(lambda f: f.get("metadata", {}).get("sign_off"))
                await user.click("LIVECHAT_SESSION_END")
                await user.wait_for(
                    lambda f: _entry("system")(f) and f["content"].get("code") == "session_ended"
                )
            assert joined["seq"] < (mine or 0)
        store_a: Any = a.services.board.store
        store_b: Any = b.services.board.store
        assert store_b.router.forwarded >= 4 and store_a.router.served == store_b.router.forwarded
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{b.http_url}/healthz")).json()["cluster"]
            assert health["node_id"] == "b"
            assert set(health["partitions_owned"]) == _owned(b)
            assert health["inputs_forwarded"] == store_b.router.forwarded
            assert health["inputs_waiting"] == 0
            scraped = (await http.get(f"{a.http_url}/metrics")).text
            assert f"switchover_cluster_partitions_owned {float(len(_owned(a)))}" in scraped
            assert "switchover_cluster_inputs_served_total" in scraped
            # How long the inputs a served waited in its inbound stream (here: not long).
            lag = (await http.get(f"{a.http_url}/healthz")).json()["cluster"]["inbound_lag"]
            assert lag == round(store_a.router.inbound_lag, 4) and 0.0 <= lag < 5.0
            assert "switchover_cluster_inbound_lag_seconds" in scraped
        entries = [f for f in frames if f["type"] == "entry"]
        seqs = [f["seq"] for f in entries]
        assert seqs == sorted(set(seqs))  # in order, never twice
        assert all(f["sender"] != "user" for f in entries)  # nothing echoed back to its writer
        # Every seq after the resume is accounted for: delivered here, or answered to a request.
        acked = {f["seq"] for f in frames if f["type"] == "ack" and f.get("seq") is not None}
        stored = await b.services.board.store.entries_after(conversation, last_seq)
        user_side = {e.seq for e in stored if "user" in {p.value for p in e.audience}}
        assert user_side <= set(seqs) | acked


async def test_an_answer_added_while_no_read_is_waiting_is_not_lost(valkey: Valkey) -> None:
    """The node's answers stream is read from its start, not from ``$`` (which a blocking
    read takes as "what arrives during this read": an answer added between two reads was
    lost, and its client told after 10 s to send again)."""
    async with node(valkey, "b") as store:
        router = Router(store, valkey.addresses)
        answered = trio.Event()
        outcomes: list[fx.Outcome] = []

        def reply(outcome: fx.Outcome) -> None:
            outcomes.append(outcome)
            answered.set()

        router.pending["b-1"] = _Pending("c1", reply, None, trio.current_time() + 10)
        key = "sw:out:b"
        for request, seq in (("b-0", 3), ("b-1", 7)):  # an earlier run's answer, then ours
            fields = ["r", request, "o", message_json(fx.Accepted(seq))]
            await store.engine.command(["XADD", key, "*", *fields], key=key)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router._read_answers_forever)
            with trio.fail_after(5):
                await answered.wait()
            nursery.cancel_scope.cancel()
        assert outcomes == [fx.Accepted(7)]
        assert not router.pending
