"""Deadlines in the engine, on a real valkey-server: each open session's deadline is counted
by the engine's clock from the input's arrival, and an expiry is refused before it, or while
an input that arrived before it still waits in the partition's inbound stream (docs/cluster.md,
"Deadlines and failover")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import SESSION_EXPIRED, SESSION_START, Content, ConversationState, Entry, Party
from actors.model.state import Session
from actors.ports import StoreUnavailable
from transport.client import connect_user
from transport.cluster.engine import Engine, connect
from transport.cluster.keys import PartitionKeys, partition_of
from transport.cluster.routing import GROUP
from transport.cluster.store import ValkeyStore

from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine
from .test_cluster_store import PARTITIONS, _entry, node
from .test_settings_api import ADMIN_TOKEN, api, serving

Valkey = ValkeyServer | ValkeyCluster

TIMEOUT = 600.0  # the session timeout of tests/test_cluster_store.py's settings


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


def _open(conversation_id: str, next_seq: int, left: float) -> ConversationState:
    """An open session whose idle deadline is ``left`` seconds away (by this clock)."""
    active = time.time() - TIMEOUT + left
    session = Session("s1", active, active, None)
    return ConversationState(conversation_id, "demo", "u1", {}, next_seq, session, 1)


def _expiry(conversation_id: str, seq: int) -> tuple[ConversationState, list[Entry]]:
    """The commit that ends the session by expiry: its notice to the bot."""
    state = ConversationState(conversation_id, "demo", "u1", {}, seq + 1, None, 1)
    entry = Entry(
        conversation_id,
        seq,
        time.time(),
        Party.SYSTEM,
        Content.payload(SESSION_EXPIRED),
        frozenset({Party.BOT}),
    )
    return state, [entry]


async def _deadline(engine: Engine, conversation_id: str) -> float | None:
    key = PartitionKeys(partition_of(conversation_id, PARTITIONS)).deadlines
    score = await engine.command(["ZSCORE", key, conversation_id], key=key)
    return None if score is None else float(score)


async def _inbox(engine: Engine, conversation_id: str) -> str:
    key = PartitionKeys(partition_of(conversation_id, PARTITIONS)).inbox
    try:
        await engine.command(["XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM"], key=key)
    except Exception as exc:
        assert "BUSYGROUP" in str(exc)
    return key


async def _expire(store: ValkeyStore, conversation_id: str, seq: int) -> None:
    await store.record(*_expiry(conversation_id, seq))


async def test_an_expiry_before_the_engines_deadline_is_refused(valkey: Valkey) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "n1") as store:
            await store.record(_open("c1", 2, 30.0), [_entry("c1", 1, "hi")])
            now = (await engine.now_ms()) / 1000
            due = await _deadline(engine, "c1")
            assert due is not None and 29.0 < due - now <= 30.5
            # An owner whose clock runs ahead (or whose alarm fired early) cannot expire it.
            with pytest.raises(StoreUnavailable, match="EARLY"):
                await _expire(store, "c1", 2)
            assert [e.seq for e in await store.entries_after("c1", 0)] == [1]
            assert [s.conversation_id for s in await store.open_sessions()] == ["c1"]
    finally:
        await engine.close()


async def test_an_expiry_waits_for_the_inputs_that_arrived_before_its_deadline(
    valkey: Valkey,
) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "n1") as store:
            key = await _inbox(engine, "c1")
            await store.record(_open("c1", 2, -10.0), [_entry("c1", 1, "hi")])
            due = await _deadline(engine, "c1")
            assert due is not None and due < (await engine.now_ms()) / 1000
            # A user's message that arrived (on another node) a second before the deadline,
            # not read by the owner yet: the session may not expire under it.
            arrived = f"{int(due * 1000) - 1000}-0"
            await engine.command(["XADD", key, arrived, "c", "c1", "e", "{}"], key=key)
            with pytest.raises(StoreUnavailable, match="WAITING"):
                await _expire(store, "c1", 2)
            # Read but not answered yet (pending): still not.
            await engine.command(["XREADGROUP", "GROUP", GROUP, "n1", "STREAMS", key, ">"], key=key)
            with pytest.raises(StoreUnavailable, match="WAITING"):
                await _expire(store, "c1", 2)
            # Its commit keeps the session alive: the deadline moves, counted from its arrival.
            await store.record(
                _open("c1", 3, 30.0), [_entry("c1", 2, "still here")], [(arrived, 2)]
            )
            moved = await _deadline(engine, "c1")
            assert moved is not None and abs(moved - (int(due * 1000) - 1000) / 1000 - 30.0) < 0.5
            with pytest.raises(StoreUnavailable, match="EARLY"):
                await _expire(store, "c1", 3)
            assert [e.seq for e in await store.entries_after("c1", 0)] == [1, 2]
    finally:
        await engine.close()


async def test_an_expiry_past_its_deadline_with_nothing_waiting_ends_the_session_once(
    valkey: Valkey,
) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "n1") as store:
            key = await _inbox(engine, "c1")
            await store.record(_open("c1", 2, -10.0), [_entry("c1", 1, "hi")])
            # An input that arrived after the deadline does not hold the expiry back.
            await engine.command(["XADD", key, "*", "c", "c1", "e", "{}"], key=key)
            await _expire(store, "c1", 2)
            assert await _deadline(engine, "c1") is None
            assert await store.open_sessions() == []
            ended = await store.entries_after("c1", 1)
            assert [e.content for e in ended] == [Content.payload(SESSION_EXPIRED)]
            with pytest.raises(StoreUnavailable, match="SEQ"):  # never a second ending
                await _expire(store, "c1", 2)
    finally:
        await engine.close()


async def test_a_changed_session_timeout_reaches_the_engines_deadlines(valkey: Valkey) -> None:
    config = {
        "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
        "store": {
            "kind": "valkey",
            "addresses": valkey.addresses,
            "node_id": "n1",
            "partitions": PARTITIONS,
            "lease_seconds": 1.0,
        },
        "bots": {"demo": {"adapter": "demo", "settings": {"session_timeout": TIMEOUT}}},
        "admins": {"root": {"name": "Root", "token": ADMIN_TOKEN}},
    }
    engine = await connect(valkey.addresses)
    try:
        async with serving(config) as node, connect_user(node.ws_url, bot_id="demo") as user:
            await user.click(SESSION_START)
            await user.wait_for(lambda f: f["content"].get("code") == "session_started")
            conversation = user.conversation_id
            async with api(node) as client:
                changed = await client.patch(
                    "/api/bots/demo/settings", json={"session_timeout": 30}
                )
                assert changed.status_code == 200
            await user.say_text("still here")  # committed under the new timeout
            due = await _deadline(engine, conversation)
            assert due is not None
            assert due - (await engine.now_ms()) / 1000 == pytest.approx(30, abs=2)
    finally:
        await engine.close()
