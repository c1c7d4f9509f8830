"""What a conversation actor may reach of the world around it, in one small object.

The actor is handed this instead of the switchboard: it sees the store, the clocks, its bot,
its backend and a way to spawn and retire, and nothing of the registry of other actors. So
``conversation.py`` does not import the switchboard, and one actor can be run and tested with
a context of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from actors.machines.lifecycle import Lifecycle
from actors.model.limits import ConversationLimits
from actors.ports import Bot, LivechatBackend, Store
from actors.trio.alarms import Alarms
from actors.trio.clock import Clock

if TYPE_CHECKING:
    from actors.trio.conversation import ConversationActor


@attrs.frozen
class ConversationContext:
    """Shared by every conversation actor of one switchboard; read-only for them."""

    store: Store
    clock: Clock
    alarms: Alarms
    spawn: Callable[[Callable[[], Awaitable[None]]], None]
    lifecycle_for: Callable[[str], Lifecycle | None]
    """The lifecycle of a bot id, ``None`` for a bot that is no longer configured."""
    bot_for: Callable[[str], Bot]
    backend_for: Callable[[str], LivechatBackend]
    """The livechat backend that a bot id's sessions go to."""
    retire: Callable[[ConversationActor], None]
    """Take an actor out of the registry (it hibernates, or its conversation is gone)."""
    hibernate_after: float | None = None
    limits: ConversationLimits = ConversationLimits()
