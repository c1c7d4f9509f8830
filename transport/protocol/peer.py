"""What one WebSocket client may say and what is answered: the protocol side of a connection.

A :class:`Peer` is handed the client's raw frames and decides what they mean for the core: the
hello by role (a user opens or resumes a conversation, an agent attaches to the desk, a bot
registers for its events), then every frame: submitting it to its conversation, acks, errors,
an agent's presence and claims, a bot's pushes to the conversations it owns. What it says
back goes through the ``send`` callable it is given, and it ends the connection through
``close``; it never touches a socket, a buffer or a task. So the same peer serves both
listeners of :mod:`transport.servers.websocket`, and what the protocol does can be read here apart
from how frames travel.

The peer is the :class:`actors.Sink` the core delivers to and the
:class:`transport.bots.connections.FrameOutlet` a connected bot is reached through: delivering
only serialises and calls ``send``, which never blocks, whoever calls it.

It is async only where it must wait: for the store (opening or resuming a conversation,
catching up, learning which bot owns a conversation) and for the connection to drain during a
long catch-up.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, Protocol, runtime_checkable

from actors import (
    AGENT_CLOSED,
    AgentEndsSession,
    AgentSays,
    AgentSignsOff,
    AgentTransfers,
    AgentTyping,
    BotSays,
    Content,
    Entry,
    Event,
    Outcome,
    Overloaded,
    Party,
    Presence,
    Refusal,
    StoreUnavailable,
    Transcript,
    UnknownAgent,
    UserSays,
    UserTyping,
)
from actors.model.deliveries import Delivery
from transport.protocol import frames as wire
from transport.protocol.credentials import AddressGuard, find_token, retry_words
from transport.protocol.frames import FrameId, FrameRefused
from transport.protocol.services import Services
from transport.protocol.tokens import ExpiredToken, InvalidToken, ResumeTokens

log = logging.getLogger("switchover.ws")

BAD_HELLO: Final = 4400
UNAUTHORIZED: Final = 4401
NOT_FOUND: Final = 4404
TOO_SLOW: Final = 4408
TOO_MANY: Final = 4429
STORE_DOWN: Final = 4503
GOING_AWAY: Final = 1001
INTERNAL_ERROR: Final = 1011

#: How many claim/transfer ids an agent connection remembers for late desk refusals.
_PENDING_LIMIT: Final = 256
_CLAIM_REFUSALS: Final = frozenset({"not_waiting", "cannot_claim"})
_TRANSFER_REFUSALS: Final = frozenset({"transfer_failed"})
#: How many conversations a bot connection remembers as its own.
_OWNED_LIMIT: Final = 4096
_NONE_YET: Final[OrderedDict[Any, Any]] = OrderedDict()

#: Queue a ready-made frame for the client; never blocks.
Send = Callable[[str], None]
#: End the connection with a close code (``None``: the client is gone) and a reason.
Close = Callable[[int | None, str], None]
#: Wait until what was sent so far has left (or the connection is closing).
Drained = Callable[[], Awaitable[None]]


@runtime_checkable
class PresenceLog(Protocol):
    """A store that keeps agents' presence (the SQLite store does; the memory store not)."""

    async def record_presence(
        self, agent_id: str, presence: str, at: float | None = None
    ) -> None: ...


@runtime_checkable
class PagedEntries(Protocol):
    """A store that reads a catch-up a page at a time, and only an agent's own entries for
    an agent (the SQLite store does): a replay of a long conversation, or of one the agent
    never held, then costs neither the whole history in memory nor its conversion."""

    async def entries_page(
        self, conversation_id: str, after_seq: int, limit: int, agent_id: str | None = None
    ) -> list[Entry]: ...


#: Entries read from the store at a time during a catch-up.
CATCH_UP_PAGE: Final = 500


