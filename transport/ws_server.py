"""The WebSocket listener: users, agents and connected bots speak docs/protocol.md here.

Each connection is one :class:`Connection`: a reader loop that parses frames and hands them to
the core without waiting (answers come back through callbacks), and a writer task draining a
bounded buffer of ready-made frames (started on first need, so an idle connection costs one
task). The connection is also the :class:`actors.Sink` the core
delivers to, so ``deliver`` only serialises and appends: it never blocks, whoever calls it.
A client that lets more than ``limits.max_buffered`` frames pile up is closed with 4408 and
resumes by sequence number; it never slows its conversation or anyone else.

Nothing here creates a task per message, and the hot path (a user's or an agent's message)
parses its JSON once and skips the schema validator (see :mod:`transport.protocol`).

Two listeners carry the same protocol, chosen with ``[listeners] websocket`` in the config:

* ``"fast"`` (the default), :mod:`transport.fastws`: frames are read and written on the
  socket directly; one :class:`Flusher` task writes what every :class:`FastConnection` got
  during a pass of the scheduler, one system call per connection, so a connection's writer
  task only runs for a backlog (bench/README.md has the figures).
* ``"trio-websocket"``: the trio-websocket library, with :class:`Connection`'s writer task
  sending every frame.

A message a client sends with an ``id`` is not echoed back to that connection: its ``ack``
carries the entry's ``seq``. The client's other connections get the entry as usual.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Protocol, runtime_checkable

import trio
import trio_websocket
from trio_websocket import ConnectionClosed

from actors import (
    AgentSays,
    AgentSignsOff,
    AgentTransfers,
    AgentTyping,
    BotSays,
    Content,
    Event,
    Outcome,
    Overloaded,
    Party,
    Presence,
    Problem,
    Refused,
    StoreUnavailable,
    UnknownAgent,
    UserSays,
    UserTyping,
)
from actors.ports import Delivery

from . import fastws
from . import protocol as wire
from .config import WS_LISTENERS
from .protocol import BadFrame, FrameId
from .services import Limits, Services
from .tokens import InvalidToken, ResumeTokens

log = logging.getLogger("switchover.ws")

BAD_HELLO: Final = 4400
UNAUTHORIZED: Final = 4401
NOT_FOUND: Final = 4404
TOO_SLOW: Final = 4408
STORE_DOWN: Final = 4503
GOING_AWAY: Final = 1001

#: The listener implementations ``[listeners] websocket`` may name; the first is the default.
LISTENERS: Final = WS_LISTENERS

#: Seconds a closing connection has to flush and say goodbye before it is cut.
CLOSE_GRACE: Final = 5.0
#: How many claim/transfer ids an agent connection remembers for late desk refusals.
_PENDING_LIMIT: Final = 256
#: How many conversations a bot connection remembers as its own.
_OWNED_LIMIT: Final = 4096


def hard_frame_ceiling(limits: Limits) -> int:
    """Beyond this size the listener itself closes with 1009; below it, oversize frames get
    an error and the connection stays open."""
    return max(4 * limits.max_frame_bytes, 1 << 20)


def _close_reason(text: str) -> str:
    """Close reasons must fit in 123 bytes of UTF-8."""
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


class WebSocket(Protocol):
    """What a connection needs of a listener's WebSocket (trio-websocket's or fastws's)."""

    async def get_message(self) -> str | bytes: ...

    async def send_message(self, message: str | bytes) -> None: ...

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None: ...


class Handshake(Protocol):
    async def accept(self) -> Any: ...


@runtime_checkable
class PresenceLog(Protocol):
    """A store that keeps agents' presence (the SQLite store does; the memory store not)."""

    async def record_presence(
        self, agent_id: str, presence: str, at: float | None = None
    ) -> None: ...


