"""Events that drive a conversation's lifecycle.

Small frozen classes, one per thing that can happen to a conversation, whoever causes it: the
user, the bot, an agent, the livechat backend (queue positions, assignments) or the clock.
The lifecycle (:mod:`actors.machines.lifecycle`) takes one of these and the current time
and says what must happen; nothing here does any I/O.
"""

from __future__ import annotations

import attrs

from actors.model.content import Content


@attrs.frozen
class UserSays:
    """The user sent something: text, a button payload, an attachment, any content."""

    content: Content


@attrs.frozen
class UserTyping:
    """The user is typing. Passed to the agent during a session; never resets the timer."""


@attrs.frozen
class BotSays:
    """The bot sent messages for the user (a reply to an event, or a later push)."""

    contents: tuple[Content, ...]


@attrs.frozen
class BotUnavailable:
    """Delivering an event to the bot failed after every retry."""

    detail: str


@attrs.frozen
class AgentSays:
    """An agent wrote to the user. Text ending with LIVECHAT_SESSION_END also signs off."""

    agent_id: str
    content: Content


@attrs.frozen
class AgentSignsOff:
    """The agent's one-click sign-off: the user is offered the end button."""

    agent_id: str


@attrs.frozen
class AgentTyping:
    agent_id: str


@attrs.frozen
class AgentTransfers:
    """The agent hands the chat to another agent, or back to the queue when ``to_agent`` is
    ``None``."""

    agent_id: str
    to_agent: str | None


@attrs.frozen
class QueuePositionChanged:
    """From the livechat backend: the session's place in the queue (1 is next), the
    estimated wait in seconds and whether any agent is online (``None``: not known)."""

    session_id: str
    position: int
    estimated_wait: float | None = None
    agents_available: bool | None = None


@attrs.frozen
class AgentAssigned:
    """From the livechat backend: an agent now holds the session (on pickup or transfer).
    ``decision`` is the backend's stamp on it (see :data:`actors.model.agent_request.Decision`)."""

    session_id: str
    agent_id: str
    agent_name: str = ""
    decision: tuple[int, int] = attrs.field(default=(0, 0), eq=False)


@attrs.frozen
class ReturnedToQueue:
    """From the livechat backend: the agent no longer holds the session and it waits again at
    the head of the queue (the agent's grace period ran out, or the agent sent it back)."""

    session_id: str
    agent_id: str
    reason: str
    decision: tuple[int, int] = attrs.field(default=(0, 0), eq=False)


@attrs.frozen
class TransferFailed:
    session_id: str
    agent_id: str
    reason: str


@attrs.frozen
class AgentEndsSession:
    """The human side closed the session: an agent of the desk ended the chat it holds, or a
    platform resolved or closed its ticket. ``session_id`` names the session (``None``: the
    open one, which ``agent_id`` must hold); ``agent_id`` is who held it, ``None`` when no
    agent had joined yet. The bot hears ``LIVECHAT_SESSION_END`` with ``reason``."""

    session_id: str | None
    agent_id: str | None
    reason: str = "agent_closed"


@attrs.frozen
class LivechatUnreachable:
    """From the livechat backend: the human side cannot be reached for this session (a
    platform keeps failing). The user is told once; what they write is kept and passed on
    when the platform answers again."""

    session_id: str


@attrs.frozen
class TimerFired:
    """The conversation's deadline passed. The lifecycle checks which deadline, if any,
    really has: activity may have moved it since it was armed."""


Event = (
    UserSays
    | UserTyping
    | BotSays
    | BotUnavailable
    | AgentSays
    | AgentSignsOff
    | AgentTyping
    | AgentTransfers
    | QueuePositionChanged
    | AgentAssigned
    | ReturnedToQueue
    | TransferFailed
    | AgentEndsSession
    | LivechatUnreachable
    | TimerFired
)
