"""Where attachments live: one folder per conversation under a root (``<data_dir>/attachments``
with the SQLite store, a temporary folder removed at exit with the memory store).

Each attachment is two files named by its random id: the bytes, and ``<id>.json`` with what
was said of it (conversation, name, type, size, who sent it, when). The description is
written last, each file to a temporary name then renamed, so an attachment is either whole or
absent after a crash. A folder's name is the conversation id when that is a safe file name
(letters, digits, ``-``, ``_``), else a hash of it: no id can reach outside the root.
Retention removes the folders of conversations the store no longer has (:meth:`sweep`).

File work runs in worker threads; one lock per store makes "is there room" and "keep it"
one step, so two uploads at once cannot both pass a conversation's bounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import trio

from actors import Store

log = logging.getLogger("switchover.store")

#: The folder under the data directory.
FOLDER: Final = "attachments"
_SAFE: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_META: Final = ".json"


@attrs.frozen
class Attachment:
    """One stored attachment, as described in its ``.json``."""

    attachment_id: str
    conversation_id: str
    name: str
    mime_type: str
    size: int
    sender: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        return cls(
            str(data["attachment_id"]),
            str(data["conversation_id"]),
            str(data["name"]),
            str(data["mime_type"]),
            int(data["size"]),
            str(data["sender"]),
            float(data["at"]),
        )


class NoRoom(Exception):
    """The conversation already holds as many attachments, or as many bytes, as allowed;
    or (``everywhere``) all the attachments kept together would go past their bound."""

    def __init__(self, conversation_id: str, *, everywhere: bool = False) -> None:
        super().__init__(conversation_id)
        self.everywhere = everywhere


class AttachmentKeeper(Protocol):
    """Where the HTTP routes keep attachments: :class:`AttachmentStore` (a folder), or the
    clustered mode's engine (``transport.cluster.attachments``)."""

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
    ) -> Attachment: ...

    async def read(
        self, conversation_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes] | None: ...

    async def remove(self, conversation_id: str, attachment_id: str) -> None: ...


def folder_name(conversation_id: str) -> str:
    """The folder of a conversation's attachments under the root."""
    if _SAFE.match(conversation_id):
        return conversation_id
    return "h-" + hashlib.sha256(conversation_id.encode("utf-8", "surrogatepass")).hexdigest()


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("xb") as file:
            file.write(data)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class AttachmentStore:
    """The attachments under ``root`` (created when first needed). A ``temporary`` root is
    removed by :meth:`close`."""

    def __init__(self, root: Path, *, temporary: bool = False) -> None:
        self.root = root
        self.temporary = temporary
        self._lock = trio.Lock()
        # Bytes kept in all, counted on first need, then kept up to date (None: count again).
        self._total: int | None = None

    def close(self) -> None:
        """Remove a temporary root and everything in it (a memory store's attachments)."""
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)

    def _folder(self, conversation_id: str) -> Path:
        return self.root / folder_name(conversation_id)

    # -- run in worker threads ------------------------------------------------------------

    def _described(self, folder: Path) -> list[Attachment]:
        found = []
        if folder.is_dir():
            for path in folder.glob(f"*{_META}"):
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    found.append(Attachment.from_json(json.loads(path.read_text("utf-8"))))
        return found

    def _keep(self, attachment: Attachment, data: bytes, max_count: int, max_bytes: int) -> None:
        folder = self._folder(attachment.conversation_id)
        kept = self._described(folder)
        if len(kept) >= max_count or sum(a.size for a in kept) + len(data) > max_bytes:
            raise NoRoom(attachment.conversation_id)
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / attachment.attachment_id, data)
        _write(
            folder / f"{attachment.attachment_id}{_META}",
            json.dumps(attachment.to_json()).encode("utf-8"),
        )

    def _read(self, conversation_id: str, attachment_id: str) -> tuple[Attachment, bytes] | None:
        folder = self._folder(conversation_id)
        try:
            meta = json.loads((folder / f"{attachment_id}{_META}").read_text("utf-8"))
            attachment = Attachment.from_json(meta)
            data = (folder / attachment_id).read_bytes()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if attachment.conversation_id != conversation_id:
            return None
        return attachment, data

    def _remove(self, conversation_id: str, attachment_id: str) -> int:
        """Delete one attachment; the bytes it took."""
        folder = self._folder(conversation_id)
        data = folder / attachment_id
        size = data.stat().st_size if data.exists() else 0
        (folder / f"{attachment_id}{_META}").unlink(missing_ok=True)
        data.unlink(missing_ok=True)
        return size

    def _total_bytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(a.size for folder in self.root.iterdir() for a in self._described(folder))

    def _conversations(self) -> list[tuple[Path, str | None]]:
        """Every folder, with the conversation its attachments name (``None``: none left)."""
        if not self.root.is_dir():
            return []
        found: list[tuple[Path, str | None]] = []
        for folder in self.root.iterdir():
            if folder.is_dir():
                described = self._described(folder)
                found.append((folder, described[0].conversation_id if described else None))
        return found

    # -- the API ---------------------------------------------------------------------------

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
        """Store one attachment under a new random id. Raises :class:`NoRoom` when the
        conversation would go past ``max_count`` files or ``max_bytes`` in all, or every
        conversation's together past ``max_total`` bytes."""
        attachment = Attachment(
            secrets.token_urlsafe(18),
            conversation_id,
            name,
            mime_type,
            len(data),
            sender,
            time.time(),
        )
        async with self._lock:
            if max_total is not None:
                if self._total is None:
                    self._total = await trio.to_thread.run_sync(self._total_bytes)
                if self._total + len(data) > max_total:
                    raise NoRoom(conversation_id, everywhere=True)
            await trio.to_thread.run_sync(self._keep, attachment, data, max_count, max_bytes)
            if self._total is not None:
                self._total += len(data)
        return attachment

    async def read(
        self, conversation_id: str, attachment_id: str
    ) -> tuple[Attachment, bytes] | None:
        """The attachment and its bytes, or ``None`` when this conversation has no such one."""
        return await trio.to_thread.run_sync(self._read, conversation_id, attachment_id)

    async def remove(self, conversation_id: str, attachment_id: str) -> None:
        """Forget one attachment (its message was refused)."""
        async with self._lock:
            size = await trio.to_thread.run_sync(self._remove, conversation_id, attachment_id)
            if self._total is not None:
                self._total -= size

    async def sweep(self, store: Store) -> int:
        """Remove the folders of conversations ``store`` no longer has (retention pruned
        them), and empty folders. Returns how many folders went."""
        removed = 0
        async with self._lock:
            for folder, conversation_id in await trio.to_thread.run_sync(self._conversations):
                if conversation_id is not None and await store.load(conversation_id) is not None:
                    continue
                await trio.to_thread.run_sync(partial(shutil.rmtree, folder, ignore_errors=True))
                removed += 1
                self._total = None  # counted again when next needed
        if removed:
            log.info("retention: deleted the attachments of %d conversations", removed)
        return removed


async def sweep_attachments(data_dir: Path, store: Store) -> int:
    """Remove the attachments of the conversations ``store`` no longer has (``switchover
    prune``, with the server stopped)."""
    return await AttachmentStore(data_dir / FOLDER).sweep(store)


__all__ = [
    "FOLDER",
    "Attachment",
    "AttachmentKeeper",
    "AttachmentStore",
    "NoRoom",
    "folder_name",
    "sweep_attachments",
]