class Hub:
    """Every open connection of one listener, so that shutdown can close them all."""

    def __init__(
        self, services: Services, *, listener: str = LISTENERS[0], close_grace: float = CLOSE_GRACE
    ) -> None:
        if listener not in LISTENERS:
            raise ValueError(f"unknown WebSocket listener {listener!r}; known: {LISTENERS}")
        self.services = services
        self.tokens = ResumeTokens(services.secret)
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
    """One client: its role and identity after hello, its buffer, and its reader and writer.

    Implements :class:`actors.Sink` (``deliver``) and
    :class:`transport.bot_connections.FrameOutlet` (``send_frame``).
    """

    def __init__(self, hub: Hub, ws: WebSocket) -> None:
        services = hub.services
        self.hub = hub
        self.ws = ws
        self.services = services
        self.board = services.board
        self.desk = services.desk
        self.limits = limits = services.limits
        self.role: str = ""
        self.conversation_id: str | None = None
        self.agent_id: str | None = None
        self.bot_id: str | None = None
        self._buffer: deque[str] = deque()
        self._max_buffered = limits.max_buffered
        self._max_bytes = limits.max_frame_bytes
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
        self._pending: OrderedDict[str, FrameId] = OrderedDict()
        self._owned: OrderedDict[str, bool] = OrderedDict()
        self._joined: Callable[[], None] | None = None

    # -- outbound: never blocks -------------------------------------------------------------

    def deliver(self, item: Delivery) -> None:
        """The core hands this client something (Sink)."""
        if self._closing:
            return
        if isinstance(item, Problem):
            frame_id = (
                self._pending.pop(item.conversation_id, None) if item.conversation_id else None
            )
            self._push(wire.error_frame(item.code, item.detail, frame_id, item.conversation_id))
            return
        try:
            text = wire.encode(item)
        except Exception:
            log.exception("cannot encode %r for a client", type(item).__name__)
            return
        self._push(text)

    def send_frame(self, text: str) -> bool:
        """Queue a ready-made frame (FrameOutlet); ``False`` when closing."""
        if self._closing:
            return False
        self._push(text)
        return not self._closing

    def _push(self, text: str) -> None:
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
        self._closing = True
        self._close_code = code
        self._close_reason = _close_reason(reason)
        if not flush:
            self._buffer.clear()
        self._reader_scope.cancel()
        self._writer_scope.deadline = trio.current_time() + self.hub.close_grace
        if self._writer_started or code is not None or self._buffer:
            self._wake_writer()
        if self._drain_waiter is not None:
            self._drain_waiter.set()

    async def _write_loop(self) -> None:
        with self._writer_scope:
            try:
                while True:
                    await self._send_queued()
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
        buffer = self._buffer
        send = self.ws.send_message
        while buffer:
            await send(buffer.popleft())

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

    async def _catch_up(
        self, conversation_id: str, after_seq: int, party: Party, agent_id: str | None
    ) -> int:
        """Send the entries after ``after_seq`` that ``party`` may see, straight from the
        store, in chunks the writer drains between: a long history must not count as falling
        behind. Returns the last ``seq`` looked at."""
        entries = await self.board.store.entries_after(conversation_id, after_seq)
        chunk = max(1, self._max_buffered // 2)
        sent = 0
        for entry in entries:
            if not entry.visible_to(party, agent_id):
                continue
            if sent and sent % chunk == 0:
                await self._drained()
            if self._closing:
                break
            self._push(wire.entry_frame(entry))
            sent += 1
        return entries[-1].seq if entries else after_seq

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
        """Undo what hello did: unsubscribe, detach from the desk, unregister the bot."""
        self._closing = True
        self._buffer.clear()
        if self._joined is not None:
            self._joined()
            self._joined = None

    async def _receive(self) -> str | bytes | None:
        try:
            return await self.ws.get_message()
        except ConnectionClosed:
            return None

    async def _hello(self) -> bool:
        """Read and carry out the hello (its arrival is timed by :meth:`run`)."""
        raw = await self._receive()
        self._reader_scope.deadline = math.inf
        if raw is None:
            return False
        try:
            hello = wire.parse_hello(raw, self._max_bytes)
        except BadFrame as bad:
            self.close(BAD_HELLO, f"{bad.code}: {bad.message}")
            return False
        if isinstance(hello, wire.UserHello):
            return await self._user_hello(hello)
        if isinstance(hello, wire.AgentHello):
            return await self._agent_hello(hello)
        return self._bot_hello(hello)

    async def _user_hello(self, hello: wire.UserHello) -> bool:
        board = self.board
        if hello.resume_token is None:
            bot_id = hello.bot_id or self.services.default_bot
            if bot_id not in board.bots:
                self.close(NOT_FOUND, f"unknown bot {bot_id[:64]!r}")
                return False
            try:
                state = await board.open_conversation(bot_id, metadata=hello.metadata)
            except StoreUnavailable as exc:
                log.error("cannot open a conversation: %s", exc)
                self.close(STORE_DOWN, "store_unavailable: conversations cannot be kept right now")
                return False
            conversation_id = state.conversation_id
            after_seq: int | None = None
        else:
            try:
                grant = self.hub.tokens.verify(hello.resume_token)
            except InvalidToken:
                self.close(UNAUTHORIZED, "the resume token is not valid")
                return False
            conversation_id, bot_id = grant.conversation_id, grant.bot_id
            missing = bot_id not in board.bots or (
                not board.is_in_memory(conversation_id)
                and await board.store.load(conversation_id) is None
            )
            if missing:
                self.close(NOT_FOUND, "the conversation no longer exists")
                return False
            after_seq = hello.last_seq
        self.role = "user"
        self.conversation_id = conversation_id
        token = self.hub.tokens.issue(conversation_id, bot_id)
        self._push(
            wire.welcome_frame(
                "user", conversation_id=conversation_id, resume_token=token, bot_id=bot_id
            )
        )
        if after_seq is not None:
            # The history comes from the store at the writer's pace; the conversation then
            # sends what was added meanwhile, and live traffic, with no gap or duplicate.
            after_seq = await self._catch_up(conversation_id, after_seq, Party.USER, None)
        board.subscribe(conversation_id, self, after_seq)
        self._joined = partial(board.unsubscribe, conversation_id, self)
        return not self._closing

    async def _agent_hello(self, hello: wire.AgentHello) -> bool:
        agent_id = self.services.agent_tokens.get(hello.token)
        profile = self.desk.profiles.get(agent_id) if agent_id is not None else None
        if agent_id is None or profile is None:
            self.close(UNAUTHORIZED, "unknown agent token")
            return False
        self.role = "agent"
        self.agent_id = agent_id
        self._push(wire.welcome_frame("agent", agent_id=agent_id, name=profile.name))
        try:
            self.desk.attach(agent_id, self)
        except UnknownAgent:
            self.close(UNAUTHORIZED, "unknown agent")
            return False
        self._joined = partial(self.desk.detach, agent_id, self)
        for conversation_id, after_seq in hello.last_seqs.items():
            await self._catch_up(conversation_id, after_seq, Party.AGENT, agent_id)
        return not self._closing

    def _bot_hello(self, hello: wire.BotHello) -> bool:
        bot_id = self.services.bot_tokens.get(hello.token)
        if bot_id is None or bot_id not in self.board.bots:
            self.close(UNAUTHORIZED, "unknown bot token")
            return False
        self.role = "bot"
        self.bot_id = bot_id
        self._push(wire.welcome_frame("bot", bot_id=bot_id))
        registry = self.services.bot_connections
        registry.add(bot_id, self)
        self._joined = partial(registry.remove, bot_id, self)
        return True

    # -- inbound ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        receive = self.ws.get_message
        role = self.role
        max_bytes = self._max_bytes
        rate = self.limits.rate
        burst = float(self.limits.burst)
        parse = wire.parse_frame
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
            try:
                frame = parse(raw, role, max_bytes)
            except BadFrame as bad:
                self._push(wire.error_frame(bad.code, bad.message, bad.id))
                continue
            if isinstance(frame, wire.BotPush) and not await self._owns(frame.conversation_id):
                self._error("forbidden", "Not a conversation of this bot.", frame.id, frame)
                continue
            if isinstance(frame, wire.ReplayAfter):
                await self._catch_up(
                    frame.conversation_id, frame.after_seq, Party.AGENT, self._agent()
                )
                self._ack(frame.id, None)  # after the entries: the replay is complete
                continue
            if isinstance(frame, wire.SetPresence):
                await self._set_presence(frame)
                continue
            try:
                self._dispatch(frame)
            except Exception:
                log.exception("a %s frame could not be handled", role)
                self._push(
                    wire.error_frame("internal_error", "The frame could not be handled.", frame.id)
                )

    def _error(self, code: str, message: str, frame_id: FrameId | None, frame: object) -> None:
        conversation_id = getattr(frame, "conversation_id", None)
        self._push(wire.error_frame(code, message, frame_id, conversation_id))

    def _dispatch(self, frame: wire.Frame) -> None:
        if isinstance(frame, wire.Say):
            if self.role == "user":
                self._user_submit(frame.id, frame.conversation_id, UserSays(frame.content))
            else:
                self._agent_submit(frame.id, frame.conversation_id, frame.content)
        elif isinstance(frame, wire.Ping):
            self._push(wire.pong_frame(frame.id))
        elif isinstance(frame, wire.TypingNow):
            if self.role == "user":
                self._user_submit(frame.id, frame.conversation_id, UserTyping(), quiet=True)
            else:
                self._agent_event(frame, AgentTyping(self._agent()), quiet=True)
        elif isinstance(frame, wire.BotPush):
            self._submit(frame.id, frame.conversation_id, BotSays(frame.contents))
        else:
            self._agent_frame(frame)

    def _agent(self) -> str:
        assert self.agent_id is not None
        return self.agent_id

    async def _set_presence(self, frame: wire.SetPresence) -> None:
        """Tell the desk, keep it in the store when the store keeps presence, then ack."""
        agent_id = self._agent()
        self.desk.set_presence(agent_id, Presence(frame.status))
        store = self.board.store
        if isinstance(store, PresenceLog):
            try:
                await store.record_presence(agent_id, frame.status)
            except StoreUnavailable as exc:
                log.warning("the presence of %s was not stored: %s", agent_id, exc)
        self._ack(frame.id, None)

    def _agent_frame(self, frame: wire.Frame) -> None:
        agent_id = self._agent()
        if isinstance(frame, wire.SignOff):
            self._agent_event(frame, AgentSignsOff(agent_id))
        elif isinstance(frame, wire.Transfer):
            if self._agent_event(frame, AgentTransfers(agent_id, frame.to_agent)):
                self._remember(frame.conversation_id, frame.id)
        elif isinstance(frame, wire.Claim):
            self._remember(frame.conversation_id, frame.id)
            self.desk.claim(agent_id, frame.conversation_id)
            self._ack(frame.id, None)

    def _remember(self, conversation_id: str, frame_id: FrameId | None) -> None:
        """Keep a claim's or transfer's id so that a later refusal from the desk carries it."""
        if frame_id is None:
            return
        pending = self._pending
        pending[conversation_id] = frame_id
        pending.move_to_end(conversation_id)
        if len(pending) > _PENDING_LIMIT:
            pending.popitem(last=False)

    def _ack(self, frame_id: FrameId | None, seq: int | None) -> None:
        if frame_id is not None:
            self._push(wire.ack_frame(frame_id, seq))

    def _user_submit(
        self, frame_id: FrameId | None, named: str | None, event: Event, *, quiet: bool = False
    ) -> None:
        own = self.conversation_id
        assert own is not None
        if named is not None and named != own:
            self._push(
                wire.error_frame("forbidden", "That is not your conversation.", frame_id, named)
            )
            return
        self._submit(frame_id, own, event, quiet=quiet)

    def _agent_submit(
        self, frame_id: FrameId | None, conversation_id: str | None, content: Content
    ) -> None:
        assert conversation_id is not None
        if not self.desk.holds(self._agent(), conversation_id):
            self._not_assigned(frame_id, conversation_id)
            return
        self._submit(frame_id, conversation_id, AgentSays(self._agent(), content))

    def _agent_event(self, frame: wire.Frame, event: Event, *, quiet: bool = False) -> bool:
        conversation_id = getattr(frame, "conversation_id", None)
        assert isinstance(conversation_id, str)
        if not self.desk.holds(self._agent(), conversation_id):
            self._not_assigned(frame.id, conversation_id)
            return False
        self._submit(frame.id, conversation_id, event, quiet=quiet)
        return True

    def _not_assigned(self, frame_id: FrameId | None, conversation_id: str) -> None:
        self._push(
            wire.error_frame(
                "not_assigned", "You do not hold this chat.", frame_id, conversation_id
            )
        )

    def _submit(
        self, frame_id: FrameId | None, conversation_id: str, event: Event, *, quiet: bool = False
    ) -> None:
        """Hand ``event`` to its conversation; the outcome comes back to :meth:`_answer`.
        ``quiet`` events (typing) report only refusals. A frame with an id is answered with
        the seq of what it wrote, so that entry is not sent back here as well."""
        reply = partial(self._answer, None if quiet else frame_id, conversation_id)
        origin = self if frame_id is not None and not quiet else None
        try:
            self.board.submit(conversation_id, event, reply, origin=origin)
        except Overloaded:
            self._push(
                wire.error_frame(
                    "overloaded",
                    "The conversation is busy; try again shortly.",
                    frame_id,
                    conversation_id,
                )
            )

    def _answer(self, frame_id: FrameId | None, conversation_id: str, outcome: Outcome) -> None:
        if isinstance(outcome, Refused):
            self._pending.pop(conversation_id, None)
            self._push(wire.error_frame(outcome.code, outcome.detail, frame_id, conversation_id))
        elif frame_id is not None:
            self._push(wire.ack_frame(frame_id, outcome.seq))

    async def _owns(self, conversation_id: str) -> bool:
        """Whether the conversation belongs to this bot (remembered once learnt)."""
        owned = self._owned
        known = owned.get(conversation_id)
        if known is None:
            state = await self.board.store.load(conversation_id)
            known = state is not None and state.bot_id == self.bot_id
            owned[conversation_id] = known
            if len(owned) > _OWNED_LIMIT:
                owned.popitem(last=False)
        return known


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
    """A connection on :mod:`transport.fastws`, written by the listener's :class:`Flusher`
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
        buffer = self._buffer
        try:
            while buffer:
                fast.queue_message(buffer.popleft())
        except ConnectionClosed:
            self.close(None)
            return
        if fast.write_nowait():
            self._writer_idle()
        else:
            self._wake_writer()

    async def _send_queued(self) -> None:
        fast = self.fast
        buffer = self._buffer
        while buffer:
            fast.queue_message(buffer.popleft())
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
