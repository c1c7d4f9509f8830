"""The WebSocket listener: users, agents and connected bots speak docs/protocol.md here.

This file owns what travels: streams, buffers, the writer and flusher tasks, the hello
timeout, the rate limit, closing, :func:`serve_websockets` and :meth:`Hub.close_all`. What the
frames mean (the hello by role, dispatch to the core, acks and errors) is a
:class:`transport.protocol.peer.Peer`, which each :class:`Connection` wires to its own buffer with a
``send`` and a ``close`` callable: the protocol can be read, and changed, without the I/O.

Each connection is one :class:`Connection`: a reader loop that hands frames to its peer,
which passes them to the core without waiting (answers come back through callbacks), and a
writer task draining a bounded buffer of ready-made frames (started on first need, so an idle
connection costs one task). The peer is the :class:`actors.Sink` the core delivers to, and
its ``send`` only appends here: it never blocks, whoever calls it. A client that lets more
than ``limits.max_buffered`` frames pile up is closed with 4408 and resumes by sequence
number; it never slows its conversation or anyone else.

Nothing here creates a task per message, and the hot path (a user's or an agent's message)
parses its JSON once and skips the schema validator (see :mod:`transport.protocol.frames`).

Two listeners carry the same protocol, chosen with ``[listeners] websocket`` in the config:

* ``"fast"`` (the default), :mod:`transport.servers.fastws`: frames are read and written on the
  socket directly; one :class:`Flusher` task writes what every :class:`FastConnection` got
  during a pass of the scheduler, one system call per connection, so a connection's writer
  task only runs for a backlog (bench/README.md, Steps, 2026-11-25, step 5).
* ``"trio-websocket"``: the trio-websocket library, with :class:`Connection`'s writer task
  sending every frame.

A message a client sends with an ``id`` is not echoed back to that connection: its ``ack``
carries the entry's ``seq``. The client's other connections get the entry as usual.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Final, Protocol

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from transport.config import WS_LISTENERS
from transport.protocol import frames as wire
from transport.protocol.credentials import AddressGuard
from transport.protocol.limits import Limits
from transport.protocol.peer import BAD_HELLO, GOING_AWAY, INTERNAL_ERROR, TOO_SLOW, Peer
from transport.protocol.services import Services
from transport.protocol.tokens import ResumeTokens
from transport.servers import fastws

log = logging.getLogger("switchover.ws")

#: The listener implementations ``[listeners] websocket`` may name; the first is the default.
LISTENERS: Final = WS_LISTENERS

#: Close code for a connection whose own frame cannot be encoded (a server fault).

#: Seconds a closing connection has to flush and say goodbye before it is cut.
CLOSE_GRACE: Final = 5.0


def hard_frame_ceiling(limits: Limits) -> int:
    """Beyond this size the listener itself closes with 1009; below it, oversize frames get
    an error and the connection stays open."""
    return max(4 * limits.max_frame_bytes, 1 << 20)


def _address(ws: object) -> str:
    """The client's IP address (both listeners' connections have ``remote``)."""
    remote = getattr(ws, "remote", None)
    return str(getattr(remote, "address", remote or ""))


def _close_reason(text: str) -> str:
    """Close reasons must fit in 123 bytes of UTF-8 (and be UTF-8: "replace" keeps text that
    is not valid Unicode from failing the close)."""
    return text.encode("utf-8", "replace")[:123].decode("utf-8", "ignore")


class WebSocket(Protocol):
    """What a connection needs of a listener's WebSocket (trio-websocket's or fastws's)."""

    async def get_message(self) -> str | bytes: ...

    async def send_message(self, message: str | bytes) -> None: ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...


class Handshake(Protocol):
    async def accept(self) -> Any: ...


