"""The fast listener's writing and closing state machine: the table itself, then what it
guards, over real sockets on 127.0.0.1.

The table tests walk every (state, event) pair, so a new state or event without a decision
fails here. The socket tests make the server's writes wait for the kernel on purpose (the
client's receive buffer is tiny and it reads only when told), and use trio's test tools
(``wait_all_tasks_blocked``, ``MockClock``) rather than sleeps to know where each task stands.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from transport.servers import fastws
from transport.servers.fastws import (
    TRANSITIONS,
    CloseReason,
    ConnectionClosed,
    ConnectionEvent,
    ConnectionMachine,
    ConnectionState,
    InvalidTransition,
)

S = ConnectionState
E = ConnectionEvent
ALL_PAIRS = [(state, event) for state in S for event in E]

# -- the table --------------------------------------------------------------------------------


def test_the_table_names_only_known_states_and_events() -> None:
    for (state, event), after in TRANSITIONS.items():
        assert isinstance(state, S) and isinstance(event, E) and isinstance(after, S)
    assert {event for _, event in TRANSITIONS} == set(E), "an event that never happens"


def test_each_state_and_event_is_also_a_module_name_for_itself() -> None:
    for member in [*S, *E]:
        assert getattr(fastws, member.name) is member
        assert member.name in fastws.__all__


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_each_pair_moves_as_the_table_says_or_raises(state: S, event: E) -> None:
    machine = ConnectionMachine(state)
    after = TRANSITIONS.get((state, event))
    if after is None:
        with pytest.raises(InvalidTransition) as caught:
            machine.apply(event)
        assert (caught.value.state, caught.value.event) == (state, event)
        assert event.value in str(caught.value) and state.value in str(caught.value)
        assert machine.state is state, "a refused event changes nothing"
    else:
        assert machine.apply(event) is after
        assert machine.state is after


def reachable_from(start: S) -> set[S]:
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for (source, _), after in TRANSITIONS.items():
            if source is state and after not in seen:
                seen.add(after)
                frontier.append(after)
    return seen


def test_every_state_is_reachable_from_open() -> None:
    assert ConnectionMachine().state is S.OPEN
    assert reachable_from(S.OPEN) == set(S)


def test_closed_is_terminal_and_every_state_can_get_there() -> None:
    assert not [pair for pair in TRANSITIONS if pair[0] is S.CLOSED]
    for state in S:
        assert S.CLOSED in reachable_from(state), f"{state} can never close"


def test_the_table_keeps_one_writer_and_closing_for_good() -> None:
    """What the states mean: a send starts only where nobody writes and ends only where
    someone does (or the socket went under them); closing is never undone."""
    writing = {S.SENDING, S.CLOSING_SENDING, S.CLOSED_SENDING}
    taking = {S.OPEN, S.SENDING}
    gone = {S.CLOSED_SENDING, S.CLOSED}
    assert writing == fastws._WRITER_AT_WORK and taking == fastws._TAKING_MESSAGES
    assert gone == fastws._SOCKET_GONE
    for (state, event), after in TRANSITIONS.items():
        if event is E.SEND_STARTED:
            assert state not in writing and state not in gone and after in writing
        elif event is E.SEND_FINISHED:
            assert state in writing and after not in writing
        elif event is E.CLOSE_STARTED:
            assert state in taking and after not in taking
        else:
            assert event is E.SOCKET_CLOSED and state not in taking | gone and after in gone
        if event is not E.SEND_STARTED and event is not E.SEND_FINISHED:
            assert (state in writing) == (after in writing), "closing leaves the writer be"
        if state not in taking:
            assert after not in taking, "a connection that stopped taking messages resumed"


@given(st.lists(st.sampled_from(list(E)), max_size=30))
def test_any_run_of_events_is_what_three_flags_would_say(events: list[E]) -> None:
    """The machine against the flags it replaced (writing, closing, closed): it accepts an
    event exactly when the flags make sense of it, and always says what they say."""
    machine = ConnectionMachine()
    writing = closing = closed = False
    for event in events:
        if event is E.SEND_STARTED:
            allowed = not writing and not closed
        elif event is E.SEND_FINISHED:
            allowed = writing
        elif event is E.CLOSE_STARTED:
            allowed = not closing
        else:
            allowed = closing and not closed
        if not allowed:
            with pytest.raises(InvalidTransition):
                machine.apply(event)
            continue
        machine.apply(event)
        if event is E.SEND_STARTED:
            writing = True
        elif event is E.SEND_FINISHED:
            writing = False
        elif event is E.CLOSE_STARTED:
            closing = True
        else:
            closed = True
        expected = {
            (False, False, False): S.OPEN,
            (True, False, False): S.SENDING,
            (False, True, False): S.CLOSING,
            (True, True, False): S.CLOSING_SENDING,
            (True, True, True): S.CLOSED_SENDING,
            (False, True, True): S.CLOSED,
        }[(writing, closing, closed)]
        assert machine.state is expected


# -- over real sockets ------------------------------------------------------------------------

#: Larger than the server's send buffer and the client's receive buffer together, so a
#: write of it waits for the client to read.
BIG = 1 << 20


class Peer:
    """The client end, on websockets' sans-IO client: it reads only when a test says so."""

    def __init__(self, sock: trio.socket.SocketType, port: int) -> None:
        self.sock = sock
        self.stream = trio.SocketStream(sock)
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"), max_size=None)
        self.frames: deque[Frame] = deque()

    async def _send_pending(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self.stream.send_all(chunk)

    async def _receive(self) -> bool:
        data = await self.stream.receive_some(1 << 16)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                self.frames.append(event)
            else:
                assert isinstance(event, Response) and event.status_code == 101
        # websockets answers a close frame on its own: send its answer.
        await self._send_pending()
        return bool(data)

    async def handshake(self) -> None:
        self.protocol.send_request(self.protocol.connect())
        await self._send_pending()
        while self.protocol.state is State.CONNECTING:
            assert await self._receive(), "the server hung up during the handshake"

    async def next_frame(self) -> Frame:
        while not self.frames:
            assert await self._receive(), "the server hung up"
        return self.frames.popleft()


@asynccontextmanager
async def served_connection(
    *, disconnect_timeout: float = 60.0
) -> AsyncIterator[tuple[fastws.WebSocketConnection, Peer]]:
    """A fastws server on 127.0.0.1 and one client connected to it: the server's side of the
    connection (accepted, its handler waiting until the block ends) and the client."""
    connections: list[fastws.WebSocketConnection] = []
    accepted = trio.Event()
    done = trio.Event()

    async def handler(request: fastws.WebSocketRequest) -> None:
        connections.append(await request.accept())
        accepted.set()
        await done.wait()

    async with trio.open_nursery() as nursery:
        serve = partial(
            fastws.serve_websocket,
            handler,
            "127.0.0.1",
            0,
            None,
            disconnect_timeout=disconnect_timeout,
        )
        server: fastws.WebSocketServer = await nursery.start(serve)
        for listener in server.listeners:  # accepted sockets take the listener's size
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        sock = trio.socket.socket()
        # A tiny receive window: the kernel stops taking the server's frames almost at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", server.port))
        peer = Peer(sock, server.port)
        await peer.handshake()
        await accepted.wait()
        try:
            yield connections[0], peer
        finally:
            sock.close()
            done.set()
            nursery.cancel_scope.cancel()


def said(reason: CloseReason | None) -> tuple[int, str | None] | None:
    """A close reason as plain values (trio-websocket's has no equality of its own)."""
    return None if reason is None else (reason.code, reason.reason)


async def sends_then_waits(
    nursery: trio.Nursery, connection: fastws.WebSocketConnection, message: str
) -> None:
    """Start a send of ``message`` and return once every task waits (this one for the
    kernel, as the message is too big to go at once)."""
    nursery.start_soon(connection.send_message, message)
    await trio.testing.wait_all_tasks_blocked()


async def test_an_uncontended_send_never_yields_to_the_scheduler() -> None:
    async with served_connection() as (connection, peer):
        with trio.testing.assert_no_checkpoints():
            await connection.send_message("hi")
            await connection.send_message(b"\x00\x01")
        assert connection.state is S.OPEN
        text, binary = await peer.next_frame(), await peer.next_frame()
        assert (text.opcode, text.data) == (Opcode.TEXT, b"hi")
        assert (binary.opcode, binary.data) == (Opcode.BINARY, b"\x00\x01")


async def test_concurrent_senders_take_turns_and_no_frame_is_cut() -> None:
    first, second, third = "a" * BIG, "b" * 70_000, "c" * 10
    async with served_connection() as (connection, peer):
        async with trio.open_nursery() as nursery:
            await sends_then_waits(nursery, connection, first)
            assert connection.state is S.SENDING
            await sends_then_waits(nursery, connection, second)
            await sends_then_waits(nursery, connection, third)
            assert connection.state is S.SENDING, "still the first sender's turn"
            assert connection.closed is None
            received = [await peer.next_frame() for _ in range(3)]
        assert [(f.opcode, f.fin) for f in received] == [(Opcode.TEXT, True)] * 3
        assert [bytes(f.data) for f in received] == [m.encode() for m in (first, second, third)]
        assert connection.state is S.OPEN
        with trio.testing.assert_no_checkpoints():
            await connection.send_message("after")  # the turn is free again
        assert (await peer.next_frame()).data == b"after"


async def test_a_close_while_a_send_waits_lets_the_send_finish_first() -> None:
    message = "m" * BIG
    async with served_connection() as (connection, peer):
        async with trio.open_nursery() as nursery:
            await sends_then_waits(nursery, connection, message)
            nursery.start_soon(connection.aclose, 1000, "bye")
            await trio.testing.wait_all_tasks_blocked()
            assert connection.state is S.CLOSING_SENDING
            assert said(connection.closed) == (1000, "bye")
            with pytest.raises(ConnectionClosed):
                await connection.send_message("too late")
            with pytest.raises(ConnectionClosed):
                connection.queue_message("too late")
            # The client reads: the whole message, then the close frame, which it answers.
            sent = await peer.next_frame()
            closing = await peer.next_frame()
        # Both tasks are done: the send went out whole, and aclose returned.
        assert sent.opcode is Opcode.TEXT and bytes(sent.data) == message.encode()
        assert closing.opcode is Opcode.CLOSE
        assert Close.parse(closing.data) == Close(1000, "bye")
        assert connection.state is S.CLOSED  # the client's answer came: the socket is closed
        assert said(connection.closed) == (1000, "bye")
        with pytest.raises(ConnectionClosed):
            await connection.get_message()
        # The handshake was done, so the TCP connection ends gracefully (FIN), not with RST.
        assert await peer.sock.recv(1 << 16) == b""


async def test_a_peer_that_never_answers_the_close_is_aborted_at_the_disconnect_timeout(
    mock_clock: trio.testing.MockClock,
) -> None:
    timeout = 30.0
    outcome: list[BaseException | None] = []

    async def send_big(connection: fastws.WebSocketConnection) -> None:
        try:
            await connection.send_message("x" * BIG)
        except ConnectionClosed as closed:
            outcome.append(closed)
        else:
            outcome.append(None)

    async with served_connection(disconnect_timeout=timeout) as (connection, peer):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_big, connection)
            await trio.testing.wait_all_tasks_blocked()
            assert connection.state is S.SENDING
            started = trio.current_time()
            nursery.start_soon(connection.aclose)
            await trio.testing.wait_all_tasks_blocked()
            assert connection.state is S.CLOSING_SENDING
            # The client never reads. Just before the timeout, nothing has been cut yet.
            mock_clock.jump(timeout * 0.99)
            await trio.testing.wait_all_tasks_blocked()
            assert connection.state is S.CLOSING_SENDING and not outcome
            mock_clock.jump(timeout * 0.01)
        # At the timeout, aclose returned and the stuck send was told the connection closed.
        assert trio.current_time() - started == pytest.approx(timeout)
        assert connection.state is S.CLOSED
        [closed] = outcome
        assert isinstance(closed, ConnectionClosed)
        assert said(connection.closed) == (1000, None)
        # The TCP connection was aborted (RST), the unread frames with it.
        with pytest.raises(ConnectionResetError):
            while await peer.sock.recv(1 << 16):
                pass


async def test_an_accepted_connection_keeps_nothing_of_its_opening_request() -> None:
    """An idle connection may live for hours: the request's headers (4 KiB of an idle
    user's memory) go once the handshake is answered; the path stays."""
    async with served_connection() as (connection, peer):
        assert connection.handshake_headers == ()
        assert connection._request is None
        assert connection.path == "/"
        assert connection.local is not None and connection.local.port > 0
        # Messages are still read in order, however they arrive.
        for text in ("one", "two", "three"):
            peer.protocol.send_text(text.encode())
        await peer._send_pending()
        assert [await connection.get_message() for _ in range(3)] == ["one", "two", "three"]
