"""``POST /v1/bots/{bot_id}/messages``: a bot sends a user messages later, not as the answer
to an event (a reminder, the result of a slow job).

The bot authenticates with its token (``Authorization: Bearer <token>``, the ``token`` of
``[bots.<id>]``) and posts ``{"conversation_id": "...", "messages": [content, ...]}``. The
messages are shown to the user like any other bot reply, and refused (409) while a livechat
session is open: then a human has the conversation and the bot must stay quiet.

:func:`push_messages` is a plain function of the request's parts, so any HTTP server can
mount it; :func:`endpoint` is its Starlette route on Switchover's own HTTP app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from actors import Accepted, BotSays, Content, Outcome, Overloaded
from transport.protocol.credentials import find_token
from transport.protocol.push import check_push_body
from transport.protocol.services import Services
from transport.signing import bearer_token, header

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp

log = logging.getLogger("switchover.bots.push")

PATH = "/v1/bots/{bot_id}/messages"
MAX_BODY_BYTES = 64 * 1024
MAX_MESSAGES = 20
MAX_KEY_LENGTH = 255
ANSWER_WITHIN = 10.0

PushResult = tuple[int, dict[str, Any]]


def _error(status: int, code: str, message: str) -> PushResult:
    return status, {"error": code, "message": message}


def _bot_of(services: Services, token: str) -> str | None:
    """The bot a token belongs to, comparing in constant time."""
    return find_token(services.bot_tokens, token)  # clear or hashed, in constant time


def _messages(data: Mapping[str, Any]) -> list[Content] | PushResult:
    raw = data.get("messages")
    if not isinstance(raw, list) or not raw:
        return _error(400, "bad_request", '"messages" must be a non-empty array of contents.')
    if len(raw) > MAX_MESSAGES:
        return _error(400, "bad_request", f"At most {MAX_MESSAGES} messages per request.")
    contents = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            return _error(400, "bad_request", f"messages[{index}] must be an object.")
        try:
            contents.append(Content.from_json(item))
        except ValueError as exc:
            return _error(400, "bad_request", f"messages[{index}]: {exc}.")
    return contents


async def push_messages(
    services: Services, bot_id: str, headers: Mapping[str, str], body: bytes
) -> PushResult:
    """Handle one push: returns the HTTP status and the JSON body to answer with.

    200 ``{"accepted": true, "seq": n}`` (the sequence number of the last message shown);
    202 ``{"accepted": true, "pending": true, "seq": null}`` when the conversation did not
    answer within ``ANSWER_WITHIN`` seconds: the messages are queued and will be shown.
    With an ``Idempotency-Key`` header, a retry with the same key and body is answered
    with the first outcome (200 and its ``seq`` once shown) and shows nothing twice.
    401 without a valid token, 403 with another bot's token, 404 for a conversation this
    bot does not serve, 409 when a livechat session is open, 413/400 for bad bodies, 429
    when the conversation is overloaded.
    """
    token = bearer_token(headers)
    if token is None:
        return _error(401, "unauthorized", "Send the bot's token as 'Authorization: Bearer'.")
    owner = _bot_of(services, token)
    if owner is None:
        return _error(401, "unauthorized", "Unknown bot token.")
    if owner != bot_id:
        return _error(403, "forbidden", f"This token does not belong to bot {bot_id!r}.")
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    if (refused := check_push_body(body)) is not None:
        return refused
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _error(400, "bad_request", "The body must be JSON.")
    if not isinstance(data, Mapping):
        return _error(400, "bad_request", "The body must be a JSON object.")
    conversation_id = data.get("conversation_id")
    if not isinstance(conversation_id, str) or not conversation_id:
        return _error(400, "bad_request", '"conversation_id" must be a non-empty string.')
    contents = _messages(data)
    if isinstance(contents, tuple):
        return contents
    key = header(headers, "idempotency-key")
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH and key.isprintable()):
        return _error(
            400,
            "bad_request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
        )
    board = services.board
    state = await board.store.load(conversation_id)
    if state is None or state.bot_id != bot_id:
        # The same answer for "no such conversation" and "another bot's": a bot cannot
        # probe for conversations it does not serve.
        return _error(404, "unknown_conversation", "No such conversation for this bot.")
    outcomes: list[Outcome] = []
    answered = trio.Event()

    def reply(outcome: Outcome) -> None:
        outcomes.append(outcome)
        answered.set()

    try:
        board.submit(
            conversation_id,
            BotSays(tuple(contents)),
            reply,
            message_id=None if key is None else f"push:{key}",
        )
    except Overloaded:
        return _error(429, "overloaded", "The conversation is busy; retry shortly.")
    with trio.move_on_after(ANSWER_WITHIN):
        await answered.wait()
    if not outcomes:
        # Queued, so it will be shown: saying "unavailable" would make a bot send it again.
        return 202, {"accepted": True, "pending": True, "seq": None}
    outcome = outcomes[0]
    if isinstance(outcome, Accepted):
        return 200, {"accepted": True, "seq": outcome.seq}
    status = 409 if outcome.code == "session_open" else 400
    log.info(
        "push refused: %s",
        outcome.message,
        extra={"conversation_id": conversation_id, "bot_id": bot_id},
    )
    return _error(status, outcome.code, outcome.message)


async def endpoint(request: Request) -> Response:
    """``POST`` :data:`PATH` on the HTTP app: :func:`push_messages` with the app's services."""
    services = cast("HttpApp", request.app).services
    status, answer = await push_messages(
        services, request.path_params["bot_id"], request.headers, await request.body()
    )
    return JSONResponse(answer, status)
