"""A small async client for Switchover's WebSocket protocol (docs/protocol.md, docs/client.md).

For tests, benchmarks and bot authors. One connection per client object, opened with
:func:`connect_user`, :func:`connect_agent` or :func:`connect_bot` as an async context
manager::

    async with connect_user("ws://127.0.0.1:8765", bot_id="demo") as user:
        seq = await user.say_text("hi")             # waits for the ack, returns its seq
        reply = await user.wait_for(lambda f: f["type"] == "entry" and f["sender"] == "bot")

Every frame the server sends, except the acks and errors that answer a request, lands in the
client's inbox in order: :meth:`Client.next_frame` takes the next one, :meth:`Client.wait_for`
skips to the first that matches. Requests (``say_text``, ``claim``...) send a frame with a
fresh ``id`` and wait for its ``ack``; an ``error`` answer raises :class:`RequestRefused`.
A message sent that way is not echoed back to this connection as an ``entry``: its ack
carries the ``seq`` it was given (the client's other connections do get the entry).
"""

from __future__ import annotations

import itertools
import json
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

Frame = dict[str, Any]
FrameCheck = Callable[[Frame], None]

C = TypeVar("C", bound="Client")


class RequestRefused(Exception):
    """The server refused a request: it answered with an ``error`` frame (``code``; the whole
    ``frame``, with its ``message``), or a hello with anything but a ``welcome``."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(f"{frame.get('code')}: {frame.get('message')}")
        self.frame = frame
        self.code: str = frame.get("code", "")


class Closed(Exception):
    """The server closed the connection (``code`` and ``reason`` say why)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"connection closed: {code} {reason or ''}".rstrip())
        self.code = code
        self.reason = reason