class Hub:
    """Every open connection of one listener, so that shutdown can close them all."""

    def __init__(
        self, services: Services, *, listener: str = LISTENERS[0], close_grace: float = CLOSE_GRACE
    ) -> None:
        if listener not in LISTENERS:
            raise ValueError(f"unknown WebSocket listener {listener!r}; known: {LISTENERS}")
        self.services = services
        limits = services.limits
        self.tokens = ResumeTokens(services.secret, max_age=limits.resume_token_max_age)
        self.guard = AddressGuard(
            auth_failures=limits.auth_failures,
            auth_window=limits.auth_window,
            conversations_per_minute=limits.new_conversations_per_minute,
            conversations_burst=limits.new_conversations_burst,
            clock=trio.current_time,
        )
        self.connections: set[Connection] = set()
        self.stopping = False
        self.close_grace = close_grace
        fast = listener == "fast"
        self.flusher = Flusher() if fast else None
        self.connection_class: type[Connection] = FastConnection if fast else Connection
        self._empty = trio.Event()
        self._empty.set()

    async def handle(self, request: Handshake) -> None:
        """The listener's handler: one call per connection."""
        try:
            ws = await request.accept()
        except ConnectionClosed:
            return
        connection = self.connection_class(self, ws)
        self.connections.add(connection)
        self._empty = trio.Event() if len(self.connections) == 1 else self._empty
        if self.stopping:  # arrived while the listener was being shut down
            connection.close(GOING_AWAY, "the server is shutting down")
        try:
            await connection.run()
        except Exception:
            # One connection's failure is logged and ends that connection only.
            log.exception("a %s connection failed", connection.role or "new")
        finally:
            self.connections.discard(connection)
            connection.leave()
            if not self.connections:
                self._empty.set()

    async def close_all(self, code: int = GOING_AWAY, *, timeout: float = CLOSE_GRACE) -> None:
        """Close every connection with ``code`` after flushing what each already has queued;
        return when all are gone or ``timeout`` has passed."""
        self.stopping = True
        for connection in list(self.connections):
            connection.close(code, "the server is shutting down", flush=True)
        with trio.move_on_after(timeout):
            await self._empty.wait()


