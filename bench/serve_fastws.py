"""``switchover serve`` with its WebSocket listener on :mod:`transport.fastws`.

The listener in transport/ws_server.py is written against trio-websocket's interface;
fastws offers the same interface, so this launcher swaps the one function the listener
calls and then runs the normal command line. It lets the benchmarks measure what the
framing layer is worth before the listener is switched for good::

    .venv/bin/python bench/serve_fastws.py serve --config my.toml
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Entry, Party
from actors.ports import Delivery
from transport import cli, fastws, ws_server

setattr(ws_server, "serve_websocket", fastws.serve_websocket)  # noqa: B010 (a deliberate swap)


class WriteThroughConnection(ws_server.Connection):
    """A delivery with nothing queued before it is written on the spot when the socket has
    room, instead of waking the connection's writer task (one scheduler trip per frame);
    when the writer does run, everything queued goes out in one write."""

    def _push(self, text: str) -> None:
        ws = self.ws
        idle = self._writer_waiting and not self._buffer and not self._closing
        if idle and ws.send_message_nowait(text):  # type: ignore[attr-defined]
            if ws.needs_flush:  # type: ignore[attr-defined]
                self._writer_waiting = False
                self._ready.set()
            return
        super()._push(text)

    async def _write_loop(self) -> None:
        """The listener's writer, plus writing the rest of a partly written delivery."""
        ws = self.ws
        buffer = self._buffer
        with self._writer_scope:
            try:
                while True:
                    if ws.needs_flush:  # type: ignore[attr-defined]
                        await ws.flush()  # type: ignore[attr-defined]
                    if buffer:
                        while buffer:
                            ws.queue_message(buffer.popleft())  # type: ignore[attr-defined]
                        await ws.flush()  # type: ignore[attr-defined]
                    if self._closing:
                        break
                    self._ready = trio.Event()
                    self._writer_waiting = True
                    await self._ready.wait()
                if self._close_code is not None:
                    await ws.aclose(self._close_code, self._close_reason)
            except fastws.ConnectionClosed:
                self.close(None)


class NoOwnEchoConnection(WriteThroughConnection):
    """An experiment, not the protocol: a message is not echoed back to the connection that
    sent it (its ack would carry the seq instead). Measures what that echo costs."""

    def deliver(self, item: Delivery) -> None:
        if isinstance(item, Entry) and (
            (self.role == "user" and item.sender is Party.USER)
            or (self.role == "agent" and item.sender is Party.AGENT)
        ):
            return
        super().deliver(item)


if "--write-through" in sys.argv:
    sys.argv.remove("--write-through")
    ws_server.Connection = WriteThroughConnection  # type: ignore[misc]
if "--no-own-echo" in sys.argv:
    sys.argv.remove("--no-own-echo")
    ws_server.Connection = NoOwnEchoConnection  # type: ignore[misc]

if __name__ == "__main__":
    sys.exit(cli.main())
