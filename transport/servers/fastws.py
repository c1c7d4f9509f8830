"""A lean WebSocket server for trio: the ``websockets`` sans-IO protocol on plain sockets.

It offers the part of trio-websocket's server interface that Switchover uses
(:func:`serve_websocket`, ``request.accept()``, ``get_message``, ``send_message``,
``aclose``, ``closed``, and trio-websocket's own :class:`ConnectionClosed` and
:class:`CloseReason`), so a listener written for trio-websocket runs on it by changing one
import. Why it exists: WebSocket framing and trio-websocket's plumbing cost more per message
than the router itself (bench/README.md, Steps, 2026-11-25). What it does instead:

* Parsing and framing use the ``websockets`` sans-IO protocol (with its C masking).
* No reader task and no channel between it and the handler: ``get_message`` reads the
  socket itself, and returns messages already parsed from one read without waiting, so a
  burst of frames costs one trip through the scheduler, not one per frame.
* ``send_message`` writes to the socket directly; only when the kernel buffer is full does
  it wait, so an uncontended send never yields to the scheduler.

It owns its sockets: stdlib sockets in non-blocking mode, read, written and accepted
directly, with trio's documented ``trio.lowlevel.wait_readable`` / ``wait_writable`` to wait
when the kernel would block, and ``notify_closing`` before closing one.

Writing and closing are one state machine, in the manner of h11: a connection is in one
:class:`ConnectionState`, and only :meth:`ConnectionMachine.apply` moves it, by a
:class:`ConnectionEvent`, as the :data:`TRANSITIONS` table allows (anything else raises
:class:`InvalidTransition`)::

    OPEN    --send started--> SENDING          --send finished--> OPEN
      |                         |
      close started             close started
      v                         v
    CLOSING --send started--> CLOSING_SENDING  --send finished--> CLOSING
      |                         |
      socket closed             socket closed
      v                         v
    CLOSED  <--send finished-- CLOSED_SENDING

That is, whether messages are still taken (open, closing, closed) times whether a task is
writing. One task writes at a time (the ``*SENDING`` states); another that wants to write
waits for it, then writes what is still queued. A write the kernel takes at once is over
before any other task can run, so it changes no state: only a write that must wait for room
in the kernel's buffer is a send in the machine's sense (``SEND_STARTED`` ...
``SEND_FINISHED``), and an uncontended send costs no more than the write itself.

The reader is left outside the machine: it is one task at a time by the caller's rule (as for
a trio stream), and its one flag only tells :meth:`WebSocketConnection.aclose` whether
someone else's read will take the peer's answer.

Closing is bounded: a peer that does not answer the close frame within
``disconnect_timeout`` (because it stopped reading and its buffers are full, say) has its TCP
connection aborted (RST), so its socket and buffers are freed rather than kept open forever.

What it does not do: TLS, client connections, compression, subprotocol negotiation beyond
echoing the chosen one. Pings from the peer are answered whenever the connection is read.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import socket as stdlib_socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import attrs
import trio
from trio_websocket import CloseReason, ConnectionClosed
from websockets.exceptions import InvalidState
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

__all__ = [
    "CLOSED",
    "CLOSED_SENDING",
    "CLOSE_STARTED",
    "CLOSING",
    "CLOSING_SENDING",
    "OPEN",
    "SENDING",
    "SEND_FINISHED",
    "SEND_STARTED",
    "SOCKET_CLOSED",
    "TRANSITIONS",
    "CloseReason",
    "ConnectionClosed",
    "ConnectionEvent",
    "ConnectionMachine",
    "ConnectionState",
    "InvalidTransition",
    "WebSocketConnection",
    "WebSocketRequest",
    "WebSocketServer",
    "serve_websocket",
]

log = logging.getLogger("switchover.fastws")

RECEIVE_BYTES = 64 * 1024
# A reader that keeps finding data ready yields to the scheduler at least this often, so a
# flooding client cannot starve everyone else on the loop.
READS_BETWEEN_YIELDS = 16
NO_STATUS = 1005
ABNORMAL = 1006
#: Connections waiting to be accepted, per listening socket.
BACKLOG = 1024
#: Accepting this many connections in a row yields to the scheduler once.
ACCEPTS_BETWEEN_YIELDS = 16
#: accept() errors that mean "out of resources for now": wait and try again.
_ACCEPT_RETRY = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: SO_LINGER on with a zero timeout: close() sends RST and frees the socket at once.
_ABORT = struct.pack("ii", 1, 0)


@attrs.frozen
class Endpoint:
    address: str
    port: int
    is_ssl: bool = False

    @property
    def url(self) -> str:
        return f"ws://{self.address}:{self.port}"


def _endpoint(sock: Any, remote: bool) -> Endpoint | None:
    try:
        name = sock.getpeername() if remote else sock.getsockname()
    except OSError:
        return None
    return Endpoint(str(name[0]), int(name[1]))


class ConnectionState(enum.Enum):
    """Where a connection's writing and closing stand."""

    #: Messages are taken; nobody is writing.
    OPEN = "open"
    #: Messages are taken; one task is writing, waiting for the kernel to take the rest.
    SENDING = "sending"
    #: No more messages (the closing handshake is under way); nobody is writing.
    CLOSING = "closing"
    #: No more messages; one task is writing, waiting for the kernel to take the rest (a
    #: close frame, or a message sent before).
    CLOSING_SENDING = "closing, sending"
    #: The socket is closed under a writer that has yet to wake and find it gone.
    CLOSED_SENDING = "closed, sending"
    #: The socket is closed and nobody writes. Nothing leaves this state.
    CLOSED = "closed"

    # Hashed by identity, as Party is: enum's own __hash__ is Python code, and the keys of
    # TRANSITIONS are looked up on every write that waits and every close.
    __hash__ = object.__hash__


