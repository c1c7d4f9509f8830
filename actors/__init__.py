"""Switchover's core: conversations, their livechat lifecycle, and the agent desk.

Nothing here opens a socket. Embed it by opening a switchboard with your bots, then submit
what users and agents do and subscribe sinks to hear what they are told::

    async with open_switchboard({"demo": BotBinding(MyBot())}) as board:
        state = await board.open_conversation("demo")
        board.subscribe(state.conversation_id, my_sink)
        await board.ask(state.conversation_id, UserSays(Content.text("hi")))

See docs/embedding.md for a complete, runnable example.
"""

from actors.machines.lifecycle import (
    AGENT_CLOSED,
    IDLE_TIMEOUT,
    QUEUE_TIMEOUT,
    USER_ENDED,
    Lifecycle,
)
from actors.machines.routing import Presence
from actors.memory_store import MemoryStore
from actors.model.agent_request import AgentRequest
from actors.model.content import SESSION_END, SESSION_EXPIRED, SESSION_START, Content
from actors.model.deliveries import (
    BotEvent,
    Colleague,
    Delivery,
    DeskStatus,
    QueuePosition,
    Transcript,
    Typing,
)
from actors.model.effects import Accepted, Outcome, Refusal
from actors.model.events import (
    AgentEndsSession,
    AgentSays,
    AgentSignsOff,
    AgentTransfers,
    AgentTyping,
    BotSays,
    Event,
    UserSays,
    UserTyping,
)
from actors.model.limits import ConversationLimits
from actors.model.records import Entry, Party
from actors.model.settings import BotSettings
from actors.model.state import ConversationState, Mode
from actors.ports import Bot, CoreLink, LivechatBackend, Sink, Store, StoreUnavailable
from actors.trio.clock import Clock
from actors.trio.desk import AgentProfile, Desk, UnknownAgent
from actors.trio.supervision import RestartPolicy
from actors.trio.switchboard import (
    BotBinding,
    Overloaded,
    Switchboard,
    UnknownBot,
    open_switchboard,
)

__all__ = [
    "AGENT_CLOSED",
    "IDLE_TIMEOUT",
    "QUEUE_TIMEOUT",
    "SESSION_END",
    "SESSION_EXPIRED",
    "SESSION_START",
    "USER_ENDED",
    "Accepted",
    "AgentEndsSession",
    "AgentProfile",
    "AgentRequest",
    "AgentSays",
    "AgentSignsOff",
    "AgentTransfers",
    "AgentTyping",
    "Bot",
    "BotBinding",
    "BotEvent",
    "BotSays",
    "BotSettings",
    "Clock",
    "Colleague",
    "Content",
    "ConversationLimits",
    "ConversationState",
    "CoreLink",
    "Delivery",
    "Desk",
    "DeskStatus",
    "Entry",
    "Event",
    "Lifecycle",
    "LivechatBackend",
    "MemoryStore",
    "Mode",
    "Outcome",
    "Overloaded",
    "Party",
    "Presence",
    "QueuePosition",
    "Refusal",
    "RestartPolicy",
    "Sink",
    "Store",
    "StoreUnavailable",
    "Switchboard",
    "Transcript",
    "Typing",
    "UnknownAgent",
    "UnknownBot",
    "UserSays",
    "UserTyping",
    "open_switchboard",
]