class Peer:
    """One client's side of the protocol: its role and identity after hello, and what each
    of its frames does.

    ``closing`` is set by the connection as soon as it starts closing, for whatever reason:
    from then on deliveries are dropped and a catch-up stops.
    """

    def __init__(
        self,
        services: Services,
        tokens: ResumeTokens,
        *,
        send: Send,
        close: Close,
        drained: Drained,
        address: str = "",
        guard: AddressGuard | None = None,
    ) -> None:
        self.services = services
        self.address = address
        self.guard = guard
        self.board = services.board
        self.desk = services.desk
        self.limits = services.limits
        self.tokens = tokens
        self._send = send
        self._close = close
        self._drained = drained
        self.closing = False
        self.role: str = ""
        self.conversation_id: str | None = None
        self.agent_id: str | None = None
        self.bot_id: str | None = None
        # The claim and the transfer waiting for the desk's answer, by conversation, with the
        # id their answer must carry: at most one claim per chat waits at a time, so a refusal
        # never carries another claim's id.
        # An agent's pending claims and transfers, a bot's conversations: made at the hello
        # of that role (three empty dicts cost an idle user 384 bytes). Until then they are
        # one shared empty dict, only ever read.
        self._claims: OrderedDict[str, FrameId | None] = _NONE_YET
        self._transfers: OrderedDict[str, FrameId | None] = _NONE_YET
        self._owned: OrderedDict[str, bool] = _NONE_YET
        self._joined: Callable[[], None] | None = None

    # -- what the core hands this client ----------------------------------------------------

    def deliver(self, item: Delivery) -> None:
        """The core hands this client something (Sink)."""
        if self.closing:
            return
        if isinstance(item, Refusal):
            frame_id = self._answering(item)
            self._send(wire.error_frame(item.code, item.message, frame_id, item.conversation_id))
            return
        if isinstance(item, Transcript):
            self._claims.pop(item.conversation_id, None)  # a claim of it succeeded
        try:
            text = wire.encode(item)
        except Exception:
            log.exception("cannot encode %r for a client", type(item).__name__)
            return
        self._send(text)

    def abandon(self) -> None:
        """The core cannot deliver to this client any more (its delivery raised): close it
        with a code that tells it to reconnect and resume by ``seq``."""
        if not self.closing:
            self._close(INTERNAL_ERROR, "internal_error: reconnect and resume with last_seq")

    def _answering(self, refusal: Refusal) -> FrameId | None:
        """The id of the claim or transfer a refusal from the desk answers."""
        conversation_id = refusal.conversation_id
        if conversation_id is None:
            return None
        if refusal.code in _CLAIM_REFUSALS:
            return self._claims.pop(conversation_id, None)
        if refusal.code in _TRANSFER_REFUSALS:
            return self._transfers.pop(conversation_id, None)
        return None

    def send_frame(self, text: str) -> bool:
        """Queue a ready-made frame (FrameOutlet); ``False`` when closing."""
        if self.closing:
            return False
        self._send(text)
        return not self.closing

    def leave(self) -> None:
        """Undo what hello did: unsubscribe, detach from the desk, unregister the bot."""
        self.closing = True
        if self._joined is not None:
            self._joined()
            self._joined = None

    async def _catch_up(
        self, conversation_id: str, after_seq: int, party: Party, agent_id: str | None
    ) -> int:
        """Send the entries after ``after_seq`` that ``party`` may see, straight from the
        store, in chunks the connection drains between: a long history must not count as
        falling behind. Returns the last ``seq`` looked at."""
        store = self.board.store
        chunk = max(1, self.limits.max_buffered // 2)
        sent = 0
        last = after_seq
        while True:
            if isinstance(store, PagedEntries):
                page_agent = agent_id if party is Party.AGENT else None
                entries = await store.entries_page(conversation_id, last, CATCH_UP_PAGE, page_agent)
                more = len(entries) == CATCH_UP_PAGE
            else:
                entries = await store.entries_after(conversation_id, last)
                more = False
            for entry in entries:
                if not entry.visible_to(party, agent_id):
                    continue
                if sent and sent % chunk == 0:
                    await self._drained()
                if self.closing:
                    return last
                self._send(wire.entry_frame(entry))
                sent += 1
            if entries:
                last = entries[-1].seq
            if not more or self.closing:
                return last

    # -- hello ------------------------------------------------------------------------------

    async def hello(self, raw: str | bytes) -> bool:
        """Carry out the client's first frame; ``False`` when the connection is closing."""
        try:
            hello = wire.parse_hello(raw, self.limits.max_frame_bytes)
        except FrameRefused as refused:
            self._close(BAD_HELLO, f"{refused.refusal.code}: {refused.refusal.message}")
            return False
        guard = self.guard
        authenticates = not isinstance(hello, wire.UserHello) or hello.resume_token is not None
        if guard is not None and authenticates:
            wait = guard.locked_for(self.address)
            if wait > 0:
                self._close(
                    TOO_MANY,
                    f"too many failed authentications from this address; {retry_words(wait)}",
                )
                return False
        try:
            if isinstance(hello, wire.UserHello):
                return await self._user_hello(hello)
            if isinstance(hello, wire.AgentHello):
                return await self._agent_hello(hello)
            return self._bot_hello(hello)
        except StoreUnavailable as exc:
            # A resume or a catch-up could not read the store: a documented close, not a
            # connection that fails in the listener.
            log.error("a %s hello could not be carried out: %s", self.role or "new", exc)
            self._close(STORE_DOWN, "store_unavailable: the store cannot be read right now")
            return False

    async def _user_hello(self, hello: wire.UserHello) -> bool:
        board = self.board
        if hello.resume_token is None:
            bot_id = hello.bot_id or self.services.default_bot
            if bot_id not in board.bots:
                self._close(NOT_FOUND, f"unknown bot {bot_id[:64]!r}")
                return False
            wait = self.guard.new_conversation(self.address) if self.guard is not None else 0.0
            if wait > 0:
                self._close(
                    TOO_MANY, f"too many new conversations from this address; {retry_words(wait)}"
                )
                return False
            try:
                state = await board.open_conversation(bot_id, metadata=hello.metadata)
            except StoreUnavailable as exc:
                log.error("cannot open a conversation: %s", exc)
                self._close(STORE_DOWN, "store_unavailable: conversations cannot be kept right now")
                return False
            conversation_id = state.conversation_id
            after_seq: int | None = None
        else:
            try:
                grant = self.tokens.verify(hello.resume_token)
            except ExpiredToken:
                self._unauthorized("the resume token has expired")
                return False
            except InvalidToken:
                self._unauthorized("the resume token is not valid")
                return False
            conversation_id, bot_id = grant.conversation_id, grant.bot_id
            missing = bot_id not in board.bots or (
                not board.is_in_memory(conversation_id)
                and await board.store.load(conversation_id) is None
            )
            if missing:
                self._close(NOT_FOUND, "the conversation no longer exists")
                return False
            after_seq = hello.last_seq
        self.role = "user"
        self.conversation_id = conversation_id
        token = self.tokens.issue(conversation_id, bot_id)
        self._send(
            wire.welcome_frame(
                "user", conversation_id=conversation_id, resume_token=token, bot_id=bot_id
            )
        )
        numbered = board.numbered_up_to(conversation_id)
        if after_seq is not None and (numbered is None or after_seq < numbered):
            # The history comes from the store at the writer's pace; the conversation then
            # sends what was added meanwhile, and live traffic, with no gap or duplicate.
            # (A client that has seen all a conversation in memory numbered skips the read.)
            after_seq = await self._catch_up(conversation_id, after_seq, Party.USER, None)
        board.subscribe(conversation_id, self, after_seq)
        # The agent holding the chat sees whether the user is there, and since when.
        self.desk.user_attached(conversation_id)
        self._joined = partial(self._user_left, conversation_id)
        return not self.closing

    def _user_left(self, conversation_id: str) -> None:
        self.board.unsubscribe(conversation_id, self)
        self.desk.user_detached(conversation_id)

    async def _agent_hello(self, hello: wire.AgentHello) -> bool:
        agent_id = find_token(self.services.agent_tokens, hello.token)
        profile = self.desk.profiles.get(agent_id) if agent_id is not None else None
        if agent_id is None or profile is None:
            self._unauthorized("unknown agent token")
            return False
        self.role = "agent"
        self.agent_id = agent_id
        self._claims, self._transfers = OrderedDict(), OrderedDict()
        self._send(wire.welcome_frame("agent", agent_id=agent_id, name=profile.name))
        try:
            self.desk.attach(agent_id, self)
        except UnknownAgent:
            self._close(UNAUTHORIZED, "unknown agent")
            return False
        self._joined = partial(self.desk.detach, agent_id, self)
        for conversation_id, after_seq in hello.last_seqs.items():
            await self._catch_up(conversation_id, after_seq, Party.AGENT, agent_id)
        return not self.closing

    def _bot_hello(self, hello: wire.BotHello) -> bool:
        bot_id = find_token(self.services.bot_tokens, hello.token)
        if bot_id is None or bot_id not in self.board.bots:
            self._unauthorized("unknown bot token")
            return False
        self.role = "bot"
        self.bot_id = bot_id
        self._owned = OrderedDict()
        self._send(wire.welcome_frame("bot", bot_id=bot_id))
        registry = self.services.bot_connections
        registry.add(bot_id, self)
        self._joined = partial(registry.remove, bot_id, self)
        return True

    def _unauthorized(self, reason: str) -> None:
        """Refuse a credential (4401), and count it against the client's address."""
        if self.guard is not None:
            self.guard.failed(self.address)
        self._close(UNAUTHORIZED, reason)

    # -- every frame after the hello --------------------------------------------------------

    async def received(self, raw: str | bytes) -> None:
        """Carry out one frame. Only what must wait for the store or the connection (a
        bot's first push to a conversation, a replay, presence) awaits anything."""
        try:
            frame = wire.parse_frame(raw, self.role, self.limits.max_frame_bytes)
        except FrameRefused as refused:
            refusal = refused.refusal
            self._send(
                wire.error_frame(refusal.code, refusal.message, refused.id, refusal.conversation_id)
            )
            return
        try:
            await self._carry_out_frame(frame)
        except StoreUnavailable as exc:
            # A read for a replay or a bot's push failed: this frame is refused, the
            # connection goes on (bad luck with the store never closes it after hello).
            log.warning("a %s frame could not be read for: %s", self.role, exc)
            self._refuse_frame(
                "store_unavailable", "The store cannot be read right now.", frame.id, frame
            )
        except Exception:
            log.exception("a %s frame could not be handled", self.role)
            self._refuse_frame("internal_error", "The frame could not be handled.", frame.id, frame)

    async def _carry_out_frame(self, frame: wire.Frame) -> None:
        if isinstance(frame, wire.BotPush) and not await self._owns(frame.conversation_id):
            self._refuse_frame("forbidden", "Not a conversation of this bot.", frame.id, frame)
            return
        if isinstance(frame, wire.ReplayAfter):
            await self._catch_up(frame.conversation_id, frame.after_seq, Party.AGENT, self._agent())
            self._ack(frame.id, None)  # after the entries: the replay is complete
            return
        if isinstance(frame, wire.SetPresence):
            await self._set_presence(frame)
            return
        self._dispatch(frame)

    def _refuse_frame(
        self, code: str, message: str, frame_id: FrameId | None, frame: object
    ) -> None:
        conversation_id = getattr(frame, "conversation_id", None)
        self._send(wire.error_frame(code, message, frame_id, conversation_id))

    def _dispatch(self, frame: wire.Frame) -> None:
        if isinstance(frame, wire.Say):
            if self.role == "user":
                self._user_submit(frame.id, frame.conversation_id, UserSays(frame.content))
            else:
                self._agent_submit(frame.id, frame.conversation_id, frame.content)
        elif isinstance(frame, wire.Ping):
            self._send(wire.pong_frame(frame.id))
        elif isinstance(frame, wire.TypingNow):
            if self.role == "user":
                self._user_submit(frame.id, frame.conversation_id, UserTyping(), quiet=True)
            else:
                self._agent_event(frame, AgentTyping(self._agent()), quiet=True)
        elif isinstance(frame, wire.BotPush):
            self._submit_event(frame.id, frame.conversation_id, BotSays(frame.contents))
        elif isinstance(frame, wire.EventAck):
            self._event_acked(frame)
        else:
            self._agent_frame(frame)

    def _event_acked(self, frame: wire.EventAck) -> None:
        """The bot has the event: its delivery is complete, on whichever of the bot's
        connections it was sent. An id that awaits no acknowledgement of this bot (already
        acknowledged, never sent, another bot's) changes nothing; either way a frame id is
        answered with an ack, so acknowledging twice is harmless."""
        assert self.bot_id is not None
        self.services.bot_connections.acknowledge(self.bot_id, frame.event_id)
        self._ack(frame.id, None)

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
        elif isinstance(frame, wire.EndSession):
            self._agent_event(frame, AgentEndsSession(None, agent_id, AGENT_CLOSED))
        elif isinstance(frame, wire.Transfer):
            if self._agent_event(frame, AgentTransfers(agent_id, frame.to_agent)):
                _remember_pending(self._transfers, frame.conversation_id, frame.id)
        elif isinstance(frame, wire.Claim):
            self._claim(agent_id, frame)

    def _claim(self, agent_id: str, frame: wire.Claim) -> None:
        """Ask the desk for a waiting chat; a second claim of the same chat is refused while
        the first waits for its answer (so each answer carries its own claim's id)."""
        conversation_id = frame.conversation_id
        claims = self._claims
        if conversation_id in claims and self.desk.holds(agent_id, conversation_id):
            del claims[conversation_id]  # the earlier claim succeeded
        if conversation_id in claims:
            self._send(
                wire.error_frame(
                    "cannot_claim",
                    "An earlier claim of this chat is still waiting for its answer.",
                    frame.id,
                    conversation_id,
                )
            )
            return
        _remember_pending(claims, conversation_id, frame.id)
        self.desk.claim(agent_id, conversation_id)
        self._ack(frame.id, None)

    def _ack(self, frame_id: FrameId | None, seq: int | None) -> None:
        if frame_id is not None:
            self._send(wire.ack_frame(frame_id, seq))

    def _user_submit(
        self, frame_id: FrameId | None, named: str | None, event: Event, *, quiet: bool = False
    ) -> None:
        own = self.conversation_id
        assert own is not None
        if named is not None and named != own:
            self._send(
                wire.error_frame("forbidden", "That is not your conversation.", frame_id, named)
            )
            return
        self._submit_event(frame_id, own, event, quiet=quiet)

    def _agent_submit(
        self, frame_id: FrameId | None, conversation_id: str | None, content: Content
    ) -> None:
        assert conversation_id is not None
        if not self.desk.holds(self._agent(), conversation_id):
            self._not_assigned(frame_id, conversation_id)
            return
        self._submit_event(frame_id, conversation_id, AgentSays(self._agent(), content))

    def _agent_event(self, frame: wire.Frame, event: Event, *, quiet: bool = False) -> bool:
        conversation_id = getattr(frame, "conversation_id", None)
        assert isinstance(conversation_id, str)
        if not self.desk.holds(self._agent(), conversation_id):
            self._not_assigned(frame.id, conversation_id)
            return False
        self._submit_event(frame.id, conversation_id, event, quiet=quiet)
        return True

    def _not_assigned(self, frame_id: FrameId | None, conversation_id: str) -> None:
        self._send(
            wire.error_frame(
                "not_assigned", "You do not hold this chat.", frame_id, conversation_id
            )
        )

    def _submit_event(
        self, frame_id: FrameId | None, conversation_id: str, event: Event, *, quiet: bool = False
    ) -> None:
        """Hand ``event`` to its conversation; the outcome comes back to :meth:`_send_outcome`.
        ``quiet`` events (typing) report only refusals. A frame with an id is answered with
        the seq of what it wrote, so that entry is not sent back here as well."""
        reply = partial(self._send_outcome, None if quiet else frame_id, conversation_id)
        origin = self if frame_id is not None and not quiet else None
        try:
            self.board.submit(
                conversation_id,
                event,
                reply,
                origin=origin,
                message_id=None if origin is None else self._message_key(frame_id),
            )
        except Overloaded:
            self._send(
                wire.error_frame(
                    "overloaded",
                    "The conversation is busy; try again shortly.",
                    frame_id,
                    conversation_id,
                )
            )

    def _message_key(self, frame_id: FrameId | None) -> str:
        """The conversation remembers message ids per sender: a user, one agent, one bot.
        ``repr`` keeps the integer 7 and the string "7" apart."""
        if self.role == "agent":
            return f"agent:{self.agent_id}:{frame_id!r}"
        return f"{self.role}:{frame_id!r}"

    def _send_outcome(
        self, frame_id: FrameId | None, conversation_id: str, outcome: Outcome
    ) -> None:
        if isinstance(outcome, Refusal):
            if frame_id is not None and self._transfers.get(conversation_id) == frame_id:
                del self._transfers[conversation_id]  # the conversation refused the transfer
            self._send(wire.error_frame(outcome.code, outcome.message, frame_id, conversation_id))
        elif frame_id is not None:
            self._send(wire.ack_frame(frame_id, outcome.seq))

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


def _remember_pending(
    pending: OrderedDict[str, FrameId | None], conversation_id: str, frame_id: FrameId | None
) -> None:
    """Keep a claim's or transfer's id so that a later refusal from the desk carries it."""
    pending[conversation_id] = frame_id
    pending.move_to_end(conversation_id)
    if len(pending) > _PENDING_LIMIT:
        pending.popitem(last=False)


__all__ = [
    "BAD_HELLO",
    "GOING_AWAY",
    "INTERNAL_ERROR",
    "NOT_FOUND",
    "STORE_DOWN",
    "TOO_MANY",
    "TOO_SLOW",
    "UNAUTHORIZED",
    "Close",
    "Drained",
    "PagedEntries",
    "Peer",
    "PresenceLog",
    "Send",
]
