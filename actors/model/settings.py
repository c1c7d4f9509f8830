"""Per-bot settings: each bot served has its own timeouts, sign-off wording and agent rules."""

from __future__ import annotations

from typing import Any

import attrs

DEFAULT_SESSION_TIMEOUT = 60 * 60.0


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or unset, got {value!r}")


@attrs.frozen
class BotSettings:
    """How livechat sessions behave for one bot.

    ``session_timeout``: seconds without a message between user and agent before the session
    expires (CSML's default is one hour). ``queue_timeout``: seconds a session may wait for an
    agent before it ends with reason ``queue_timeout``; ``None`` waits forever.
    ``grace_period``: how long an agent who disconnects or goes offline keeps its chats before
    they go back to the head of the queue. ``agent_capacity``: the default number of
    simultaneous chats for agents who do not set their own.
    """

    session_timeout: float = attrs.field(default=DEFAULT_SESSION_TIMEOUT, validator=_positive)
    end_message: str = "The agent has ended the conversation. Click below to finish."
    end_button_label: str = "End conversation"
    queue_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    agent_capacity: int = attrs.field(default=3, validator=_positive)
    grace_period: float = attrs.field(default=60.0, validator=_positive)
    unavailable_message: str = "The assistant is unavailable right now. Please try again."
