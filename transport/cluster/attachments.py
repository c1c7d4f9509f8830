"""Attachments in the engine, so every node serves every file (docs/cluster.md, "Attachments").

A file uploaded through one node is downloaded through any other: its bytes and description
are kept beside its conversation, under the conversation's partition tag, so one script keeps
a file within the conversation's bounds atomically, on a single server or on Valkey Cluster.
The bound on all files together is a counter of its own (another slot), reserved before the
file is kept and given back when it is refused or removed. A kept file is durable as the
commits are (``store.durability``) before its message is sent.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable

from transport.cluster.engine import Engine, EngineError
from transport.cluster.keys import PartitionKeys, partition_of
from transport.store.attachments import Attachment, NoRoom

#: Bytes of every attachment kept, for ``attachments.max_total_bytes``.
TOTAL = "sw:attachments:bytes"


class ValkeyAttachments:
    """The clustered mode's attachments, with the folder store's API
    (:class:`~transport.store.attachments.AttachmentKeeper`)."""

    def __init__(
        self, engine: Engine, partitions: int, durable: Callable[[str], Awaitable[None]]
    ) -> None:
        self.engine = engine
        self.partitions = partitions
        self.durable = durable

    def _keys(self, conversation_id: str, attachment_id: str) -> list[str]:
        tag = PartitionKeys(partition_of(conversation_id, self.partitions)).tag
        return [
            f"{tag}:att:{conversation_id}",
            f"{tag}:attb:{conversation_id}:{attachment_id}",
            f"{tag}:attn:{conversation_id}",
        ]

    async def keep(
        self,
        conversation_id: str,
        *,
        name: str,
        mime_type: str,
        data: bytes,
        sender: str,
        max_count: int,
        max_bytes: int,
        max_total: int | None = None,
    ) -> Attachment:
        """Keep one attachment under a new random id; :class:`NoRoom` past the bounds."""
        attachment = Attachment(
            secrets.token_urlsafe(18),
            conversation_id,
            name,
            mime_type,
            len(data),
            sender,
            time.time(),
        )
        if max_total is not None:
            total = int(await self.engine.command(["INCRBY", TOTAL, str(len(data))], key=TOTAL))
            if total > max_total:
                await self._give_back(len(data))
                raise NoRoom(conversation_id, everywhere=True)
        keys = self._keys(conversation_id, attachment.attachment_id)
        try:
            kept = await self.engine.run(
                self.engine.keep_attachment,
                keys,
                [
                    attachment.attachment_id,
                    json.dumps(attachment.to_json()),
                    data,
                    str(max_count),
                    str(max_bytes),
                ],
            )
            if not kept:
                raise NoRoom(conversation_id)
            await self.durable(keys[0])
        except BaseException:
            if max_total is not None:
                await self._give_back(len(data))
            raise
        return attachment

    async def _give_back(self, size: int) -> None:
        await self.engine.command(["DECRBY", TOTAL, str(size)], key=TOTAL)

    async def read(
        self, conversation_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes] | None:
        """The attachment and its bytes, or ``None`` when this conversation has no such one."""
        described, data_key, _ = self._keys(conversation_id, attachment_id)
        try:
            meta = await self.engine.command(["HGET", described, attachment_id], key=described)
            data = await self.engine.command(["GET", data_key], key=data_key)
        except EngineError:
            return None
        if meta is None or data is None:
            return None
        try:
            attachment = Attachment.from_json(json.loads(meta))
        except (ValueError, KeyError, TypeError):
            return None
        if attachment.conversation_id != conversation_id:
            return None
        return attachment, data if isinstance(data, bytes) else str(data).encode()

    async def remove(self, conversation_id: str, attachment_id: str) -> None:
        """Forget one attachment (its message was refused)."""
        size = await self.engine.run(
            self.engine.remove_attachment,
            self._keys(conversation_id, attachment_id),
            [attachment_id],
        )
        if size:
            await self._give_back(int(size))

    async def sweep(self, store: object) -> int:
        """Nothing to sweep: the clustered mode keeps its conversations (no retention yet)."""
        return 0

    def close(self) -> None:
        """The engine keeps the files; nothing to remove when a node stops."""
