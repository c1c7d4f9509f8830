"""Attachments: the files a user and an agent send each other during a livechat session.

Sans I/O: the ``[attachments]`` limits, the check of an upload (its size, and its type read
from its first bytes rather than taken on the sender's word), the cleaned file name, and the
message content that carries an attachment (docs/protocol.md, "Attachments"). Storing the
bytes is :mod:`transport.store.attachments`; the HTTP endpoints are
:mod:`transport.servers.http.attachments`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import attrs

from actors.model.content import Content

#: The content types of a message that carries an attachment: ``image`` for the pictures the
#: pages show inline, ``file`` for anything else (the CSML names for the same things).
IMAGE: Final = "image"
FILE: Final = "file"

#: Types shown inline in the pages (and served without ``Content-Disposition: attachment``):
#: raster pictures a browser draws and cannot run script in.
INLINE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

DEFAULT_TYPES: Final = (
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
)
MIB: Final = 1024 * 1024
MAX_NAME_LENGTH: Final = 200
_ID: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_MIME: Final = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
#: What the HTTP listener answers at, for a conversation and an attachment.
UPLOAD_PATH: Final = "/v1/conversations/{conversation_id}/attachments"
DOWNLOAD_PATH: Final = "/v1/conversations/{conversation_id}/attachments/{attachment_id}"


def well_formed_type(value: str) -> bool:
    """A lowercase ``type/subtype`` with no parameters."""
    return _MIME.match(value) is not None


@attrs.frozen
class AttachmentLimits:
    """``[attachments]``: ``max_bytes`` per file; ``allowed_types``, the MIME types taken
    (images are recognised by their first bytes, PDF too, text must be UTF-8);
    ``max_per_conversation`` files and ``max_conversation_bytes`` in all per conversation,
    so one conversation cannot fill the disk; ``max_total_bytes`` for every conversation's
    together, so many cannot either."""

    max_bytes: int = 5 * MIB
    allowed_types: tuple[str, ...] = DEFAULT_TYPES
    max_per_conversation: int = 50
    max_conversation_bytes: int = 50 * MIB
    max_total_bytes: int = 1024 * MIB


@attrs.frozen
class Refused:
    """Why an upload is refused: the HTTP status, a stable ``code`` and words for a person."""

    status: int
    code: str
    message: str


def sniff(data: bytes) -> str | None:
    """The type the first bytes say, for the kinds whose bytes say it: the inline images
    and PDF. ``None`` for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _plain_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_upload(declared: str | None, data: bytes, limits: AttachmentLimits) -> str | Refused:
    """The type an upload is kept as, or why it is refused. The bytes decide: a file whose
    first bytes are a picture's or a PDF's is that, whatever it was declared as; one declared
    as a picture or PDF that does not start like one is refused; text must be UTF-8."""
    if len(data) > limits.max_bytes:
        return too_large(limits)
    if not data:
        return Refused(400, "bad_request", "The file is empty.")
    declared = (declared or "").split(";", 1)[0].strip().lower() or None
    found = sniff(data)
    if (
        found is None
        and declared is not None
        and (declared in INLINE_TYPES or declared.endswith("/pdf"))
    ):
        return Refused(
            415, "unsupported_type", f"The file is declared as {declared} but is not one."
        )
    kept = found or declared or "application/octet-stream"
    if kept not in limits.allowed_types:
        allowed = ", ".join(limits.allowed_types)
        return Refused(
            415, "unsupported_type", f"Files of type {kept} are not accepted (accepted: {allowed})."
        )
    if kept.startswith("text/") and not _plain_text(data):
        return Refused(415, "unsupported_type", f"The file is declared as {kept} but is not text.")
    return kept


def too_large(limits: AttachmentLimits) -> Refused:
    return Refused(
        413,
        "too_large",
        f"Files are limited to {_size_words(limits.max_bytes)} ({limits.max_bytes} bytes).",
    )


def _size_words(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size} bytes"


def clean_name(raw: str | None) -> str:
    """A file name safe to show and to offer for download: the last part of a path, without
    control or format characters, at most :data:`MAX_NAME_LENGTH` characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().strip(".")
    return name[:MAX_NAME_LENGTH] or "attachment"


def well_formed_id(value: str) -> bool:
    """An attachment id as Switchover makes them (URL-safe, 16 to 64 characters)."""
    return _ID.match(value) is not None


def content_for(
    conversation_id: str, attachment_id: str, name: str, mime_type: str, size: int
) -> Content:
    """The message that carries an attachment: ``image`` when the pages show it inline,
    ``file`` otherwise. ``url`` is the download address on the HTTP listener (relative: the
    pages resolve it against the server they talk to)."""
    url = DOWNLOAD_PATH.format(conversation_id=conversation_id, attachment_id=attachment_id)
    return Content(
        IMAGE if mime_type in INLINE_TYPES else FILE,
        {
            "url": url,
            "attachment_id": attachment_id,
            "name": name,
            "mime_type": mime_type,
            "size": size,
        },
    )


__all__ = [
    "DEFAULT_TYPES",
    "DOWNLOAD_PATH",
    "FILE",
    "IMAGE",
    "INLINE_TYPES",
    "UPLOAD_PATH",
    "AttachmentLimits",
    "Refused",
    "check_upload",
    "clean_name",
    "content_for",
    "sniff",
    "well_formed_id",
    "well_formed_type",
]
