"""The fields that say which event a bot is sent, the same for every bot that receives events
as JSON: a webhook's request body and a connected bot's ``event`` frame start with them, then
add the content and metadata each in its own layout. Imports nothing but the core, so the
wire protocol may use it."""

from __future__ import annotations

from typing import Any

from actors import BotEvent


def event_fields(event: BotEvent) -> dict[str, Any]:
    """``type``, ``event_id``, ``conversation_id``, ``bot_id``, ``user_id`` and ``sender``
    of one event, in that order (the order they are written in)."""
    return {
        "type": "event",
        "event_id": event.event_id,
        "conversation_id": event.conversation_id,
        "bot_id": event.bot_id,
        "user_id": event.user_id,
        "sender": event.sender.value,
    }


__all__ = ["event_fields"]
