"""The conversation lifecycle: one pure state machine owns every transition.

A conversation is in one of three modes:

* ``BOT``: the default. User events go to the bot, bot messages go to the user.
* ``QUEUED``: the user sent ``LIVECHAT_SESSION_START``; a session is open and waits for an
  agent. The bot receives nothing.
* ``LIVE``: an agent holds the session. User and agent talk; the bot still receives nothing.

:meth:`Lifecycle.handle` takes the current :class:`ConversationState`, one event and the time,
and returns a :class:`Transition`: the next state, the effects to carry out in order, and the
outcome to report to whoever sent the event. It reads no clock and does no I/O, which is what
lets the hypothesis tests drive it through millions of interleavings, and what lets the trio
actor around it stay thin.

Times are wall-clock seconds supplied by the caller. The session's deadline is derived from
the state (``last_activity + session_timeout``, and the queue timeout while waiting), so
activity only has to move a timestamp: the actor re-arms its timer lazily, when it fires.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from actors.model import effects as fx
from actors.model import events as ev
from actors.model.content import (
    PAYLOAD,
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    Content,
    split_sign_off,
)
from actors.model.records import Entry, Party
from actors.model.settings import BotSettings
from actors.model.state import ConversationState, Mode, Session, deadline

USER_ENDED = "user_ended"
IDLE_TIMEOUT = "idle_timeout"
QUEUE_TIMEOUT = "queue_timeout"
AGENT_CLOSED = "agent_closed"

_TYPING = Content("typing")
_USER = frozenset({Party.USER})
_AGENT = frozenset({Party.AGENT})
_USER_AND_AGENT = frozenset({Party.USER, Party.AGENT})
_USER_AND_BOT = frozenset({Party.USER, Party.BOT})
_BOT = frozenset({Party.BOT})


@attrs.frozen
class Transition:
    state: ConversationState
    effects: tuple[fx.Effect, ...] = ()
    outcome: fx.Outcome = fx.Accepted()


class _Keep(enum.Enum):
    """Marks "leave the session as it is" in :meth:`_Builder.finish`."""

    SESSION = enum.auto()


class _Builder:
    """Collects the effects of one transition and numbers the entries it emits."""

    __slots__ = ("effects", "next_seq", "now", "state")

    def __init__(self, state: ConversationState, now: float) -> None:
        self.state = state
        self.now = now
        self.next_seq = state.next_seq
        self.effects: list[fx.Effect] = []

    def emit(
        self,
        sender: Party,
        content: Content,
        audience: frozenset[Party],
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        session = self.state.session
        self.effects.append(
            fx.Emit(
                Entry(
                    self.state.conversation_id,
                    seq,
                    self.now,
                    sender,
                    content,
                    audience,
                    agent_id,
                    session.session_id if session is not None else None,
                    metadata or {},
                )
            )
        )
        return seq

    def finish(
        self,
        session: Session | _Keep | None = _Keep.SESSION,
        outcome: fx.Outcome | None = None,
        sessions_opened: int | None = None,
    ) -> Transition:
        old = self.state
        state = _evolve_state(
            old,
            self.next_seq,
            old.session if isinstance(session, _Keep) else session,
            old.sessions_opened if sessions_opened is None else sessions_opened,
        )
        return Transition(state, tuple(self.effects), outcome or fx.Accepted())


def _evolve_state(
    state: ConversationState, next_seq: int, session: Session | None, sessions_opened: int
) -> ConversationState:
    """``attrs.evolve(state, next_seq=..., session=..., sessions_opened=...)`` built by the
    constructor: every message makes one, and evolve costs several times more
    (bench/README.md, 2026-12-03)."""
    return ConversationState(
        state.conversation_id,
        state.bot_id,
        state.user_id,
        state.user_metadata,
        next_seq,
        session,
        sessions_opened,
    )


def _touched(session: Session, now: float, sign_off_offered: bool) -> Session:
    """``attrs.evolve(session, last_activity=now, sign_off_offered=...)`` built by the
    constructor: the session after each message between user and agent (bench/README.md,
    2026-12-03)."""
    return Session(
        session.session_id,
        session.started_at,
        now,
        session.queued_at,
        session.agent_id,
        session.agent_name,
        sign_off_offered,
    )


def _live_message(
    state: ConversationState,
    session: Session,
    sender: Party,
    content: Content,
    agent_id: str,
    now: float,
) -> Transition:
    """A message between the user and the agent of a live session: one entry for both, the
    session touched. The transition :class:`_Builder` makes, built directly: it is most of what
    a live conversation does (bench/README.md, Core, 2026-11-25, throughput)."""
    seq = state.next_seq
    entry = Entry(
        state.conversation_id,
        seq,
        now,
        sender,
        content,
        _USER_AND_AGENT,
        agent_id,
        session.session_id,
        {},
    )
    after = _evolve_state(state, seq + 1, _touched(session, now, False), state.sessions_opened)
    return Transition(after, (fx.Emit(entry),), fx.Accepted(seq))


def _refused(state: ConversationState, code: str, message: str) -> Transition:
    return Transition(state, (), fx.Refusal(code, message))


def _withdraw_stale(
    state: ConversationState,
    event: ev.QueuePositionChanged | ev.ReturnedToQueue,
    now: float,
) -> Transition:
    """The backend speaks of a session that is no longer the open one (it ended while the
    backend was queueing it or sending it back): it withdraws that session, or it would keep
    a waiting entry for it."""
    return Transition(state, (fx.WithdrawRequest(event.session_id),))


def _release_stale(state: ConversationState, event: ev.AgentAssigned, now: float) -> Transition:
    """An agent was assigned a session that ended (or is another one) meanwhile."""
    release = fx.ReleaseAgent(event.session_id, event.agent_id, "stale_assignment")
    return Transition(state, (release,))


@attrs.frozen
class Ignore:
    """Table entry: the event changes nothing in this mode (it is stale, or ephemeral)."""

    def __call__(self, state: ConversationState, event: ev.Event, now: float) -> Transition:
        return Transition(state)


@attrs.frozen
class Refuse:
    """Table entry: the event is answered in this mode with a refusal of ``code``."""

    code: str
    message: str

    def __call__(self, state: ConversationState, event: ev.Event, now: float) -> Transition:
        return _refused(state, self.code, self.message)


IGNORE = Ignore()
NOT_ASSIGNED = Refuse("not_assigned", "That agent does not hold this conversation.")
SESSION_OPEN = Refuse(
    "session_open",
    "A livechat session is open: a human agent has this conversation, so bot messages are "
    "not shown until the session ends.",
)

Handler = Callable[[ConversationState, Any, float], Transition]


class Lifecycle:
    """The transitions of one bot's conversations, under that bot's settings.

    :attr:`table` says, for each mode and each event type, what happens: a handler, ``IGNORE``
    or a ``Refuse``. It is the one place that decides what a mode accepts; the handlers then
    check only what the mode does not settle (whose session, which agent).
    """

    def __init__(self, settings: BotSettings) -> None:
        self.settings = settings
        user_says_in_session = self._user_says_in_session
        self.table: dict[Mode, dict[type[Any], Handler]] = {
            Mode.BOT: {
                ev.UserSays: self._user_says_to_bot,
                ev.UserTyping: IGNORE,
                ev.BotSays: self._bot_says,
                ev.BotUnavailable: self._bot_unavailable,
                ev.AgentSays: NOT_ASSIGNED,
                ev.AgentSignsOff: NOT_ASSIGNED,
                ev.AgentTyping: IGNORE,
                ev.AgentTransfers: NOT_ASSIGNED,
                ev.QueuePositionChanged: _withdraw_stale,
                ev.AgentAssigned: _release_stale,
                ev.ReturnedToQueue: _withdraw_stale,
                ev.TransferFailed: IGNORE,
                ev.AgentEndsSession: IGNORE,
                ev.LivechatUnreachable: IGNORE,
                ev.TimerFired: IGNORE,
            },
            Mode.QUEUED: {
                ev.UserSays: user_says_in_session,
                ev.UserTyping: IGNORE,
                ev.BotSays: SESSION_OPEN,
                ev.BotUnavailable: IGNORE,
                ev.AgentSays: NOT_ASSIGNED,
                ev.AgentSignsOff: NOT_ASSIGNED,
                ev.AgentTyping: IGNORE,
                ev.AgentTransfers: NOT_ASSIGNED,
                ev.QueuePositionChanged: self._queue_position,
                ev.AgentAssigned: self._agent_assigned,
                ev.ReturnedToQueue: self._returned_to_queue,
                ev.TransferFailed: IGNORE,
                ev.AgentEndsSession: self._agent_ends_session,
                ev.LivechatUnreachable: self._livechat_unreachable,
                ev.TimerFired: self._timer_fired,
            },
            Mode.LIVE: {
                ev.UserSays: user_says_in_session,
                ev.UserTyping: self._user_typing,
                ev.BotSays: SESSION_OPEN,
                ev.BotUnavailable: IGNORE,
                ev.AgentSays: self._agent_says,
                ev.AgentSignsOff: self._agent_signs_off,
                ev.AgentTyping: self._agent_typing,
                ev.AgentTransfers: self._agent_transfers,
                ev.QueuePositionChanged: self._queue_position,
                ev.AgentAssigned: self._agent_assigned,
                ev.ReturnedToQueue: self._returned_to_queue,
                ev.TransferFailed: IGNORE,
                ev.AgentEndsSession: self._agent_ends_session,
                ev.LivechatUnreachable: self._livechat_unreachable,
                ev.TimerFired: self._timer_fired,
            },
        }
        self._bot = self.table[Mode.BOT]
        self._queued = self.table[Mode.QUEUED]
        self._live = self.table[Mode.LIVE]

    def deadline(self, state: ConversationState) -> float | None:
        return deadline(state, self.settings)

    def handle(self, state: ConversationState, event: ev.Event, now: float) -> Transition:
        session = state.session
        if session is None:
            table = self._bot
        else:
            table = self._queued if session.agent_id is None else self._live
        return table[type(event)](state, event, now)

    # -- the user ---------------------------------------------------------------------------

    def _user_says_to_bot(
        self, state: ConversationState, event: ev.UserSays, now: float
    ) -> Transition:
        out = _Builder(state, now)
        if event.content.is_payload(SESSION_START):
            return self._open_session(out, event.content)
        seq = out.emit(Party.USER, event.content, _USER_AND_BOT)
        return out.finish(outcome=fx.Accepted(seq))

    def _user_says_in_session(
        self, state: ConversationState, event: ev.UserSays, now: float
    ) -> Transition:
        content = event.content
        session = state.session
        assert session is not None
        if session.agent_id is not None and content.content_type != PAYLOAD:
            # Live, and neither payload that opens or ends a session: the hot path.
            return _live_message(state, session, Party.USER, content, session.agent_id, now)
        out = _Builder(state, now)
        if content.is_payload(SESSION_END):
            return self._end_session(out, USER_ENDED, content)
        if content.is_payload(SESSION_START):
            return _refused(state, "session_already_open", "A livechat session is already open.")
        touched = _touched(session, now, sign_off_offered=False)
        if session.agent_id is None:
            # No agent yet: the backend passes it on (a platform) or keeps it for the
            # transcript at pickup (the desk).
            seq = out.emit(Party.USER, content, _USER_AND_AGENT, metadata={"queued": True})
        else:
            seq = out.emit(Party.USER, content, _USER_AND_AGENT, agent_id=session.agent_id)
        return out.finish(touched, fx.Accepted(seq))

    def _open_session(self, out: _Builder, content: Content) -> Transition:
        state, now = out.state, out.now
        opened = state.sessions_opened + 1
        session = Session(f"{state.conversation_id}/{opened}", now, now, queued_at=now)
        out.state = attrs.evolve(state, session=session)
        seq = out.emit(Party.USER, content, _USER)
        out.emit(Party.SYSTEM, Content.notice("session_started"), _USER)
        out.effects.append(fx.RequestAgent(session.session_id, now))
        return out.finish(session, fx.Accepted(seq), sessions_opened=opened)

    def _user_typing(
        self, state: ConversationState, event: ev.UserTyping, now: float
    ) -> Transition:
        session = state.session
        assert session is not None and session.agent_id is not None
        return Transition(state, (fx.Signal(Party.AGENT, _TYPING, session.agent_id),))

    # -- the bot ----------------------------------------------------------------------------

    def _bot_says(self, state: ConversationState, event: ev.BotSays, now: float) -> Transition:
        out = _Builder(state, now)
        seq = None
        for content in event.contents:
            seq = out.emit(Party.BOT, content, _USER)
        return out.finish(outcome=fx.Accepted(seq))

    def _bot_unavailable(
        self, state: ConversationState, event: ev.BotUnavailable, now: float
    ) -> Transition:
        out = _Builder(state, now)
        out.emit(
            Party.SYSTEM,
            Content.text(self.settings.unavailable_message),
            _USER,
            metadata={"code": "bot_unavailable"},
        )
        return out.finish()

    # -- agents -----------------------------------------------------------------------------

    def _holding(self, state: ConversationState, agent_id: str) -> Session | Transition:
        session = state.session
        if session is None or session.agent_id != agent_id:
            return _refused(
                state,
                "not_assigned",
                f"Agent {agent_id!r} does not hold conversation {state.conversation_id!r}.",
            )
        return session

    def _agent_says(self, state: ConversationState, event: ev.AgentSays, now: float) -> Transition:
        session = self._holding(state, event.agent_id)
        if isinstance(session, Transition):
            return session
        message, signs_off = split_sign_off(event.content)
        if not signs_off and message is not None:
            return _live_message(state, session, Party.AGENT, message, event.agent_id, now)
        out = _Builder(state, now)
        seq = None
        if message is not None:
            seq = out.emit(Party.AGENT, message, _USER_AND_AGENT, agent_id=event.agent_id)
        if signs_off:
            seq = self._offer_end(out, event.agent_id)
        return out.finish(_touched(session, now, signs_off), fx.Accepted(seq))

    def _offer_end(self, out: _Builder, agent_id: str) -> int:
        settings = self.settings
        return out.emit(
            Party.SYSTEM,
            Content.question(settings.end_message, [(settings.end_button_label, SESSION_END)]),
            _USER_AND_AGENT,
            agent_id=agent_id,
            metadata={"sign_off": True},
        )

    def _agent_signs_off(
        self, state: ConversationState, event: ev.AgentSignsOff, now: float
    ) -> Transition:
        session = self._holding(state, event.agent_id)
        if isinstance(session, Transition):
            return session
        out = _Builder(state, now)
        seq = self._offer_end(out, event.agent_id)
        return out.finish(_touched(session, now, True), fx.Accepted(seq))

    def _agent_typing(
        self, state: ConversationState, event: ev.AgentTyping, now: float
    ) -> Transition:
        session = state.session
        if session is None or session.agent_id != event.agent_id:
            return Transition(state)
        return Transition(state, (fx.Signal(Party.USER, _TYPING, event.agent_id),))

    def _agent_transfers(
        self, state: ConversationState, event: ev.AgentTransfers, now: float
    ) -> Transition:
        session = self._holding(state, event.agent_id)
        if isinstance(session, Transition):
            return session
        if event.to_agent == event.agent_id:
            return _refused(state, "transfer_failed", "A chat cannot be transferred to its holder.")
        return Transition(
            state, (fx.TransferChat(session.session_id, event.agent_id, event.to_agent),)
        )

    # -- the livechat backend ---------------------------------------------------------------

    def _queue_position(
        self, state: ConversationState, event: ev.QueuePositionChanged, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        if session.session_id != event.session_id:
            return _withdraw_stale(state, event, now)
        if session.agent_id is not None:
            return Transition(state)
        # Not stored: a pickup moves every waiting user, and the backend reports only changes.
        told = fx.TellPosition(
            session.session_id, event.position, event.estimated_wait, event.agents_available
        )
        return Transition(state, (told,))

    def _agent_assigned(
        self, state: ConversationState, event: ev.AgentAssigned, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        if session.session_id != event.session_id:
            return _release_stale(state, event, now)
        if session.agent_id == event.agent_id:
            return Transition(state)
        out = _Builder(state, now)
        previous = session.agent_id
        if previous is not None:
            out.emit(
                Party.SYSTEM,
                Content.notice("transferred", to_agent=event.agent_id, to_name=event.agent_name),
                _AGENT,
                agent_id=previous,
            )
        joined = Content.notice("agent_joined", agent_id=event.agent_id, name=event.agent_name)
        out.emit(Party.SYSTEM, joined, _USER_AND_AGENT, agent_id=event.agent_id)
        out.effects.append(fx.ShareTranscript(session.session_id, event.agent_id))
        live = attrs.evolve(
            session,
            agent_id=event.agent_id,
            agent_name=event.agent_name,
            queued_at=None,
        )
        return out.finish(live)

    def _returned_to_queue(
        self, state: ConversationState, event: ev.ReturnedToQueue, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        if session.session_id != event.session_id:
            return _withdraw_stale(state, event, now)
        if session.agent_id != event.agent_id:
            return Transition(state)
        out = _Builder(state, now)
        left = Content.notice(
            "agent_left", agent_id=event.agent_id, name=session.agent_name, reason=event.reason
        )
        out.emit(Party.SYSTEM, left, _USER_AND_AGENT, agent_id=event.agent_id)
        waiting = attrs.evolve(
            session,
            agent_id=None,
            agent_name="",
            queued_at=now,
            sign_off_offered=False,
        )
        return out.finish(waiting)

    def _agent_ends_session(
        self, state: ConversationState, event: ev.AgentEndsSession, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        named = event.session_id
        if (
            (named is not None and session.session_id != named)
            or (event.agent_id is not None and session.agent_id != event.agent_id)
            or (named is None and event.agent_id is None)
        ):
            return _refused(
                state,
                "not_assigned",
                f"Session {named or session.session_id!r} is not open with that agent.",
            )
        return self._end_session(_Builder(state, now), event.reason, expired=False)

    def _livechat_unreachable(
        self, state: ConversationState, event: ev.LivechatUnreachable, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        if session.session_id != event.session_id:
            return Transition(state)
        out = _Builder(state, now)
        out.emit(Party.SYSTEM, Content.notice("livechat_unreachable"), _USER)
        return out.finish()

    # -- the clock --------------------------------------------------------------------------

    def _timer_fired(
        self, state: ConversationState, event: ev.TimerFired, now: float
    ) -> Transition:
        session = state.session
        assert session is not None
        settings = self.settings
        out = _Builder(state, now)
        if (
            session.queued_at is not None
            and settings.queue_timeout is not None
            and now >= session.queued_at + settings.queue_timeout
        ):
            return self._end_session(out, QUEUE_TIMEOUT)
        if now >= session.last_activity + settings.session_timeout:
            return self._end_session(out, IDLE_TIMEOUT)
        return Transition(state)

    # -- ending -----------------------------------------------------------------------------

    def _end_session(
        self,
        out: _Builder,
        reason: str,
        by_user: Content | None = None,
        *,
        expired: bool | None = None,
    ) -> Transition:
        """End the open session: ``by_user`` is the user's own ending, if it is one;
        a session ends as expired when neither the user nor the human side ended it."""
        session = out.state.session
        assert session is not None
        if expired is None:
            expired = by_user is None
        code = "session_expired" if expired else "session_ended"
        agent_id = session.agent_id
        # Both pages name the agent the user was talking to in the line that ends it.
        named = {"name": session.agent_name} if agent_id is not None and session.agent_name else {}
        seq = None
        if by_user is not None:
            seq = out.emit(Party.USER, by_user, _USER)
        if agent_id is None:
            out.effects.append(fx.WithdrawRequest(session.session_id))
        else:
            out.emit(
                Party.SYSTEM,
                Content.notice(code, reason=reason, **named),
                _AGENT,
                agent_id=agent_id,
            )
            out.effects.append(fx.ReleaseAgent(session.session_id, agent_id, reason))
        out.emit(Party.SYSTEM, Content.notice(code, reason=reason, **named), _USER)
        payload = SESSION_EXPIRED if expired else SESSION_END
        out.emit(
            Party.SYSTEM,
            Content.payload(payload),
            _BOT,
            metadata={"reason": reason, "session_id": session.session_id, "agent_id": agent_id},
        )
        return out.finish(None, fx.Accepted(seq))


def wrote(event: ev.Event, entry: Entry) -> bool:
    """Whether ``entry`` is what ``event`` wrote: the entry its ``Accepted`` seq named, as
    the handlers above make it. A resend whose first answer is known only from the log (the
    conversation restarted) is compared with it, so an id reused for another message is
    still taken as new, as it is against an event remembered in memory."""
    if isinstance(event, ev.UserSays):
        return entry.sender is Party.USER and entry.content == event.content
    if isinstance(event, ev.AgentSays):
        message, signs_off = split_sign_off(event.content)
        if signs_off:
            return entry.agent_id == event.agent_id and bool(entry.metadata.get("sign_off"))
        return (
            entry.sender is Party.AGENT
            and entry.agent_id == event.agent_id
            and entry.content == message
        )
    if isinstance(event, ev.BotSays):
        contents = event.contents
        return entry.sender is Party.BOT and bool(contents) and entry.content == contents[-1]
    if isinstance(event, ev.AgentSignsOff):
        return entry.agent_id == event.agent_id and bool(entry.metadata.get("sign_off"))
    # No other event is answered with the seq of an entry it wrote.
    return False
