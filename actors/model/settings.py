"""Per-bot settings: each bot served has its own timeouts, sign-off wording and agent rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from actors.model.content import SESSION_END

DEFAULT_SESSION_TIMEOUT = 60 * 60.0
MAX_CANNED_RESPONSES = 100
MAX_SHORTCUT_LENGTH = 32
MAX_CANNED_TEXT_LENGTH = 2000


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or unset, got {value!r}")


@attrs.frozen
class CannedResponse:
    """A ready-made reply an agent inserts by typing ``/`` and its ``shortcut`` in the desk."""

    shortcut: str
    text: str


SIGN_OFF_RESPONSE = CannedResponse(
    "signoff", f"Thank you for chatting with us. Goodbye! {SESSION_END}"
)
"""Offered when a bot's own canned responses hold no sign-off: a text ending with
``LIVECHAT_SESSION_END`` offers the user the end button, as the desk's Sign off does."""


def _canned(value: object) -> tuple[CannedResponse, ...]:
    """Accept canned responses as objects or as ``{"shortcut", "text"}`` tables, so that
    settings read from a file or sent at run time end up the same."""
    if not isinstance(value, list | tuple):
        raise TypeError(f"canned_responses must be a list, got {type(value).__name__}")
    responses: list[CannedResponse] = []
    for item in value:
        if isinstance(item, CannedResponse):
            responses.append(item)
        elif isinstance(item, Mapping) and set(item) == {"shortcut", "text"}:
            responses.append(CannedResponse(str(item["shortcut"]), str(item["text"])))
        else:
            raise TypeError("each canned response must have a shortcut and a text, nothing else")
    return tuple(responses)


def canned_problems(responses: tuple[CannedResponse, ...]) -> list[tuple[int | None, str]]:
    """What is wrong with a bot's canned responses, by index (``None``: the whole list)."""
    problems: list[tuple[int | None, str]] = []
    if len(responses) > MAX_CANNED_RESPONSES:
        problems.append((None, f"must hold at most {MAX_CANNED_RESPONSES} responses"))
    seen: set[str] = set()
    for index, response in enumerate(responses):
        shortcut = response.shortcut
        if not (0 < len(shortcut) <= MAX_SHORTCUT_LENGTH) or not all(
            c.isalnum() or c in "-_" for c in shortcut
        ):
            problems.append(
                (
                    index,
                    f"shortcut must be 1 to {MAX_SHORTCUT_LENGTH} letters, digits, - or _, "
                    f"got {shortcut!r}",
                )
            )
        elif shortcut.casefold() in seen:
            problems.append((index, f"shortcut {shortcut!r} is used twice"))
        seen.add(shortcut.casefold())
        if not response.text.strip() or len(response.text) > MAX_CANNED_TEXT_LENGTH:
            problems.append(
                (
                    index,
                    "text must be a non-empty string of at most "
                    f"{MAX_CANNED_TEXT_LENGTH} characters",
                )
            )
    return problems


def _valid_canned(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[CannedResponse, ...]
) -> None:
    problems = canned_problems(value)
    if problems:
        index, problem = problems[0]
        where = attribute.name if index is None else f"{attribute.name}[{index}]"
        raise ValueError(f"{where}: {problem}")


def with_sign_off(responses: tuple[CannedResponse, ...]) -> tuple[CannedResponse, ...]:
    """The canned responses an agent is offered: the bot's own, plus the standard sign-off
    when none of them signs off (and its shortcut is free)."""
    if any(r.text.rstrip().endswith(SESSION_END) for r in responses):
        return responses
    if any(r.shortcut.casefold() == SIGN_OFF_RESPONSE.shortcut for r in responses):
        return responses
    return (*responses, SIGN_OFF_RESPONSE)


@attrs.frozen
class BotSettings:
    """How livechat sessions behave for one bot.

    ``session_timeout``: seconds without a message between user and agent before the session
    expires (CSML's default is one hour). ``queue_timeout``: seconds a session may wait for an
    agent before it ends with reason ``queue_timeout``; ``None`` waits forever.
    ``grace_period``: how long an agent who disconnects or goes offline keeps its chats before
    they go back to the head of the queue. ``agent_capacity``: the default number of
    simultaneous chats for agents who do not set their own. ``canned_responses``: the
    ready-made replies the bot's agents insert with ``/`` (the sign-off is always offered
    too, see :func:`with_sign_off`).
    """

    session_timeout: float = attrs.field(default=DEFAULT_SESSION_TIMEOUT, validator=_positive)
    end_message: str = "The agent has ended the conversation. Click below to finish."
    end_button_label: str = "End conversation"
    queue_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    agent_capacity: int = attrs.field(default=3, validator=_positive)
    grace_period: float = attrs.field(default=60.0, validator=_positive)
    unavailable_message: str = "The assistant is unavailable right now. Please try again."
    canned_responses: tuple[CannedResponse, ...] = attrs.field(
        default=(), converter=_canned, validator=_valid_canned
    )