class ConnectionEvent(enum.Enum):
    """What happens to a connection's writing and closing."""

    #: A write the kernel could not take at once: its task waits for room, and has the
    #: writer's turn meanwhile.
    SEND_STARTED = "send started"
    #: That task is done writing: all of it went, or it failed.
    SEND_FINISHED = "send finished"
    #: No more messages: :meth:`WebSocketConnection.aclose`, the peer's close frame, the end
    #: of the stream, a failed write or invalid UTF-8.
    CLOSE_STARTED = "close started"
    #: The socket is closed, gracefully or aborted.
    SOCKET_CLOSED = "socket closed"

    __hash__ = object.__hash__


# Each state and event by its own name, as h11 names its states: a module global is found
# in ~10 ns, an enum member on its class in ~100 ns (bench/README.md, 2026-12-03).
OPEN = ConnectionState.OPEN
SENDING = ConnectionState.SENDING
CLOSING = ConnectionState.CLOSING
CLOSING_SENDING = ConnectionState.CLOSING_SENDING
CLOSED_SENDING = ConnectionState.CLOSED_SENDING
CLOSED = ConnectionState.CLOSED
SEND_STARTED = ConnectionEvent.SEND_STARTED
SEND_FINISHED = ConnectionEvent.SEND_FINISHED
CLOSE_STARTED = ConnectionEvent.CLOSE_STARTED
SOCKET_CLOSED = ConnectionEvent.SOCKET_CLOSED

#: Every transition there is: (state, event) -> the next state. No other pair may happen.
TRANSITIONS: dict[tuple[ConnectionState, ConnectionEvent], ConnectionState] = {
    (OPEN, SEND_STARTED): SENDING,
    (OPEN, CLOSE_STARTED): CLOSING,
    (SENDING, SEND_FINISHED): OPEN,
    (SENDING, CLOSE_STARTED): CLOSING_SENDING,
    (CLOSING, SEND_STARTED): CLOSING_SENDING,
    (CLOSING, SOCKET_CLOSED): CLOSED,
    (CLOSING_SENDING, SEND_FINISHED): CLOSING,
    # The closing deadline passed while a write waited for the kernel (or the peer went
    # away): the socket is closed under the writer, which wakes to find it gone.
    (CLOSING_SENDING, SOCKET_CLOSED): CLOSED_SENDING,
    (CLOSED_SENDING, SEND_FINISHED): CLOSED,
}