class Connection:
    """One client's stream: its buffer, its reader and writer, and the :class:`Peer` that
    decides what its frames mean (``peer`` is what the core and the bot registry hold)."""

    def __init__(self, hub: Hub, ws: WebSocket) -> None:
        limits = hub.services.limits
        self.hub = hub
        self.ws = ws
        self.limits = limits
        # Frames queued for the writer (a list: an empty deque costs 760 bytes per idle
        # connection, a list 56); the writer takes them all at once.
        self._buffer: list[str] = []
        self._dropped = False  # closed without a flush: what the writer holds is dropped
        self._max_buffered = limits.max_buffered
        # The writer task starts on first need: an idle connection, or one whose frames the
        # flusher writes, never has one. "Waiting" means no writer is at work.
        self._ready = trio.Event()
        self._writer_waiting = True
        self._writer_started = False
        self._nursery: trio.Nursery | None = None
        self._drain_waiter: trio.Event | None = None
        self._closing = False
        self._close_code: int | None = None
        self._close_reason = ""
        self._reader_scope = trio.CancelScope()
        self._writer_scope = trio.CancelScope()
        self._tokens = float(limits.burst)
        self._refilled = trio.current_time()
        self.peer = Peer(
            hub.services,
            hub.tokens,
            send=self._push,
            close=self.close,
            drained=self._drained,
            address=_address(ws),
            guard=hub.guard,
        )

    @property
    def role(self) -> str:
        """``"user"``, ``"agent"`` or ``"bot"`` after the hello; empty before."""
        return self.peer.role

    # -- outbound: never blocks -------------------------------------------------------------

    def _push(self, text: str) -> None:
        """Queue a ready-made frame (the peer's ``send``)."""
        buffer = self._buffer
        if len(buffer) >= self._max_buffered:
            log.info("closing a %s connection that fell %d frames behind", self.role, len(buffer))
            self.close(
                TOO_SLOW,
                f"too slow: more than {self._max_buffered} frames waiting; resume with last_seq",
            )
            return
        buffer.append(text)
        if self._writer_waiting:
            self._wake_writer()

    def _wake_writer(self) -> None:
        """Have the writer task send what is buffered, starting it if it never ran."""
        self._writer_waiting = False
        if self._writer_started:
            self._ready.set()
        elif self._nursery is not None:
            self._writer_started = True
            self._nursery.start_soon(self._write_loop)
        # else: run() starts it as soon as the connection runs

    def close(self, code: int | None, reason: str = "", *, flush: bool = False) -> None:
        """Stop reading, and have the writer send a close frame with ``code`` (``None``: the
        peer is gone, send nothing). ``flush`` sends what is queued first; otherwise it is
        dropped. The writer gets :data:`CLOSE_GRACE` seconds before it is cut."""
        if self._closing:
            return
        self._closing = self.peer.closing = True
        self._close_code = code
        self._close_reason = _close_reason(reason)
        if not flush:
            self._buffer.clear()
            self._dropped = True
        self._reader_scope.cancel()
        self._writer_scope.deadline = trio.current_time() + self.hub.close_grace
        if self._writer_started or code is not None or self._buffer:
            self._wake_writer()
        if self._drain_waiter is not None:
            self._drain_waiter.set()

    def _unencodable(self) -> None:
        """A frame for this client cannot be written as UTF-8: it alone is closed (1011)."""
        log.error("closing a %s connection: a frame for it cannot be encoded", self.role or "new")
        self.close(INTERNAL_ERROR, "internal_error: a frame could not be encoded")

    async def _write_loop(self) -> None:
        with self._writer_scope:
            try:
                while True:
                    try:
                        await self._send_queued()
                    except UnicodeEncodeError:
                        self._unencodable()
                    if self._closing:
                        break
                    self._writer_idle()
                    self._ready = trio.Event()
                    self._writer_waiting = True
                    await self._ready.wait()
                if self._close_code is not None:
                    await self.ws.aclose(self._close_code, self._close_reason)
            except ConnectionClosed:
                self.close(None)

    async def _send_queued(self) -> None:
        """Send everything in the buffer (the writer task's work)."""
        send = self.ws.send_message
        while self._buffer:
            frames, self._buffer = self._buffer, []
            for frame in frames:
                if self._dropped:
                    return
                await send(frame)

    def _writer_idle(self) -> None:
        """The writer sent everything and is about to wait: wake a paced replay."""
        if self._drain_waiter is not None:
            self._drain_waiter.set()
            self._drain_waiter = None

    async def _drained(self) -> None:
        """Wait until the writer has sent everything queued (or the connection closes)."""
        if not self._buffer or self._closing:
            return
        waiter = self._drain_waiter = trio.Event()
        await waiter.wait()

    # -- the connection's life --------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if not self._writer_waiting:  # something was queued before the connection ran
                self._writer_started = True
                nursery.start_soon(self._write_loop)
            reader = self._reader_scope
            # Only the hello's arrival is timed, by the reader's own scope (one cancel scope
            # less per connection): a long replay after it is paced by the client.
            reader.deadline = trio.current_time() + self.limits.hello_timeout
            with reader:
                if await self._hello():
                    await self._read_loop()
            if reader.cancelled_caught and not self._closing:
                self.close(BAD_HELLO, f"no hello within {self.limits.hello_timeout:g} s")
            self.close(None)

    def leave(self) -> None:
        """Drop what is queued and have the peer undo what its hello did."""
        self._closing = self._dropped = True
        self._buffer.clear()
        self.peer.leave()

    async def _hello(self) -> bool:
        """Read the hello (its arrival is timed by :meth:`run`) and have the peer carry it
        out."""
        try:
            raw = await self.ws.get_message()
        except ConnectionClosed:
            return False
        self._reader_scope.deadline = math.inf
        return await self.peer.hello(raw)

    # -- inbound ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self.ws.get_message
        received = self.peer.received
        rate = self.limits.rate
        burst = float(self.limits.burst)
        now = trio.current_time
        while True:
            try:
                raw = await receive()
            except ConnectionClosed:
                return
            # The token bucket, inline: it runs for every frame, good or bad.
            moment = now()
            tokens = min(burst, self._tokens + (moment - self._refilled) * rate)
            self._refilled = moment
            if tokens < 1.0:
                self._tokens = tokens
                self._push(
                    wire.error_frame(
                        "rate_limited",
                        f"More than {rate:g} frames per second; this one was dropped.",
                        retry_after=(1.0 - tokens) / rate,
                    )
                )
                continue
            self._tokens = tokens - 1.0
            await received(raw)


