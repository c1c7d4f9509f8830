"""What the core keeps of one conversation: its mode, its open session, its next seq.

The lifecycle (:mod:`actors.machines.lifecycle`) is the only code that makes a new state; the
store keeps these snapshots, and a snapshot is enough to resume a conversation after a restart.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from actors.model.settings import BotSettings


class Mode(enum.Enum):
    BOT = "bot"
    QUEUED = "queued"
    LIVE = "live"


@attrs.frozen
class Session:
    """An open livechat session. ``agent_id`` is ``None`` while it waits in the queue."""

    session_id: str
    started_at: float
    last_activity: float
    queued_at: float | None
    agent_id: str | None = None
    agent_name: str = ""
    sign_off_offered: bool = False


@attrs.frozen
class ConversationState:
    """Everything the lifecycle knows about one conversation; a snapshot is enough to resume
    it after a crash or a restart."""

    conversation_id: str
    bot_id: str
    user_id: str
    user_metadata: Mapping[str, Any] = attrs.field(factory=dict)
    next_seq: int = 1
    session: Session | None = None
    sessions_opened: int = 0

    @property
    def mode(self) -> Mode:
        if self.session is None:
            return Mode.BOT
        return Mode.QUEUED if self.session.agent_id is None else Mode.LIVE


def deadline(state: ConversationState, settings: BotSettings) -> float | None:
    """When the open session ends unless something happens first; ``None`` in bot mode."""
    session = state.session
    if session is None:
        return None
    idle = session.last_activity + settings.session_timeout
    if session.queued_at is not None and settings.queue_timeout is not None:
        return min(idle, session.queued_at + settings.queue_timeout)
    return idle