#: The states in which messages are still taken.
_TAKING_MESSAGES = frozenset({OPEN, SENDING})
#: The states in which a task is writing: anyone else who wants to write waits for it.
_WRITER_AT_WORK = frozenset({SENDING, CLOSING_SENDING, CLOSED_SENDING})
#: The states in which the socket is closed.
_SOCKET_GONE = frozenset({CLOSED_SENDING, CLOSED})


class InvalidTransition(RuntimeError):
    """An event the connection's state does not allow: a bug in this module, never the
    peer's doing."""

    def __init__(self, state: ConnectionState, event: ConnectionEvent) -> None:
        super().__init__(f"{event.value!r} cannot happen in state {state.value!r}")
        self.state = state
        self.event = event


class ConnectionMachine:
    """A connection's writing and closing state; :meth:`apply` is the only way it changes."""

    __slots__ = ("state",)

    def __init__(self, state: ConnectionState = OPEN) -> None:
        self.state = state

    def apply(self, event: ConnectionEvent) -> ConnectionState:
        """Move to the state :data:`TRANSITIONS` gives for ``event``; raises
        :class:`InvalidTransition` when the table has none."""
        after = TRANSITIONS.get((self.state, event))
        if after is None:
            raise InvalidTransition(self.state, event)
        self.state = after
        return after

    def __repr__(self) -> str:
        return f"ConnectionMachine({self.state})"


