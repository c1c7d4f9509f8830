"""What the core hands out: events to bots, and what clients are told besides numbered
entries (typing, queue positions, an agent's transcript and desk view, refusals)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from actors.model.content import Content
from actors.model.effects import Refusal
from actors.model.records import Entry, Party
from actors.model.settings import CannedResponse


@attrs.frozen
class BotEvent:
    """One event a bot must see. ``event_id`` is stable across retries, so a bot can
    de-duplicate a delivery it has already handled. ``sender`` says who it comes from: a
    ``LIVECHAT_SESSION_END`` from :attr:`Party.SYSTEM` is a real session ending, the same
    payload from :attr:`Party.USER` is only something the user typed or clicked."""

    event_id: str
    conversation_id: str
    bot_id: str
    user_id: str
    content: Content
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    sender: Party = Party.USER


@attrs.frozen
class Typing:
    """Someone in the conversation is typing (ephemeral: not numbered, not stored)."""

    conversation_id: str
    party: Party
    agent_id: str | None = None


@attrs.frozen
class QueuePosition:
    """The user's place in the queue (1 is next): ephemeral like typing, not numbered and not
    stored, since every pickup moves every waiting user. A client that (re)connects while
    waiting is told the latest one."""

    conversation_id: str
    session_id: str
    position: int
    #: Seconds the user may still wait, from the pace of recent pickups; ``None``: unknown.
    estimated_wait: float | None = None
    #: Whether any agent serving the bot is online; ``None``: the backend does not say.
    agents_available: bool | None = None


@attrs.frozen
class Transcript:
    """What an agent sees on pickup: the conversation so far and who the user is.
    ``truncated``: only the latest entries are here; earlier ones come with ``replay``."""

    conversation_id: str
    session_id: str
    bot_id: str
    user_id: str
    user_metadata: Mapping[str, Any]
    entries: tuple[Entry, ...]
    truncated: bool = False


@attrs.frozen
class WaitingItem:
    """A session in the queue. ``user_name``: the name (or e-mail) the user gave, if any;
    ``last_message``: a short summary of what the user last wrote while waiting, and when."""

    conversation_id: str
    bot_id: str
    queued_at: float
    position: int
    user_name: str = ""
    last_message: str = ""
    last_message_at: float | None = None


@attrs.frozen
class HeldChat:
    """A chat an agent holds. ``user_connected``: whether a client of the user is connected
    to the conversation now; ``user_since``: since when it is (or since when it is not;
    ``None`` when the desk has not seen the user come or go since it started)."""

    conversation_id: str
    session_id: str
    bot_id: str
    grace_until: float | None
    user_connected: bool = False
    user_since: float | None = None


@attrs.frozen
class Colleague:
    """Another agent serving one of the same bots, as a transfer target: ``presence`` is
    "offline" while none of its clients is connected, whatever it last chose, since only a
    connected agent can take a chat."""

    agent_id: str
    name: str
    presence: str
    free_slots: int


@attrs.frozen
class DeskStatus:
    """An agent's view of the desk: presence, the chats it holds, the waiting queue of the
    bots it serves, and its colleagues (agents sharing one of those bots, who a chat can be
    transferred to), and the canned responses of each of its bots. Sent whenever any of it
    changes."""

    agent_id: str
    name: str
    presence: str
    capacity: int
    chats: tuple[HeldChat, ...]
    queue: tuple[WaitingItem, ...]
    colleagues: tuple[Colleague, ...] = ()
    canned_responses: Mapping[str, tuple[CannedResponse, ...]] = attrs.field(factory=dict)
    #: Seconds the agent keeps its chats once its last connection drops (the shortest grace
    #: period among its bots), so a desk can say how long it has to reconnect.
    grace_period: float | None = None


Delivery = Entry | Typing | QueuePosition | Transcript | Refusal | DeskStatus
"""What a :class:`actors.ports.Sink` is handed. A :class:`Refusal` here names its
conversation: it answers a request an agent made to the desk (a claim, a transfer)."""
