"""The checks every bot entrance applies to what a bot sends: the HTTP push's body, and the
answers of webhook and CSML bots (see :mod:`transport.strict`).

A push is held to what the WebSocket takes from a connected bot: strict JSON (valid
Unicode, finite numbers, integers within ±(2^53 - 1)), nesting at most 32 levels, closed
field sets, 1 to 20 messages, each with a non-empty ``content_type`` that is not the
system's own and an object ``content``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from transport import strict

#: The fields a push body may have; anything else is refused (400), as on the WebSocket.
PUSH_FIELDS: Final = frozenset({"conversation_id", "messages"})
MESSAGE_FIELDS: Final = frozenset({"content_type", "content"})
MAX_MESSAGES: Final = 20
MAX_CONVERSATION_ID: Final = 128


def _bad_request(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"error": "bad_request", "message": message[:300]}


def check_push_body(body: bytes) -> tuple[int, dict[str, Any]] | None:
    """``None`` when a push body may be taken; else the HTTP status and JSON error body to
    answer with (always 400 ``bad_request``)."""
    try:
        data = strict.loads(body)
    except strict.Unrepresentable as exc:
        return _bad_request(f"The body cannot be taken: {exc}.")
    except ValueError:
        return _bad_request("The body must be JSON.")
    if not isinstance(data, Mapping):
        return _bad_request("The body must be a JSON object.")
    found = strict.problem(data)
    if found is not None:
        return _bad_request(f"The body cannot be taken: {found}.")
    unknown = sorted(set(data) - PUSH_FIELDS)
    if unknown:
        return _bad_request(f"Unknown field {unknown[0][:40]!r}; a push has {sorted(PUSH_FIELDS)}.")
    conversation_id = data.get("conversation_id")
    if not isinstance(conversation_id, str) or not 0 < len(conversation_id) <= MAX_CONVERSATION_ID:
        return _bad_request(
            f'"conversation_id" must be a string of 1 to {MAX_CONVERSATION_ID} characters.'
        )
    messages = data.get("messages")
    if not isinstance(messages, list) or not 0 < len(messages) <= MAX_MESSAGES:
        return _bad_request(f'"messages" must be an array of 1 to {MAX_MESSAGES} contents.')
    for index, item in enumerate(messages):
        problem = message_problem(item)
        if problem is not None:
            return _bad_request(f"messages[{index}]: {problem}.")
    return None


def message_problem(item: object) -> str | None:
    """Why one ``{"content_type", "content"}`` item from a bot cannot be taken, or ``None``."""
    if not isinstance(item, Mapping):
        return "must be an object"
    unknown = sorted(set(item) - MESSAGE_FIELDS)
    if unknown:
        return f"unknown field {str(unknown[0])[:40]!r}"
    if "content" not in item:
        return "content is required"
    return strict.content_problem(item.get("content_type"), item["content"])


__all__ = ["MESSAGE_FIELDS", "PUSH_FIELDS", "check_push_body", "message_problem"]
