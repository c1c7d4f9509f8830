"""The connection to Valkey (or Redis >= 7.2) through valkey-glide, and the Lua scripts.

glide runs under trio through anyio and multiplexes one connection per client: every
command of a node shares it, and concurrent commits pipeline on it. With more than one
address the engine is taken to be a Valkey Cluster (glide's cluster client follows the
slots, and keeps one connection per master); every script touches one partition's keys, so
one slot, and every other command names one key, or is routed by one (``WAITAOF``: to the
master that took the write, over the connection that made it).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

from glide import (
    AllPrimaries,
    Batch,
    ClusterBatch,
    GlideClient,
    GlideClientConfiguration,
    GlideClusterClient,
    GlideClusterClientConfiguration,
    NodeAddress,
    Script,
    SlotKeyRoute,
    SlotType,
)
from glide import GlideError as EngineError

__all__ = ["Engine", "EngineError", "connect"]


def _script(name: str) -> Script:
    source = resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
    return Script(source)  # type: ignore[no-untyped-call]


class Engine:
    """One client and the scripts, with the few commands Switchover uses."""

    def __init__(self, client: GlideClient | GlideClusterClient) -> None:
        self.client = client
        self.clustered = isinstance(client, GlideClusterClient)
        self.acquire = _script("acquire")
        self.renew = _script("renew")
        self.release = _script("release")
        self.commit = _script("commit")
        self.keep_attachment = _script("keep_attachment")
        self.remove_attachment = _script("remove_attachment")

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        return await self.client.invoke_script(script, keys=list(keys), args=list(args))

    async def command(self, args: Sequence[str], *, key: str | None = None) -> Any:
        """A raw command; on a cluster, sent to the primary of ``key``'s slot."""
        if self.clustered and key is not None:
            client = cast(GlideClusterClient, self.client)
            return await client.custom_command(
                list(args), route=SlotKeyRoute(SlotType.PRIMARY, key)
            )
        return await self.client.custom_command(list(args))

    async def every_primary(self, args: Sequence[str]) -> list[Any]:
        """A raw command on every master (one answer on a single server): a check that must
        hold on every shard."""
        if self.clustered:
            client = cast(GlideClusterClient, self.client)
            answers = await client.custom_command(list(args), route=AllPrimaries())
            return list(answers.values()) if isinstance(answers, dict) else [answers]
        return [await self.client.custom_command(list(args))]

    async def pipeline(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        """Several commands in one round trip, not atomic: each answer, or the error it got
        (an exception object), in order. On a cluster each command goes to the master of its
        key's slot; the commands of one master keep their order."""
        batch: Batch | ClusterBatch = (
            ClusterBatch(is_atomic=False) if self.clustered else Batch(is_atomic=False)
        )
        for args in commands:
            batch.custom_command(list(args))
        if self.clustered:
            cluster = cast(GlideClusterClient, self.client)
            answers = await cluster.exec(cast(ClusterBatch, batch), raise_on_error=False)
        else:
            single = cast(GlideClient, self.client)
            answers = await single.exec(cast(Batch, batch), raise_on_error=False)
        return list(answers or [])

    async def now_ms(self, key: str | None = None) -> int:
        """The engine's clock, in milliseconds: leases and liveness use it, not ours."""
        seconds, micros = await self.command(["TIME"], key=key)
        return int(seconds) * 1000 + int(micros) // 1000

    async def close(self) -> None:
        await self.client.close()


def _nodes(addresses: Sequence[str]) -> list[NodeAddress]:
    nodes = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        nodes.append(NodeAddress(host.strip("[]"), int(port)))
    return nodes


async def connect(addresses: Sequence[str], *, timeout_ms: int = 2000) -> Engine:
    """A client for ``addresses`` ("host:port"); a cluster client when there are several."""
    nodes = _nodes(addresses)
    client: GlideClient | GlideClusterClient
    if len(nodes) > 1:
        client = await GlideClusterClient.create(
            GlideClusterClientConfiguration(nodes, request_timeout=timeout_ms)
        )
    else:
        client = await GlideClient.create(
            GlideClientConfiguration(nodes, request_timeout=timeout_ms)
        )
    return Engine(client)


async def subscriber(addresses: Sequence[str], channels: set[str]) -> Engine:
    """A client of its own subscribed to ``channels`` (``PUBLISH``: on a cluster, heard from
    any master); a cluster client may add sharded channels later (``SSUBSCRIBE``)."""
    nodes = _nodes(addresses)
    client: GlideClient | GlideClusterClient
    if len(nodes) > 1:
        cluster = GlideClusterClientConfiguration
        subscriptions = cluster.PubSubSubscriptions(
            channels_and_patterns={cluster.PubSubChannelModes.Exact: set(channels)},
            callback=None,
            context=None,
        )
        client = await GlideClusterClient.create(
            cluster(nodes, pubsub_subscriptions=subscriptions if channels else None)
        )
    else:
        single = GlideClientConfiguration
        client = await GlideClient.create(
            single(
                nodes,
                pubsub_subscriptions=single.PubSubSubscriptions(
                    channels_and_patterns={single.PubSubChannelModes.Exact: set(channels)},
                    callback=None,
                    context=None,
                ),
            )
        )
    return Engine(client)