class WebSocketConnection:
    """One accepted connection. Not safe for two tasks to call ``get_message`` at once
    (the same rule as a trio stream); sending from several tasks is fine."""

    def __init__(
        self,
        sock: stdlib_socket.socket,
        protocol: ServerProtocol,
        request: Request,
        *,
        disconnect_timeout: float,
    ) -> None:
        # A non-blocking socket: reads and writes that would not block are made directly on
        # it, and trio is asked only to wait when they would.
        self._sock = sock
        self._protocol = protocol
        # The opening request (headers and all) is needed only until the handshake is
        # answered: an idle connection would keep 4 KiB of it (bench/README.md, Idle users).
        self._request: Request | None = request
        self.path = request.path
        # Messages received and not yet taken: a list from ``_taken`` on (an empty deque
        # costs 760 bytes per connection; a list, 56).
        self._messages: list[str | bytes] = []
        self._taken = 0
        self._fragments: list[bytes] = []
        self._fragment_opcode: Opcode | None = None
        #: Why the connection closes, from the moment it stops taking messages.
        self._close_reason: CloseReason | None = None
        self._machine = ConnectionMachine()
        #: Set by a writer that had to wait for the kernel, for those who wait for it.
        self._writer_done: trio.Event | None = None
        self._backlog = b""
        # The reader (outside the state machine): whether a read is under way, and an event
        # for aclose to wait for its end.
        self._reading = False
        self._read_done: trio.Event | None = None
        self._reads_without_yield = 0
        self._disconnect_timeout = disconnect_timeout
        self.subprotocol: str | None = None
        self.remote = _endpoint(self._sock, remote=True)

    # --- what trio-websocket's WebSocketConnection offers ------------------------------

    @property
    def closed(self) -> CloseReason | None:
        return self._close_reason

    @property
    def state(self) -> ConnectionState:
        """Where writing and closing stand (see :data:`TRANSITIONS`)."""
        return self._machine.state

    @property
    def is_server(self) -> bool:
        return True

    @property
    def is_client(self) -> bool:
        return False

    @property
    def local(self) -> Endpoint | None:
        """This end's address (asked of the socket when needed: seldom, and never kept)."""
        return _endpoint(self._sock, remote=False)

    @property
    def handshake_headers(self) -> tuple[tuple[str, str], ...]:
        """The opening request's headers, until the handshake is answered (empty after)."""
        request = self._request
        return () if request is None else tuple(request.headers.raw_items())

    async def get_message(self) -> str | bytes:
        """The next whole message; raises :class:`ConnectionClosed` once the connection is
        closed and every message received before has been returned."""
        messages = self._messages
        while self._taken >= len(messages):
            if self._machine.state not in _TAKING_MESSAGES:
                raise ConnectionClosed(self._close_reason)
            await self._receive_more()
        message = messages[self._taken]
        self._taken += 1
        if self._taken == len(messages):
            messages.clear()
            self._taken = 0
        return message

    async def send_message(self, message: str | bytes) -> None:
        if self._machine.state not in _TAKING_MESSAGES:
            raise ConnectionClosed(self._close_reason)
        try:
            if isinstance(message, str):
                self._protocol.send_text(message.encode())
            else:
                self._protocol.send_binary(message)
        except InvalidState:
            raise ConnectionClosed(self._closing_reason()) from None
        await self._flush()

    def write_nowait(self) -> bool:
        """Hand what :meth:`queue_message` framed to the kernel without waiting: ``True``
        when all of it went (or the connection is gone), ``False`` when some is left for
        :meth:`flush`. It lets one task write many connections' frames with one system call
        each and no trip through the scheduler, waiting only for those whose socket is
        full."""
        if self._machine.state in _WRITER_AT_WORK or self._protocol.state is not State.OPEN:
            return not self.needs_flush
        data = self._backlog + b"".join(self._protocol.data_to_send())
        self._backlog = b""
        if not data:
            return True
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._write_failed()
            return True
        if sent < len(data):
            self._backlog = data[sent:]
            return False
        return True

    def queue_message(self, message: str) -> None:
        """Frame a text message without writing it: several queued messages then go out in
        one write with :meth:`flush`, one system call instead of one each."""
        if self._machine.state not in _TAKING_MESSAGES:
            raise ConnectionClosed(self._close_reason)
        try:
            self._protocol.send_text(message.encode())
        except InvalidState:
            raise ConnectionClosed(self._closing_reason()) from None

    @property
    def needs_flush(self) -> bool:
        """Something queued, or the rest of a non-waiting send, still waits to be written."""
        return bool(self._backlog) or bool(self._protocol.writes)

    async def flush(self) -> None:
        """Write whatever is waiting, including the rest of a non-waiting send."""
        await self._flush()

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping; the pong is absorbed when it arrives (no waiting for it)."""
        if self._machine.state not in _TAKING_MESSAGES:
            raise ConnectionClosed(self._close_reason)
        self._protocol.send_ping(payload or b"")
        await self._flush()

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        """Close with ``code``: send the close frame, give the peer ``disconnect_timeout``
        seconds to answer it, then close the socket (aborting the TCP connection if the
        peer never answered)."""
        if self._machine.state not in _TAKING_MESSAGES:
            self._close_socket()
            return
        self._start_closing(CloseReason(code, reason))
        with trio.move_on_after(self._disconnect_timeout):
            try:
                if self._protocol.state is State.OPEN:
                    self._protocol.send_close(code, reason or "")
                    await self._flush()
                while (
                    self._protocol.state is not State.CLOSED
                    and self._machine.state not in _SOCKET_GONE
                ):
                    if self._reading:
                        # Another task is reading: it will take the answer; wait for its read.
                        done = self._read_done = self._read_done or trio.Event()
                        await done.wait()
                    else:
                        await self._receive_more(closing=True)
            except (ConnectionClosed, trio.ClosedResourceError, OSError):
                pass
        self._close_socket()

    # --- reading -----------------------------------------------------------------------

    async def _receive_more(self, *, closing: bool = False) -> None:
        self._reading = True
        try:
            data = self._read_ready()
            if data is None:
                try:
                    await trio.lowlevel.wait_readable(self._sock)
                    data = self._read_ready()
                except trio.ClosedResourceError:
                    data = b""
                self._reads_without_yield = 0
                if data is None:
                    return
            else:
                self._reads_without_yield += 1
                if self._reads_without_yield >= READS_BETWEEN_YIELDS:
                    self._reads_without_yield = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._reading = False
            if self._read_done is not None:
                self._read_done.set()
                self._read_done = None
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._absorb(self._protocol.events_received())
        if self._protocol.writes:  # a pong or a close to answer; plain data needs nothing,
            await self._flush()  # so a reader never waits on a peer that stopped reading
        if not data or self._protocol.state is State.CLOSED:
            self._start_closing(self._closing_reason())
            if not closing:
                self._close_socket()

    def _read_ready(self) -> bytes | None:
        """Whatever the kernel holds, without waiting; ``b""`` at end of stream, ``None``
        when nothing is there yet."""
        if self._sock.fileno() < 0:
            return b""
        try:
            return self._sock.recv(RECEIVE_BYTES)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.EBADF):
                return b""
            raise

    def _absorb(self, events: Sequence[Request | Response | Frame]) -> None:
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if event.fin:
                    self._deliver(opcode, bytes(event.data))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [bytes(event.data)]
            elif opcode is Opcode.CONT and self._fragment_opcode is not None:
                self._fragments.append(bytes(event.data))
                if event.fin:
                    self._deliver(self._fragment_opcode, b"".join(self._fragments))
                    self._fragments = []
                    self._fragment_opcode = None
            elif opcode is Opcode.CLOSE:
                self._start_closing(self._closing_reason())

    def _deliver(self, opcode: Opcode, payload: bytes) -> None:
        if opcode is Opcode.BINARY:
            self._messages.append(payload)
            return
        try:
            self._messages.append(payload.decode())
        except UnicodeDecodeError:
            self._protocol.fail(1007, "invalid UTF-8")
            invalid = CloseReason(1007, "invalid UTF-8")
            self._start_closing(invalid)
            self._close_reason = invalid  # the reason, even when closing had begun

    def _start_closing(self, reason: CloseReason) -> None:
        """Take no more messages, for ``reason``; once closing, the first reason stays."""
        if self._close_reason is None:
            self._close_reason = reason
            self._machine.apply(CLOSE_STARTED)

    def _closing_reason(self) -> CloseReason:
        received: Close | None = self._protocol.close_rcvd
        if received is not None:
            return CloseReason(received.code, received.reason or None)
        sent: Close | None = self._protocol.close_sent
        if sent is not None:
            return CloseReason(sent.code, sent.reason or None)
        return CloseReason(ABNORMAL, None)

    # --- writing -----------------------------------------------------------------------

    async def _flush(self) -> None:
        """Write whatever the protocol has queued. One task writes at a time; a task that
        finds another writing waits for it, then writes what is still queued (its own
        frames may already have gone out with the other's)."""
        machine = self._machine
        while machine.state in _WRITER_AT_WORK:
            assert self._writer_done is not None
            await self._writer_done.wait()
        chunks = self._protocol.data_to_send()
        if not chunks and not self._backlog:
            return
        eof = bool(chunks) and chunks[-1] == b""
        data = self._backlog + b"".join(chunks)
        self._backlog = b""
        if machine.state is CLOSED:
            raise ConnectionClosed(self._close_reason)  # the socket is gone, and this with it
        # What the kernel takes at once is written before any other task can run, so only
        # a write that has to wait for room takes the writer's turn.
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise self._write_failed() from None
        if sent < len(data):
            await self._send_waiting(memoryview(data)[sent:])
        if eof:
            self._close_socket()

    async def _send_waiting(self, rest: memoryview) -> None:
        """Write what the kernel could not take at once, waiting for room: this task has
        the writer's turn (``SENDING``) until all of it is written or the write fails."""
        machine = self._machine
        machine.apply(SEND_STARTED)
        try:
            while rest:
                try:
                    sent = self._sock.send(rest)
                except BlockingIOError:
                    if self._writer_done is None:
                        self._writer_done = trio.Event()
                    try:
                        await trio.lowlevel.wait_writable(self._sock)
                    except trio.ClosedResourceError:
                        raise ConnectionClosed(self._closing_reason()) from None
                    continue
                except OSError:
                    raise self._write_failed() from None
                rest = rest[sent:]
        finally:
            machine.apply(SEND_FINISHED)
            if self._writer_done is not None:
                self._writer_done.set()
                self._writer_done = None

    def _write_failed(self) -> ConnectionClosed:
        """The socket refused a write (the peer is gone): what to raise."""
        self._start_closing(CloseReason(ABNORMAL, None))
        return ConnectionClosed(self._close_reason)

    def _close_socket(self) -> None:
        """Close the socket: gracefully once the closing handshake is done (or never began,
        as for a refused handshake), with an abort (RST) when it was cut short, so that a
        peer that stopped reading leaves nothing behind in the kernel either. Closing a
        closed connection again does nothing."""
        if self._machine.state in _SOCKET_GONE:
            return
        self._start_closing(self._closing_reason())
        protocol = self._protocol
        # Both close frames passed: the handshake is done, though the protocol still waits
        # for the end of the stream (it stays CLOSING until then).
        shaken = protocol.close_sent is not None and protocol.close_rcvd is not None
        state = protocol.state
        cut_short = state is State.OPEN or (state is State.CLOSING and not shaken)
        _notify_and_close(self._sock, abort=cut_short)
        self._machine.apply(SOCKET_CLOSED)


class WebSocketRequest:
    """The opening handshake, handed to the handler to accept or reject."""

    def __init__(self, connection: WebSocketConnection, response: Response) -> None:
        self._connection = connection
        self._response: Response | None = response
        self._answered = False

    @property
    def path(self) -> str:
        return self._connection.path

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (name.lower().encode(), value.encode())
            for name, value in self._connection.handshake_headers
        ]

    @property
    def proposed_subprotocols(self) -> tuple[str, ...]:
        request = self._connection._request
        values = [] if request is None else request.headers.get_all("Sec-WebSocket-Protocol")
        return tuple(p.strip() for value in values for p in value.split(",") if p.strip())

    @property
    def local(self) -> Endpoint | None:
        return self._connection.local

    @property
    def remote(self) -> Endpoint | None:
        return self._connection.remote

    async def accept(
        self,
        *,
        subprotocol: str | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> WebSocketConnection:
        response = self._response
        assert response is not None, "the handshake was answered already"
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
            self._connection.subprotocol = subprotocol
        for name, value in extra_headers or []:
            response.headers[name.decode()] = value.decode()
        self._answered = True
        connection = self._connection
        connection._protocol.send_response(response)
        # The request and response are not needed any more, and the connection may live for
        # hours; websockets' parser keeps the request object itself to the end, so its
        # headers are emptied.
        if connection._request is not None:
            connection._request.headers.clear()
        response.headers.clear()
        self._response = connection._request = None
        await self._connection._flush()
        return self._connection

    async def reject(
        self,
        status_code: int,
        *,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
    ) -> None:
        protocol = self._connection._protocol
        response = protocol.reject(status_code, (body or b"").decode(errors="replace"))
        for name, value in extra_headers or []:
            response.headers[name.decode()] = value.decode()
        self._answered = True
        protocol.send_response(response)
        await self._connection._flush()
        self._connection._close_socket()


Handler = Callable[[WebSocketRequest], Awaitable[None]]


def _notify_and_close(sock: stdlib_socket.socket, *, abort: bool = False) -> None:
    """Close ``sock``, telling trio first so that any task waiting on it wakes."""
    if sock.fileno() < 0:
        return
    if abort:
        with contextlib.suppress(OSError):
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_LINGER, _ABORT)
    trio.lowlevel.notify_closing(sock)
    sock.close()


