"""Where a conversation lives: its partition, and the keys of that partition.

Every key of one partition carries the partition's hash tag (``{swp17}``), so each commit
script touches one slot and the same layout runs on a single server and on Valkey Cluster.
"""

from __future__ import annotations

import zlib

import attrs

#: The set of nodes seen alive (node id -> expiry, engine milliseconds): fair shares.
NODES = "sw:nodes"
#: Agents' last presence (agent id -> "presence at"), for operators: not partitioned.
PRESENCE = "sw:presence"


def partition_of(conversation_id: str, partitions: int) -> int:
    """A stable partition for a conversation id: the same on every node and every run."""
    return zlib.crc32(conversation_id.encode("utf-8", "surrogatepass")) % partitions


@attrs.frozen
class PartitionKeys:
    """The keys of partition ``number``."""

    number: int

    @property
    def tag(self) -> str:
        return f"{{swp{self.number}}}"

    @property
    def lease(self) -> str:
        return f"{self.tag}:lease"

    @property
    def epoch(self) -> str:
        return f"{self.tag}:epoch"

    @property
    def open(self) -> str:
        return f"{self.tag}:open"

    @property
    def deadlines(self) -> str:
        return f"{self.tag}:deadlines"

    @property
    def owed(self) -> str:
        return f"{self.tag}:owed"

    @property
    def inbox(self) -> str:
        """The inputs other nodes route to this partition's owner (a stream)."""
        return f"{self.tag}:in"

    @property
    def bell(self) -> str:
        """A sharded channel (on a Valkey Cluster): rung after inputs are added to the
        inbound stream, so its owner reads them without a blocking read per slot."""
        return f"{self.tag}:bell"

    @property
    def inputs(self) -> str:
        """The routed inputs recently stored: stream id -> the seq each was answered."""
        return f"{self.tag}:inputs"

    @property
    def inputs_order(self) -> str:
        """The same ids scored by arrival (engine milliseconds), to keep the newest only."""
        return f"{self.tag}:inputs:at"

    def conversation(self, conversation_id: str) -> str:
        return f"{self.tag}:c:{conversation_id}"

    def log(self, conversation_id: str) -> str:
        return f"{self.tag}:log:{conversation_id}"


# -- the desk: one owner for the whole cluster (transport/cluster/desk.py) ------------------

#: ``"node:epoch"``, with a TTL: which node runs the desk, and its fencing token.
DESK_LEASE = "{swdesk}:lease"
#: The desk's last epoch (``INCR`` at each acquisition).
DESK_EPOCH = "{swdesk}:epoch"
#: Requests for the desk from every node (a stream read by the desk's owner).
DESK_INBOX = "{swdesk}:in"
#: The desk owner's figures for the other nodes' /healthz and /metrics: "queue agents".
DESK_FIGURES = "{swdesk}:figures"


def desk_outbox(node_id: str) -> str:
    """Deliveries to the agents connected to ``node_id`` (a stream that node reads)."""
    return f"sw:desk:{node_id}"
