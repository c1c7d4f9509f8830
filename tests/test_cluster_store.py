"""The clustered store on a real valkey-server: atomic commits under partition leases with
fencing tokens, exactly-once appends, reads and the bot's backlog, and one node serving real
clients end to end (docs/cluster.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import ConversationState, Entry, Party
from actors.model.content import Content
from actors.model.settings import BotSettings
from actors.model.state import Session
from actors.ports import StoreUnavailable
from transport.client import connect_agent, connect_user
from transport.cluster.engine import connect
from transport.cluster.keys import PartitionKeys, partition_of
from transport.cluster.leases import LeaseLost, Leases
from transport.cluster.store import ValkeyStore, open_valkey_store
from transport.config import from_mapping
from transport.errors import ConfigError
from transport.servers.runtime import RunningServer, run_server

from .support.cluster import node_settings
from .support.valkey import (
    ENGINES,
    ValkeyCluster,
    ValkeyServer,
    valkey_cluster,
    valkey_engine,
    valkey_server,
)

Valkey = ValkeyServer | ValkeyCluster

PARTITIONS = 8
SETTINGS = {"demo": BotSettings(session_timeout=600.0)}
AGENT_TOKEN = "alice-token-for-cluster-tests"


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


def _state(conversation_id: str, next_seq: int, *, open_session: bool = False) -> ConversationState:
    session = Session("s1", 1.0, 2.0, 1.0) if open_session else None
    return ConversationState(conversation_id, "demo", "u1", {"name": "Uma"}, next_seq, session, 1)


def _entry(conversation_id: str, seq: int, text: str, *, to_bot: bool = True) -> Entry:
    audience = frozenset({Party.USER, Party.BOT} if to_bot else {Party.USER})
    return Entry(conversation_id, seq, float(seq), Party.USER, Content.text(text), audience)


@asynccontextmanager
async def node(valkey: Valkey, node_id: str, **options: Any) -> AsyncIterator[ValkeyStore]:
    options = {
        "partitions": PARTITIONS,
        "lease_seconds": 1.0,
        "settings": SETTINGS,
        "settle": False,
        **options,
    }
    async with open_valkey_store(valkey.addresses, node_id, **options) as store:
        yield store


async def test_a_commit_is_read_back_whole_and_the_bot_backlog_survives(
    valkey: Valkey,
) -> None:
    async with node(valkey, "n1") as store:
        assert len(store.leases.tokens) == PARTITIONS  # alone, it owns every partition
        entries = [_entry("c1", 1, "hello"), _entry("c1", 2, "ünïcode ✓", to_bot=False)]
        await store.record(_state("c1", 3, open_session=True), entries)
        assert await store.load("c1") == _state("c1", 3, open_session=True)
        assert await store.entries_after("c1", 0) == entries
        assert await store.entries_after("c1", 1) == entries[1:]
        assert [s.conversation_id for s in await store.open_sessions()] == ["c1"]
        assert await store.bot_backlog() == entries[:1]
        await store.record(_state("c1", 3), [])  # the session ends
        assert await store.open_sessions() == []
    # A graceful stop gave the leases up: the next node owns them at once.
    with trio.fail_after(0.5):
        async with node(valkey, "n2") as store:
            assert len(store.leases.tokens) == PARTITIONS
            assert await store.bot_backlog() == entries[:1]  # still owed
            store.bot_done("c1", 1)
            await store.flush_pending()
            assert await store.bot_backlog() == []


async def test_a_commit_is_appended_once_and_only_in_order(valkey: Valkey) -> None:
    async with node(valkey, "n1") as store:
        await store.record(_state("c1", 2), [_entry("c1", 1, "one")])
        # The same commit again (a redelivered input) is refused: seq 1 is taken.
        with pytest.raises(StoreUnavailable, match="SEQ"):
            await store.record(_state("c1", 2), [_entry("c1", 1, "one again")])
        # A gap is refused too, and so is a state older than the stored one.
        with pytest.raises(StoreUnavailable, match="SEQ"):
            await store.record(_state("c1", 4), [_entry("c1", 3, "three")])
        with pytest.raises(StoreUnavailable, match="SEQ"):
            await store.record(_state("c1", 1), [])
        assert [e.content.content["text"] for e in await store.entries_after("c1", 0)] == ["one"]


async def test_a_node_that_lost_its_lease_can_never_write_again(valkey: Valkey) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "old", lease_seconds=0.5) as old:
            keys = PartitionKeys(partition_of("c1", PARTITIONS))
            old_token = old.leases.token(keys.number)
            assert old_token is not None and old_token.startswith("old:")
            # The old owner stalls (its lease expires unrenewed) and another node takes over.
            await engine.command(["DEL", keys.lease], key=keys.lease)
            new = Leases(engine, "new", PARTITIONS, 5.0)
            await new.round()
            new_token = new.token(keys.number)
            assert new_token is not None and new_token != old_token
            # The old owner still believes it holds the partition: the engine says no.
            assert old.leases.token(keys.number) == old_token
            with pytest.raises(StoreUnavailable, match="FENCED"):
                await old.record(_state("c1", 2), [_entry("c1", 1, "too late")])
            assert old.fenced == 1
            assert await old.entries_after("c1", 0) == []
            await new.release_all()
    finally:
        await engine.close()


async def test_two_nodes_share_the_partitions_and_a_stopped_one_hands_them_over(
    valkey: Valkey,
) -> None:
    stop_a = trio.Event()

    async def run_a(*, task_status: trio.TaskStatus[ValkeyStore]) -> None:
        async with node(valkey, "a") as a:
            task_status.started(a)
            await stop_a.wait()

    async with trio.open_nursery() as nursery:
        a: ValkeyStore = await nursery.start(run_a)
        assert len(a.leases.tokens) == PARTITIONS
        async with node(valkey, "b") as b:
            # b starts with what is free (nothing); a keeps what it holds until it stops.
            assert set(a.leases.tokens).isdisjoint(b.leases.tokens)
            conversation = next(
                f"c{i}" for i in range(100) if partition_of(f"c{i}", PARTITIONS) in a.leases.tokens
            )
            with pytest.raises(StoreUnavailable, match="does not own"):
                await b.record(_state(conversation, 2), [_entry(conversation, 1, "hi")])
            await a.record(_state(conversation, 2), [_entry(conversation, 1, "hi")])
            assert len(await b.entries_after(conversation, 0)) == 1  # anyone reads
            stop_a.set()  # a graceful stop
            with trio.fail_after(5):
                while len(b.leases.tokens) < PARTITIONS:
                    await b.leases.changed()
            assert b.leases.takeovers == PARTITIONS
            await b.record(_state(conversation, 3), [_entry(conversation, 2, "on b")])
            assert [e.seq for e in await b.entries_after(conversation, 0)] == [1, 2]


@pytest.mark.parametrize("kind", ENGINES)
async def test_commits_are_refused_when_the_engine_cannot_make_them_durable(
    tmp_path: Path, kind: str
) -> None:
    with ExitStack() as stack:
        # An engine of its own: its AOF is turned off.
        valkey: Valkey = stack.enter_context(
            valkey_server(tmp_path / "valkey")
            if kind == ENGINES[0]
            else valkey_cluster(tmp_path / "valkey")
        )
        server = valkey
        if isinstance(valkey, ValkeyCluster):
            # One master only, not the one of partition 0's keys: every master is checked.
            home = valkey.shard_of(PartitionKeys(0).lease)
            server = next(s for s in valkey.servers if s != home)
        engine = await connect([server.address])
        await engine.command(["CONFIG", "SET", "appendonly", "no"])
        await engine.close()
        with pytest.raises(StoreUnavailable, match="durable"):
            async with node(valkey, "n1"):
                pass
        async with node(valkey, "n1", durability="none") as store:
            await store.record(_state("c1", 2), [_entry("c1", 1, "kept in memory only")])


def test_the_config_names_the_engine_and_the_node() -> None:
    config = from_mapping(
        {
            "store": {
                "kind": "valkey",
                "addresses": ["127.0.0.1:6390"],
                "node_id": "node-1",
                "partitions": 32,
                "lease_seconds": 3,
                "durability": "replica",
            }
        }
    )
    store = config.store
    assert (store.kind, store.addresses, store.node_id) == ("valkey", ("127.0.0.1:6390",), "node-1")
    assert (store.partitions, store.lease_seconds, store.durability) == (32, 3.0, "replica")
    with pytest.raises(ConfigError) as caught:
        from_mapping(
            {
                "store": {
                    "kind": "valkey",
                    "addresses": ["nowhere"],
                    "partitions": 0,
                    "lease_seconds": 0.01,
                }
            }
        )
    problems = "\n".join(caught.value.problems)
    for key in ("store.addresses", "store.node_id", "store.partitions", "store.lease_seconds"):
        assert key in problems


# -- one node, real clients -------------------------------------------------------------------


@asynccontextmanager
async def serving(valkey: Valkey, node_id: str) -> AsyncIterator[RunningServer]:
    data = {
        **node_settings(valkey.addresses, node_id, PARTITIONS),
        "bots": {"demo": {"adapter": "demo"}},
        "agents": {"alice": {"token": AGENT_TOKEN, "bots": ["demo"], "name": "Alice"}},
    }
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(
                from_mapping(data), handle_signals=False, task_status=task_status
            )
        )
        yield running
        running.stop()


async def test_a_session_on_one_node_then_resumed_after_its_restart(valkey: Valkey) -> None:
    async with serving(valkey, "n1") as server, connect_user(server.ws_url, bot_id="demo") as user:
        await user.say_text("hello")
        await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "bot")
        await user.click("LIVECHAT_SESSION_START")
        async with connect_agent(server.ws_url, AGENT_TOKEN) as agent:
            await agent.set_presence("online")
            transcript = await agent.wait_for(lambda f: f["type"] == "transcript")
            conversation = transcript["conversation_id"]
            await agent.say(conversation, "Alice here")
            said = await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "agent")
            assert said["content"]["text"] == "Alice here"
            await user.say_text("thanks")
            await agent.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "user")
        token, last_seq = user.resume_token, user.last_seq
    # Every entry acknowledged is in the engine, and the open session comes back.
    async with (
        serving(valkey, "n1") as server,
        connect_user(server.ws_url, bot_id="demo", resume_token=token, last_seq=0) as again,
    ):
        seen = await again.wait_for(lambda f: f["type"] == "entry" and f["seq"] == last_seq)
        assert seen["content"]["text"] == "thanks"
        state = await server.services.board.store.load(conversation)
        assert state is not None and state.session is not None
        assert state.session.agent_id == "alice"


async def test_a_node_whose_lease_was_taken_stops(valkey: Valkey) -> None:
    engine = await connect(valkey.addresses)
    try:
        leases = Leases(engine, "n1", PARTITIONS, 5.0)
        await leases.round()
        assert len(leases.tokens) == PARTITIONS
        lease = PartitionKeys(3).lease
        await engine.command(["DEL", lease], key=lease)  # it expired unrenewed
        taker = Leases(engine, "n2", PARTITIONS, 5.0)
        await taker.round()
        assert taker.token(3) is not None
        with pytest.RaisesGroup(pytest.RaisesExc(LeaseLost, match="partition 3")):
            await leases.round()
        assert leases.token(3) is None and leases.lost == 1
    finally:
        await engine.close()