async def _send_all(sock: stdlib_socket.socket, data: bytes) -> None:
    """Write ``data`` before a connection object exists (a refused handshake)."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)


@attrs.define
class WebSocketServer:
    """Accepts connections on its listening sockets and runs ``handler`` for each
    handshake."""

    handler: Handler
    listeners: Sequence[stdlib_socket.socket]
    handler_nursery: trio.Nursery | None = None
    max_message_size: int = 2**20
    connect_timeout: float = 60.0
    disconnect_timeout: float = 60.0

    @property
    def port(self) -> int:
        port: int = self.listeners[0].getsockname()[1]
        return port

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        try:
            async with trio.open_nursery() as nursery:
                handlers = self.handler_nursery or nursery
                for listener in self.listeners:
                    nursery.start_soon(self._accept_forever, listener, handlers)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            for listener in self.listeners:
                _notify_and_close(listener)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _accept_forever(self, listener: stdlib_socket.socket, handlers: trio.Nursery) -> None:
        accepted = 0
        while True:
            try:
                sock, _address = listener.accept()
            except BlockingIOError:
                accepted = 0
                await trio.lowlevel.wait_readable(listener)
                continue
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    raise
                log.warning("cannot accept a connection (%s); retrying shortly", exc)
                await trio.sleep(0.1)
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
            handlers.start_soon(self._handle, sock)
            accepted += 1
            if accepted >= ACCEPTS_BETWEEN_YIELDS:
                accepted = 0
                await trio.lowlevel.checkpoint()

    async def _handle(self, sock: stdlib_socket.socket) -> None:
        try:
            await self._serve_connection(sock)
        finally:
            _notify_and_close(sock, abort=True)  # a no-op unless something above left it open

    async def _serve_connection(self, sock: stdlib_socket.socket) -> None:
        protocol = ServerProtocol(max_size=self.max_message_size)
        request = None
        with trio.move_on_after(self.connect_timeout):
            request = await self._read_request(sock, protocol)
        if request is None:
            return
        connection = WebSocketConnection(
            sock, protocol, request, disconnect_timeout=self.disconnect_timeout
        )
        response = protocol.accept(request)
        if protocol.handshake_exc is not None or response.status_code != 101:
            # Not a valid upgrade: answer it before any handler runs, as wsproto does.
            protocol.send_response(response)
            try:
                with trio.move_on_after(self.disconnect_timeout):
                    await connection._flush()
            finally:
                connection._close_socket()
            return
        ws_request = WebSocketRequest(connection, response)
        del request, response  # held by ws_request until answered, not for the whole connection
        try:
            await self.handler(ws_request)
        finally:
            with trio.CancelScope(shield=True):
                if not ws_request._answered:
                    await ws_request.reject(500)
                else:
                    await connection.aclose()

    async def _read_request(
        self, sock: stdlib_socket.socket, protocol: ServerProtocol
    ) -> Request | None:
        while True:
            try:
                data = sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except OSError:
                return None
            if not data:
                return None
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Request):
                    return event
            chunks = protocol.data_to_send()
            if chunks:  # a malformed request: websockets has written a 400
                with contextlib.suppress(OSError):
                    await _send_all(sock, b"".join(chunks))
                return None


async def open_listeners(
    host: str | bytes | None, port: int, *, backlog: int = BACKLOG
) -> list[stdlib_socket.socket]:
    """Listening sockets (non-blocking) for every address ``host`` resolves to, all on the
    same port (port 0: one free port chosen for all). ``None`` or ``""``: every interface.
    Raises :class:`OSError` when an address cannot be bound (a busy port, say)."""
    if isinstance(host, bytes):
        host = host.decode()
    infos = await trio.socket.getaddrinfo(
        host or None,
        port,
        type=stdlib_socket.SOCK_STREAM,
        flags=stdlib_socket.AI_PASSIVE,
    )
    listeners: list[stdlib_socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            sock = stdlib_socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
            if family == stdlib_socket.AF_INET6:
                sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
            if port == 0 and len(listeners) > 1:
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    return listeners


async def serve_websocket(
    handler: Handler,
    host: str | bytes | None,
    port: int,
    ssl_context: Any,
    *,
    handler_nursery: trio.Nursery | None = None,
    message_queue_size: int = 1,
    max_message_size: int = 2**20,
    receive_buffer_size: int | None = 4096,
    connect_timeout: float = 60,
    disconnect_timeout: float = 60,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve WebSocket connections on ``host:port`` (port 0: any free port) until cancelled.

    Same signature as trio-websocket's ``serve_websocket``. ``message_queue_size`` and
    ``receive_buffer_size`` are accepted and ignored: there is no queue between the socket
    and the handler, and reads take whatever the kernel holds (up to 64 KiB).
    """
    if ssl_context is not None:
        raise ValueError("fastws does not do TLS; put a TLS proxy in front")
    listeners = await open_listeners(host, port)
    server = WebSocketServer(
        handler,
        listeners,
        handler_nursery=handler_nursery,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        disconnect_timeout=disconnect_timeout,
    )
    await server.run(task_status=task_status)