class Client:
    """One connection to the server. The role-specific clients below add the frames of their
    role."""

    def __init__(
        self, ws: WebSocketConnection, *, frame_check: FrameCheck | None, keep_frames: bool
    ) -> None:
        self.ws = ws
        self.welcome: Frame = {}
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._frame_check = frame_check
        self._keep_frames = keep_frames
        self._inbox: deque[Frame] = deque()
        self._arrived = trio.Event()
        self._closed = trio.Event()
        self._pending: dict[str | int, list[Frame]] = {}
        self._answered: dict[str | int, trio.Event] = {}
        # Ids unique beyond this connection: the conversation takes a reused id of a message
        # it already has for a resend of that message.
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    # -- receiving --------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        try:
            while True:
                raw = await self.ws.get_message()
                frame = json.loads(raw)
                if self._frame_check is not None:
                    self._frame_check(frame)
                self._take(frame)
        except ConnectionClosed as closed:
            reason = closed.reason
            self.close_code = reason.code if reason is not None else None
            self.close_reason = reason.reason if reason is not None else None
        finally:
            self._closed.set()
            self._arrived.set()
            for event in self._answered.values():
                event.set()

    def _take(self, frame: Frame) -> None:
        frame_id = frame.get("id")
        if frame.get("type") in ("ack", "error", "pong") and frame_id in self._answered:
            self._pending[frame_id].append(frame)
            self._answered.pop(frame_id).set()
            return
        self._observe(frame)
        if self._keep_frames or frame.get("type") == "welcome":
            self._inbox.append(frame)
            self._arrived.set()
            self._arrived = trio.Event()

    def _observe(self, frame: Frame) -> None:
        """Role-specific bookkeeping on every unsolicited frame."""

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def next_frame(self, *, timeout: float = 5.0) -> Frame:
        """The next frame from the server. Raises :class:`Closed` once the connection is
        closed and every frame has been taken."""
        with trio.fail_after(timeout):
            while not self._inbox:
                if self._closed.is_set():
                    raise Closed(self.close_code, self.close_reason)
                await self._arrived.wait()
        return self._inbox.popleft()

    def take_all(self) -> list[Frame]:
        """Every frame already received and not yet taken, without waiting."""
        frames = list(self._inbox)
        self._inbox.clear()
        return frames

    async def wait_for(self, predicate: Callable[[Frame], bool], *, timeout: float = 5.0) -> Frame:
        """Skip frames until one matches ``predicate``, and return it."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.next_frame(timeout=timeout)
                if predicate(frame):
                    return frame

    async def wait_closed(self, *, timeout: float = 5.0) -> int | None:
        """Wait until the server closes the connection; return the close code."""
        with trio.fail_after(timeout):
            await self._closed.wait()
        return self.close_code

    # -- sending ----------------------------------------------------------------------------

    async def send_frame(self, frame: Mapping[str, Any]) -> None:
        """Send one frame as is (no id added, no answer awaited)."""
        await self.ws.send_message(json.dumps(frame))

    async def send_raw(self, data: str | bytes) -> None:
        """Send anything, even what is not a valid frame (for tests of bad input)."""
        await self.ws.send_message(data)

    async def request(self, frame: Mapping[str, Any], *, timeout: float = 5.0) -> Frame:
        """Send ``frame`` with a fresh ``id`` (unless it has one) and return the ``ack`` (or
        ``pong``) that answers it. Raises :class:`RequestRefused` on an ``error`` answer."""
        frame = dict(frame)
        frame_id = frame.setdefault("id", f"r{self._id_prefix}-{next(self._ids)}")
        answered = self._answered[frame_id] = trio.Event()
        self._pending[frame_id] = []
        try:
            await self.send_frame(frame)
            with trio.fail_after(timeout):
                await answered.wait()
            answers = self._pending[frame_id]
        finally:
            self._pending.pop(frame_id, None)
            self._answered.pop(frame_id, None)
        if not answers:
            raise Closed(self.close_code, self.close_reason)
        answer = answers[0]
        if answer["type"] == "error":
            raise RequestRefused(answer)
        return answer

    async def ping(self) -> None:
        await self.request({"type": "ping"})

    async def close(self) -> None:
        await self.ws.aclose()


class UserClient(Client):
    """A user: one conversation. ``last_seq`` is the highest ``seq`` seen; hand it and
    ``resume_token`` to :func:`connect_user` to come back without missing anything."""

    last_seq: int = 0

    @property
    def conversation_id(self) -> str:
        return str(self.welcome["conversation_id"])

    @property
    def resume_token(self) -> str:
        return str(self.welcome["resume_token"])

    def _observe(self, frame: Frame) -> None:
        if frame.get("type") == "entry" and frame["seq"] > self.last_seq:
            self.last_seq = frame["seq"]

    async def say(self, content_type: str, content: Mapping[str, Any]) -> int | None:
        """Send a message; return the ``seq`` the server gave it (it also counts as seen
        for ``last_seq``: the server does not echo it back)."""
        ack = await self.request(
            {"type": "message", "content_type": content_type, "content": dict(content)}
        )
        seq: int | None = ack["seq"]
        if seq is not None and seq > self.last_seq:
            self.last_seq = seq
        return seq

    async def say_text(self, text: str) -> int | None:
        return await self.say("text", {"text": text})

    async def click(self, payload: str) -> int | None:
        """Click a button: send its payload (``LIVECHAT_SESSION_START`` asks for a human)."""
        return await self.say("payload", {"payload": payload})

    async def typing(self) -> None:
        await self.send_frame({"type": "typing"})


class AgentClient(Client):
    """An agent at the desk. ``desk`` is the latest ``desk`` frame."""

    desk: Frame | None = None

    @property
    def agent_id(self) -> str:
        return str(self.welcome["agent_id"])

    def _observe(self, frame: Frame) -> None:
        if frame.get("type") == "desk":
            self.desk = frame

    async def set_presence(self, status: str = "online") -> None:
        await self.request({"type": "presence", "status": status})

    async def say(
        self, conversation_id: str, text: str | None = None, **content: Any
    ) -> int | None:
        """Write to a chat: ``say(conv, "hi")`` for text, or ``content_type=..., content=...``."""
        frame: dict[str, Any] = {"type": "message", "conversation_id": conversation_id}
        if text is not None:
            frame.update(content_type="text", content={"text": text})
        else:
            frame.update(content)
        seq: int | None = (await self.request(frame))["seq"]
        return seq

    async def sign_off(self, conversation_id: str) -> int | None:
        ack = await self.request({"type": "sign_off", "conversation_id": conversation_id})
        seq: int | None = ack["seq"]
        return seq

    async def end(self, conversation_id: str) -> int | None:
        """End the session of a chat this agent holds (reason ``agent_closed``)."""
        ack = await self.request({"type": "end", "conversation_id": conversation_id})
        seq: int | None = ack["seq"]
        return seq

    async def transfer(self, conversation_id: str, to_agent: str | None) -> None:
        await self.request(
            {"type": "transfer", "conversation_id": conversation_id, "to_agent": to_agent}
        )

    async def claim(self, conversation_id: str) -> None:
        await self.request({"type": "claim", "conversation_id": conversation_id})

    async def replay(self, conversation_id: str, after_seq: int = 0) -> None:
        await self.request(
            {"type": "replay", "conversation_id": conversation_id, "after_seq": after_seq}
        )

    async def typing(self, conversation_id: str) -> None:
        await self.send_frame({"type": "typing", "conversation_id": conversation_id})


class BotClient(Client):
    """A connected bot: receives ``event`` frames, pushes messages, acknowledges events."""

    @property
    def bot_id(self) -> str:
        return str(self.welcome["bot_id"])

    async def push(self, conversation_id: str, messages: Sequence[Mapping[str, Any]]) -> int | None:
        """Push messages (``{"content_type": ..., "content": {...}}``) to a conversation's
        user; return the ``seq`` of the last one."""
        ack = await self.request(
            {"type": "message", "conversation_id": conversation_id, "messages": list(messages)}
        )
        seq: int | None = ack["seq"]
        return seq

    async def push_text(self, conversation_id: str, text: str) -> int | None:
        return await self.push(
            conversation_id, [{"content_type": "text", "content": {"text": text}}]
        )

    async def ack_event(self, event_id: str) -> None:
        """Acknowledge the event ``event_id`` (after pushing its answer, so the answer is
        kept before the event stops being owed); waits for the server's ``ack``. Until a bot
        acknowledges an event, it may be delivered again, and the conversation's next events
        wait behind it."""
        await self.request({"type": "event_ack", "event_id": event_id})


@asynccontextmanager
async def _connect(
    cls: type[C],
    url: str,
    hello: Mapping[str, Any],
    frame_check: FrameCheck | None,
    keep_frames: bool,
    timeout: float,
) -> AsyncIterator[C]:
    async with open_websocket_url(url) as ws:
        refused: Exception | None = None
        async with trio.open_nursery() as nursery:
            client = cls(ws, frame_check=frame_check, keep_frames=keep_frames)
            nursery.start_soon(client._read_forever)
            await client.send_frame({"type": "hello", "v": 1, **hello})
            try:
                client.welcome = await client.next_frame(timeout=timeout)
                if client.welcome.get("type") != "welcome":
                    raise RequestRefused(client.welcome)
            except (Closed, RequestRefused) as exc:
                # Raised outside the nursery, so callers see it bare, not in a group.
                refused = exc
            else:
                try:
                    yield client
                finally:
                    nursery.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
        if refused is not None:
            raise refused


def connect_user(
    url: str,
    *,
    bot_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    resume_token: str | None = None,
    last_seq: int | None = None,
    frame_check: FrameCheck | None = None,
    keep_frames: bool = True,
    timeout: float = 5.0,
) -> AbstractAsyncContextManager[UserClient]:
    """Open a conversation (with ``bot_id``, or the server's default bot), or return to one
    with the ``resume_token`` of an earlier welcome and the ``last_seq`` seen then.

    ``frame_check`` is called with every frame received (tests validate schemas with it).
    ``keep_frames=False`` drops unsolicited frames instead of queueing them (benchmarks);
    acks and ``last_seq`` still work. Raises :class:`Closed` if the server refuses the hello.
    """
    hello: dict[str, Any] = {"role": "user"}
    if resume_token is not None:
        hello["resume_token"] = resume_token
        if last_seq is not None:
            hello["last_seq"] = last_seq
    else:
        if bot_id is not None:
            hello["bot_id"] = bot_id
        if metadata is not None:
            hello["metadata"] = dict(metadata)
    return _with_seq(_connect(UserClient, url, hello, frame_check, keep_frames, timeout), last_seq)


@asynccontextmanager
async def _with_seq(
    opened: AbstractAsyncContextManager[UserClient], last_seq: int | None
) -> AsyncIterator[UserClient]:
    async with opened as user:
        user.last_seq = max(user.last_seq, last_seq or 0)
        yield user


def connect_agent(
    url: str,
    token: str,
    *,
    last_seqs: Mapping[str, int] | None = None,
    frame_check: FrameCheck | None = None,
    keep_frames: bool = True,
    timeout: float = 5.0,
) -> AbstractAsyncContextManager[AgentClient]:
    """Connect as the agent whose token this is. Call ``set_presence("online")`` to take
    chats."""
    hello: dict[str, Any] = {"role": "agent", "token": token}
    if last_seqs:
        hello["last_seqs"] = dict(last_seqs)
    return _connect(AgentClient, url, hello, frame_check, keep_frames, timeout)


def connect_bot(
    url: str,
    token: str,
    *,
    frame_check: FrameCheck | None = None,
    keep_frames: bool = True,
    timeout: float = 5.0,
) -> AbstractAsyncContextManager[BotClient]:
    """Connect as the bot whose token this is."""
    return _connect(
        BotClient, url, {"role": "bot", "token": token}, frame_check, keep_frames, timeout
    )


__all__ = [
    "AgentClient",
    "BotClient",
    "Client",
    "Closed",
    "RequestRefused",
    "UserClient",
    "connect_agent",
    "connect_bot",
    "connect_user",
]