class Flusher:
    """Writes the frames delivered to fast connections, once per pass of the scheduler.

    A delivery only appends to its connection's buffer and marks the connection here; this
    one task then writes every marked connection with one system call each, without waiting.
    So a connection that gets many frames in one pass (an agent holding many chats, say)
    sends them together, and no connection's writer task is woken for a frame the socket has
    room for: the writer task runs only when the kernel would block.
    """

    def __init__(self) -> None:
        self._marked: list[FastConnection] = []
        self._wake = trio.Event()

    def mark(self, connection: FastConnection) -> None:
        if not self._marked:
            self._wake.set()
        self._marked.append(connection)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            marked, self._marked = self._marked, []
            for connection in marked:
                connection._write_marked()


class FastConnection(Connection):
    """A connection on :mod:`transport.servers.fastws`, written by the listener's :class:`Flusher`
    while its socket has room, and by its own writer task only when it is full."""

    def __init__(self, hub: Hub, ws: WebSocket) -> None:
        assert isinstance(ws, fastws.WebSocketConnection) and hub.flusher is not None
        super().__init__(hub, ws)
        self.fast = ws
        self._flusher = hub.flusher
        self._marked = False

    def _push(self, text: str) -> None:
        buffer = self._buffer
        if len(buffer) >= self._max_buffered or not self._writer_waiting:
            super()._push(text)  # falls behind, or the writer task is at work: it takes it
            return
        buffer.append(text)
        if not self._marked:
            self._marked = True
            self._flusher.mark(self)

    def _write_marked(self) -> None:
        """The flusher's turn: frame what is buffered and hand it to the kernel; wake the
        writer task only for what the kernel could not take."""
        self._marked = False
        if not self._writer_waiting or self._closing:
            return  # the writer task was woken meanwhile and sends it
        fast = self.fast
        buffer, self._buffer = self._buffer, []
        try:
            for frame in buffer:
                fast.queue_message(frame)
        except ConnectionClosed:
            self.close(None)
            return
        except UnicodeEncodeError:
            # Encoded here, per connection: only this one is affected, never the flusher.
            self._unencodable()
            return
        if fast.write_nowait():
            self._writer_idle()
        else:
            self._wake_writer()

    async def _send_queued(self) -> None:
        fast = self.fast
        buffer, self._buffer = self._buffer, []
        for frame in buffer:
            fast.queue_message(frame)
        if fast.needs_flush:
            await fast.flush()


async def serve_websockets(
    services: Services,
    host: str,
    port: int,
    *,
    listener: str = LISTENERS[0],
    shutdown_timeout: float = CLOSE_GRACE,
    close_grace: float = CLOSE_GRACE,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the WebSocket protocol on ``host:port`` until cancelled.

    ``listener`` is one of :data:`LISTENERS`. Reports the bound port through ``task_status``
    (bind port 0 to get a free one). When cancelled, it stops accepting, then closes every
    connection with 1001 after flushing what each has queued, waiting at most
    ``shutdown_timeout`` seconds. A connection being closed for any reason gets
    ``close_grace`` seconds to flush and say goodbye; after that it is cut (on the fast
    listener, the TCP connection is aborted).
    """
    hub = Hub(services, listener=listener, close_grace=close_grace)
    limits = services.limits
    serve_websocket: Any = (
        fastws.serve_websocket if listener == "fast" else trio_websocket.serve_websocket
    )
    async with trio.open_nursery() as nursery:
        # Connections run in a shielded nursery of their own: cancelling the listener must
        # not cut them mid-frame; they are closed politely below, then cancelled.
        handlers: trio.Nursery = await nursery.start(_shielded_nursery)
        if hub.flusher is not None:
            handlers.start_soon(hub.flusher.run)
        try:
            server = await nursery.start(
                partial(
                    serve_websocket,
                    hub.handle,
                    host,
                    port,
                    None,
                    handler_nursery=handlers,
                    max_message_size=hard_frame_ceiling(limits),
                    connect_timeout=limits.hello_timeout,
                    disconnect_timeout=close_grace,
                )
            )
        except BaseException:
            # The listener never started (a busy port, say): the shielded nursery would
            # otherwise keep this one open forever.
            handlers.cancel_scope.cancel()
            raise
        task_status.started(server.port)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await hub.close_all(GOING_AWAY, timeout=shutdown_timeout)
                handlers.cancel_scope.cancel()


async def _shielded_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


__all__ = [
    "GOING_AWAY",
    "LISTENERS",
    "Connection",
    "FastConnection",
    "Flusher",
    "Hub",
    "serve_websockets",
]
