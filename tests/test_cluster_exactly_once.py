"""Routed inputs are stored exactly once across a failover, on a real valkey-server: the
commit that stores an input routed through its partition's inbound stream also remembers
its id and acknowledges it (docs/cluster.md, "Exactly once for routed inputs")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.ports import StoreUnavailable
from transport.cluster import store as store_module
from transport.cluster.engine import Engine, connect
from transport.cluster.keys import PartitionKeys, partition_of
from transport.cluster.leases import Leases
from transport.cluster.routing import GROUP
from transport.cluster.store import ValkeyStore

from .support.valkey import ENGINES, ValkeyCluster, ValkeyServer, valkey_engine
from .test_cluster_store import PARTITIONS, SETTINGS, _entry, _state, node

Valkey = ValkeyServer | ValkeyCluster

KEYS = PartitionKeys(partition_of("c1", PARTITIONS))


@pytest.fixture(params=ENGINES)
def valkey(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Valkey]:
    """A single valkey-server, then a Valkey Cluster of three masters."""
    with valkey_engine(request, tmp_path / "valkey") as engine:
        yield engine


async def _route(engine: Engine, text: str) -> str:
    """An input from another node in the partition's inbound stream, read by its owner
    (pending until acknowledged): its stream id."""
    key = KEYS.inbox
    try:
        await engine.command(["XGROUP", "CREATE", key, GROUP, "0", "MKSTREAM"], key=key)
    except Exception as exc:
        assert "BUSYGROUP" in str(exc)
    stream_id = await engine.command(["XADD", key, "*", "c", "c1", "e", text], key=key)
    await engine.command(["XREADGROUP", "GROUP", GROUP, "owner", "STREAMS", key, ">"], key=key)
    return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)


async def _pending(engine: Engine) -> Any:
    return (await engine.command(["XPENDING", KEYS.inbox, GROUP], key=KEYS.inbox))[0]


async def test_a_routed_input_is_acknowledged_by_its_commit_and_never_stored_again(
    valkey: Valkey,
) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "old", lease_seconds=30.0) as old:
            input_id = await _route(engine, "hello")
            assert await _pending(engine) == 1
            await old.record(_state("c1", 2), [_entry("c1", 1, "hello")], [(input_id, 1)])
            # Stored, remembered and acknowledged in the one commit: nothing is left pending
            # for a node taking over to hand to an actor again.
            assert await _pending(engine) == 0
            assert await engine.command(["HGET", KEYS.inputs, input_id], key=KEYS.inputs) == b"1"
            # The owner dies before answering; another node takes the partition over.
            await engine.command(["DEL", KEYS.lease], key=KEYS.lease)
            new = Leases(engine, "new", PARTITIONS, 5.0)
            await new.round()
            assert new.token(KEYS.number) is not None
            successor = ValkeyStore(engine, new, settings=SETTINGS, durability="none")
            claimed = await engine.command(
                ["XAUTOCLAIM", KEYS.inbox, GROUP, "new", "0", "0-0"], key=KEYS.inbox
            )
            assert not claimed[1]
            # Even handed to an actor again (rebuilt from the engine: it does not remember
            # the client's message id), the input cannot be stored a second time.
            with pytest.raises(StoreUnavailable, match="DUPLICATE"):
                await successor.record(
                    _state("c1", 3), [_entry("c1", 2, "hello again")], [(input_id, 2)]
                )
            assert [e.seq for e in await old.entries_after("c1", 0)] == [1]
            # A new input is stored as usual by the new owner.
            second = await _route(engine, "second")
            await successor.record(_state("c1", 3), [_entry("c1", 2, "second")], [(second, 2)])
            assert [e.seq for e in await successor.entries_after("c1", 0)] == [1, 2]
            assert await _pending(engine) == 0
            await new.release_all()
    finally:
        await engine.close()


async def test_a_commit_refused_leaves_its_input_pending_for_the_next_owner(
    valkey: Valkey,
) -> None:
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "old", lease_seconds=30.0) as old:
            input_id = await _route(engine, "hello")
            await engine.command(["DEL", KEYS.lease], key=KEYS.lease)
            new = Leases(engine, "new", PARTITIONS, 5.0)
            await new.round()
            with pytest.raises(StoreUnavailable, match="FENCED"):
                await old.record(_state("c1", 2), [_entry("c1", 1, "hello")], [(input_id, 1)])
            # Not stored, not remembered, still pending: the next owner serves it.
            assert await _pending(engine) == 1
            assert await engine.command(["HGET", KEYS.inputs, input_id], key=KEYS.inputs) is None
            claimed = await engine.command(
                ["XAUTOCLAIM", KEYS.inbox, GROUP, "new", "0", "0-0"], key=KEYS.inbox
            )
            assert len(claimed[1]) == 1
            await new.release_all()
    finally:
        await engine.close()


async def test_the_memory_of_stored_inputs_keeps_the_newest_only(
    valkey: Valkey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "INPUT_MEMORY", 2)
    engine = await connect(valkey.addresses)
    try:
        async with node(valkey, "n1") as store:
            ids = []
            for seq in range(1, 4):
                ids.append(await _route(engine, f"m{seq}"))
                state = _state("c1", seq + 1)
                await store.record(state, [_entry("c1", seq, f"m{seq}")], [(ids[-1], seq)])
            remembered = await engine.command(["HKEYS", KEYS.inputs], key=KEYS.inputs)
            assert sorted(i.decode() for i in remembered) == sorted(ids[1:])
            assert await engine.command(["ZCARD", KEYS.inputs_order], key=KEYS.inputs_order) == 2
    finally:
        await engine.close()
