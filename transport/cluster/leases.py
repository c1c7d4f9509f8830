"""Partition leases: which partitions this node owns, and the fencing token of each.

A node takes a free partition with ``acquire.lua`` (``SET NX PX`` of "node:epoch", the
epoch from the partition's own ``INCR`` counter: the fencing token) and renews what it
holds every third of the lease. Every commit checks the token inside the engine, so a node
that paused past its lease can never write after another took the partition over. Nodes
announce themselves in a sorted set expiring with the lease, and each takes at most its fair
share (the partitions divided by the live nodes, rounded up) of the free ones.
"""

from __future__ import annotations

import logging
import math
import zlib

import trio

from transport.cluster.clock import EngineClock
from transport.cluster.engine import Engine, EngineError
from transport.cluster.keys import NODES, PartitionKeys

log = logging.getLogger("switchover.cluster")


class LeaseLost(Exception):
    """This node lost a partition it held (it paused or was cut off for longer than the
    lease, and another node may have taken over): the node stops, and its clients reconnect
    to a node that owns their conversations. Its commits were refused from then on anyway."""


class Leases:
    """The leases one node holds; :meth:`run` keeps them for as long as it runs."""

    def __init__(
        self,
        engine: Engine,
        node_id: str,
        partitions: int,
        lease_seconds: float,
        clock: EngineClock | None = None,
    ) -> None:
        self.engine = engine
        #: The engine's clock, read at every round (the lease connection is never busy with
        #: commits, so its round trips are short): the core's clock on this node.
        self.clock = clock if clock is not None else EngineClock()
        self.node_id = node_id
        self.partitions = partitions
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self.tokens: dict[int, str] = {}
        self.live_nodes = 1
        self.peers: list[str] = [node_id]
        #: Counters for /metrics and /healthz.
        self.renewals = 0
        self.takeovers = 0
        self.lost = 0
        self._started = False
        self._stopped = False
        self._changed = trio.Event()

    def token(self, partition: int) -> str | None:
        """This node's fencing token for ``partition``, or ``None`` when it does not own it."""
        return self.tokens.get(partition)

    async def changed(self) -> None:
        """Wait until this node gains or loses a partition."""
        await self._changed.wait()

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @property
    def share(self) -> int:
        return math.ceil(self.partitions / max(1, self.live_nodes))

    async def round(self) -> None:
        """Announce this node, renew what it holds, then take free partitions up to its share."""
        if self._stopped:
            return
        now = await self.engine_now_ms()
        await self.engine.command(
            ["ZADD", NODES, str(now + self.lease_ms), self.node_id], key=NODES
        )
        await self.engine.command(["ZREMRANGEBYSCORE", NODES, "-inf", str(now)], key=NODES)
        members = await self.engine.command(["ZRANGE", NODES, "0", "-1"], key=NODES)
        self.peers = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        self.live_nodes = max(1, len(self.peers))
        async with trio.open_nursery() as nursery:
            for partition, token in list(self.tokens.items()):
                nursery.start_soon(self._renew, partition, token)
        if len(self.tokens) >= self.share:
            return
        # The partitions this node is the preferred owner of first (rendezvous hashing over
        # the live nodes), so nodes starting together split them instead of racing.
        for partition in sorted(range(self.partitions), key=self._preference):
            if len(self.tokens) >= self.share:
                break
            if partition not in self.tokens:
                await self._acquire(partition)

    async def engine_now_ms(self) -> int:
        """The engine's clock (milliseconds), and a sample of it for this node's clock."""
        sent = trio.current_time()
        now = await self.engine.now_ms(NODES)
        self.clock.sample(now / 1000, sent, trio.current_time())
        return now

    def _preference(self, partition: int) -> tuple[bool, int]:
        """Sorts first the partitions whose preferred owner is this node."""

        def score(node: str) -> int:
            return zlib.crc32(f"{node}/{partition}".encode())

        preferred = max(self.peers, key=score) if self.peers else self.node_id
        return (preferred != self.node_id, partition)

    async def _renew(self, partition: int, token: str) -> None:
        keys = PartitionKeys(partition)
        if await self.engine.run(self.engine.renew, [keys.lease], [token, str(self.lease_ms)]):
            self.renewals += 1
            return
        if self.tokens.get(partition) == token:
            del self.tokens[partition]
            self.lost += 1
            self._touch()
            log.error("lost the lease of partition %d", partition, extra={"partition": partition})
            raise LeaseLost(f"node {self.node_id} lost the lease of partition {partition}")

    async def _acquire(self, partition: int) -> None:
        keys = PartitionKeys(partition)
        taken, value = await self.engine.run(
            self.engine.acquire, [keys.lease, keys.epoch], [self.node_id, str(self.lease_ms)]
        )
        if not taken:
            return
        token = value.decode() if isinstance(value, bytes) else str(value)
        self.tokens[partition] = token
        self._touch()
        if self._started:
            self.takeovers += 1
            log.info(
                "took partition %d over (%s)", partition, token, extra={"partition": partition}
            )

    async def start(self, *, settle: bool = True) -> None:
        """Take this node's share before serving: partitions whose owner died unannounced
        become free when their lease expires, so this waits at most about one lease more.
        ``settle``: first announce this node and wait one lease, so nodes started together
        see each other and split the partitions (a node already owning them keeps them)."""
        if settle:
            with trio.move_on_after(self.lease_ms / 1000):
                while True:
                    now = await self.engine_now_ms()
                    await self.engine.command(
                        ["ZADD", NODES, str(now + self.lease_ms), self.node_id], key=NODES
                    )
                    await trio.sleep(self.lease_ms / 1000 / 3)
        with trio.move_on_after(self.lease_ms / 1000 * 1.5):
            while True:
                await self.round()
                if len(self.tokens) >= self.share:
                    break
                await trio.sleep(self.lease_ms / 1000 / 6)
        self._started = True
        log.info(
            "node %s owns %d of %d partitions",
            self.node_id,
            len(self.tokens),
            self.partitions,
            extra={"node_id": self.node_id, "owned": len(self.tokens)},
        )

    async def run(self) -> None:
        """Renew and take over until cancelled; an engine error is logged and retried."""
        while True:
            await trio.sleep(self.lease_ms / 1000 / 3)
            try:
                await self.round()
            except EngineError as exc:
                log.warning("lease round failed: %s", exc)

    async def release_all(self) -> None:
        """Give every lease up at once (a graceful stop): another node takes them over now."""
        self._stopped = True
        tokens, self.tokens = self.tokens, {}
        for partition, token in tokens.items():
            await self.engine.run(self.engine.release, [PartitionKeys(partition).lease], [token])
        await self.engine.command(["ZREM", NODES, self.node_id], key=NODES)
