"""The connection to Valkey (or Redis >= 7.2) through valkey-glide, and the Lua scripts.

glide runs under trio through anyio and multiplexes one connection per client: every
command of a node shares it, and concurrent commits pipeline on it. With more than one
address the engine is taken to be a Valkey Cluster (glide's cluster client follows the
slots); every script touches one partition's keys, so one slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

from glide import (
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

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Any:
        return await self.client.invoke_script(script, keys=list(keys), args=list(args))

    async def command(self, args: Sequence[str], *, key: str | None = None) -> Any:
        """A raw command; on a cluster, sent to the primary of ``key``'s slot."""
        if self.clustered and key is not None:
            client = cast(GlideClusterClient, self.client)
            return await client.custom_command(
                list(args), route=SlotKeyRoute(SlotType.PRIMARY, key)
            )
        return await self.client.custom_command(list(args))

    async def pipeline(self, commands: Sequence[Sequence[str]]) -> list[Any]:
        """Several commands in one round trip, not atomic: each answer, or the error it got
        (an exception object), in order."""
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


async def connect(addresses: Sequence[str], *, timeout_ms: int = 2000) -> Engine:
    """A client for ``addresses`` ("host:port"); a cluster client when there are several."""
    nodes = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        nodes.append(NodeAddress(host.strip("[]"), int(port)))
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
