"""Reading what the engine answers about streams and hashes, in either reply protocol
(RESP2 lists or RESP3 maps), and the loop that reads a stream only this node reads."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from transport.cluster.engine import EngineError, connect

log = logging.getLogger("switchover.cluster")

#: How long one blocking read waits before it is made again.
BLOCK_MS = 200


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(fields: Any) -> list[tuple[str, str]]:
    """A stream entry's fields or a hash: a map, ``[[k, v], ...]`` or ``[k, v, k, v]``."""
    if isinstance(fields, dict):
        return [(text(k), text(v)) for k, v in fields.items()]
    if fields and isinstance(fields[0], list):
        return [(text(k), text(v)) for k, v in fields]
    return [(text(fields[i]), text(fields[i + 1])) for i in range(0, len(fields), 2)]


def stream_items(found: Any) -> list[tuple[str, Any]]:
    """(id, fields) of one stream's entries, from XREAD's or XAUTOCLAIM's answer."""
    if isinstance(found, dict) and len(found) == 1 and isinstance(next(iter(found.values())), dict):
        found = next(iter(found.values()))
    if isinstance(found, dict):
        return [(text(k), v) for k, v in found.items()]
    return [(text(k), v) for k, v in found]


def streams(found: Any) -> list[tuple[str, list[tuple[str, Any]]]]:
    """(key, entries) of each stream of an XREADGROUP answer."""
    items = found.items() if isinstance(found, dict) else found
    return [(text(key), stream_items(entries)) for key, entries in items]


async def read_own_stream(
    addresses: Sequence[str], key: str, handle: Callable[[dict[str, str]], None], what: str
) -> None:
    """Hand each entry of ``key`` (a stream other nodes write and only this node reads) to
    ``handle``, from its oldest, and delete what was read, for as long as the task runs.

    From the oldest, not from ``$``: each blocking read takes ``$`` as "what arrives during
    this read", so an entry added between two reads would be lost. A failed read or delete
    is logged (``what`` says which stream) and made again: the node goes on."""
    engine = await connect(addresses, timeout_ms=BLOCK_MS * 10)
    last = "0-0"
    try:
        while True:
            try:
                found = await engine.command(
                    ["XREAD", "COUNT", "500", "BLOCK", str(BLOCK_MS), "STREAMS", key, last],
                    key=key,
                )
            except EngineError as exc:
                log.warning("cannot read %s: %s", what, exc)
                await trio.sleep(BLOCK_MS / 1000)
                continue
            if not found:
                continue
            ids = []
            for stream_id, fields in stream_items(found):
                last = stream_id
                ids.append(stream_id)
                handle(dict(pairs(fields)))
            try:
                await engine.command(["XDEL", key, *ids], key=key)
            except EngineError as exc:
                log.warning("cannot clear %s read: %s", what, exc)
    finally:
        with trio.CancelScope(shield=True):
            await engine.close()
