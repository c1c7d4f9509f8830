"""``POST /v1/livechat/{bot_id}/actions``: a helpdesk of the generic webhook platform tells
Switchover what its agents did (docs/platforms.md; the body's JSON Schema is
``transport/livechat/schemas/action.json``).

The helpdesk authenticates with the platform's ``api_token`` (``Authorization: Bearer``) and
posts one action::

    {"id": "<unique per action>", "type": "accept" | "message" | "sign_off" | "typing" |
     "transfer" | "release", "session_id": "...", "agent": {"id": "...", "name": "..."},
     "content": {...} (message), "to": {"id": ..., "name": ...} | null (transfer),
     "reason": "..." (release, optional)}

Every answer is JSON. 200 ``{"accepted": true, "seq": n}`` once the conversation stored
what the action produced (``seq`` may be null); 202 for typing; errors are
``{"error": <code>, "message": <words>}``: 401/403 for the token, 400 for a bad body, 404
``unknown_session``, 409 when the conversation refused the action (``not_assigned``...),
413 for a body over the limit, 503 when Switchover cannot store it now (retry). A repeated
``id`` is answered as the first time and does nothing twice.

:func:`take_action` is a plain function of the request's parts, so any HTTP server can mount
it; the parsing (:func:`parse_action`) is pure.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from actors import Content
from transport import strict
from transport.livechat.platform import (
    Accept,
    Action,
    Agent,
    AgentIsTyping,
    Message,
    PlatformBackend,
    Release,
    SignOff,
    Transfer,
    Verb,
)
from transport.signing import bearer_token

PATH = "/v1/livechat/{bot_id}/actions"
MAX_BODY_BYTES = 64 * 1024
MAX_ID = 255
ACTION_TYPES = ("accept", "message", "sign_off", "typing", "transfer", "release")

ActionResult = tuple[int, dict[str, Any]]


class BadAction(ValueError):
    """The body is not an action Switchover can take; the message says why."""


def _error(status: int, code: str, message: str) -> ActionResult:
    return status, {"error": code, "message": message}


def _text(data: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID or not value.isprintable():
        raise BadAction(f'"{name}" must be a string of 1 to {MAX_ID} printable characters.')
    return value


def _agent(data: Mapping[str, Any], name: str) -> Agent | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise BadAction(f'"{name}" must be an object with "id" and "name".')
    unknown = set(value) - {"id", "name"}
    if unknown:
        raise BadAction(f'"{name}" has unknown fields: {", ".join(sorted(unknown))}.')
    agent_id = _text(value, "id")
    name_of = _text(value, "name", required=False) or ""
    assert agent_id is not None
    return Agent(agent_id, name_of)


def parse_action(body: bytes) -> Action:
    """The action a body holds; raises :class:`BadAction` with a message for the sender."""
    try:
        data = strict.loads(body)
    except ValueError as exc:
        raise BadAction(f"The body must be strict JSON: {exc}"[:300]) from None
    if not isinstance(data, Mapping):
        raise BadAction("The body must be a JSON object.")
    kind = data.get("type")
    if kind not in ACTION_TYPES:
        raise BadAction(f'"type" must be one of {", ".join(ACTION_TYPES)}.')
    allowed = {"id", "type", "session_id", "agent"} | {
        "message": {"content"},
        "transfer": {"to"},
        "release": {"reason"},
    }.get(kind, set())
    unknown = set(data) - allowed
    if unknown:
        raise BadAction(f"Unknown fields for {kind!r}: {', '.join(sorted(unknown))}.")
    action_id = _text(data, "id")
    session_id = _text(data, "session_id")
    agent = _agent(data, "agent")
    assert action_id is not None and session_id is not None
    verb: Verb
    if kind == "release":
        reason = _text(data, "reason", required=False) or "agent_closed"
        verb = Release(agent, reason)
    elif agent is None:
        raise BadAction(f'"agent" is required for {kind!r}.')
    elif kind == "accept":
        verb = Accept(agent)
    elif kind == "sign_off":
        verb = SignOff(agent)
    elif kind == "typing":
        verb = AgentIsTyping(agent)
    elif kind == "transfer":
        if "to" not in data:
            raise BadAction('"to" is required for "transfer" (an agent, or null for the queue).')
        verb = Transfer(agent, _agent(data, "to"))
    else:
        verb = Message(agent, _content(data.get("content")))
    return Action(action_id, session_id, verb)


def _content(raw: object) -> Content:
    if not isinstance(raw, Mapping):
        raise BadAction('"content" must be an object with "content_type" and "content".')
    problem = strict.content_problem(raw.get("content_type"), raw.get("content", {}))
    if problem is not None:
        raise BadAction(f'"content": {problem}.')
    try:
        return Content.from_json(raw)
    except ValueError as exc:
        raise BadAction(f'"content": {exc}.') from None


async def take_action(
    platforms: Mapping[str, tuple[PlatformBackend, str]],
    bot_id: str,
    headers: Mapping[str, str],
    body: bytes,
) -> ActionResult:
    """Handle one action for ``bot_id``'s platform (``platforms``: each platform-backed
    bot's backend and API token). Returns the HTTP status and the JSON body."""
    token = bearer_token(headers)
    if token is None:
        return _error(
            401, "unauthorized", "Send the platform's api_token as 'Authorization: Bearer'."
        )
    served = platforms.get(bot_id)
    if served is None:
        # The same answer as a wrong token: nobody learns which bots have a platform.
        return _error(401, "unauthorized", "Unknown token for this bot's livechat platform.")
    backend, api_token = served
    if not hmac.compare_digest(token.encode("utf-8", "replace"), api_token.encode("utf-8")):
        return _error(401, "unauthorized", "Unknown token for this bot's livechat platform.")
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    try:
        action = parse_action(body)
    except BadAction as exc:
        return _error(400, "bad_request", str(exc))
    answer = await backend.act(action)
    if answer.refusal is not None:
        return _error(answer.status, answer.refusal.code, answer.refusal.message)
    return answer.status, {"accepted": True, "seq": answer.seq}
