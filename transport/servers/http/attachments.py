"""Attachments over HTTP: a user or an agent uploads a file into a conversation, and the
conversation's parties download it (docs/protocol.md, "Attachments").

``POST /v1/conversations/{conversation_id}/attachments?name=<file name>``, the file as the
body and its type as ``Content-Type``, stores the file and sends it as a message (``image``
or ``file`` content) through the conversation like any message: it is numbered, stored, and
delivered to every client of both parties (the uploading tab gets the entry too). The user
authenticates with the conversation's resume token, the agent with its agent token, both as
``Authorization: Bearer``; a user may send one only during a livechat session, an agent only
into a chat it holds.

``GET /v1/conversations/{conversation_id}/attachments/{attachment_id}`` answers the bytes to
the conversation's user and to the agents who serve its bot (who may pick its chats up and
read its transcript); anyone else gets 404, as for an attachment that does not exist. The
pages fetch it with the token and show it from memory, so the token is never in an address.

Both answer any origin (CORS, no cookies): the widget is embedded on other sites, and the
bearer token is the only credential.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import quote

import attrs
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors import Accepted, AgentSays, Content, Outcome, Overloaded, UserSays
from transport.protocol.attachments import (
    DOWNLOAD_PATH,
    INLINE_TYPES,
    UPLOAD_PATH,
    AttachmentLimits,
    Refused,
    check_upload,
    clean_name,
    content_for,
    too_large,
    well_formed_id,
)
from transport.protocol.credentials import find_token
from transport.protocol.tokens import ExpiredToken, InvalidToken, ResumeTokens
from transport.servers.http.body import read_body
from transport.signing import bearer_token
from transport.store.attachments import AttachmentKeeper, NoRoom

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp

log = logging.getLogger("switchover.attachments")

#: Paths whose routes read and bound their own bodies (past the app's usual limit).
PREFIX: Final = "/v1/conversations/"
ANSWER_WITHIN: Final = 10.0
_CORS: Final = {
    "access-control-allow-origin": "*",
    "access-control-expose-headers": "content-disposition, content-length",
}


@attrs.frozen
class _User:
    conversation_id: str


@attrs.frozen
class _Agent:
    agent_id: str


Caller = _User | _Agent


@attrs.define
class Attachments:
    """What the routes need beside the app's services: where files live and the limits."""

    store: AttachmentKeeper
    limits: AttachmentLimits = AttachmentLimits()


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": code, "message": message}, status, headers=_CORS)


def _refused(refused: Refused) -> Response:
    return _error(refused.status, refused.code, refused.message)


def _caller(app: HttpApp, request: Request) -> Caller | Response:
    """Who is asking: an agent by its token, or a conversation's user by its resume token."""
    token = bearer_token(request.headers)
    if token is None:
        return _error(
            401, "unauthorized", "Send your agent token or resume token as 'Authorization: Bearer'."
        )
    services = app.services
    agent_id = find_token(services.agent_tokens, token)
    if agent_id is not None:
        return _Agent(agent_id)
    tokens = ResumeTokens(services.secret, max_age=services.limits.resume_token_max_age)
    try:
        return _User(tokens.verify(token).conversation_id)
    except ExpiredToken:
        return _error(401, "unauthorized", "The resume token has expired.")
    except InvalidToken:
        return _error(401, "unauthorized", "Unknown token.")


def _attachments(app: HttpApp) -> Attachments:
    found = app.attachments
    assert found is not None
    return found


async def upload(request: Request) -> Response:
    """``POST`` :data:`UPLOAD_PATH`: store the body and send it as a message."""
    app = cast("HttpApp", request.app)
    attachments = _attachments(app)
    limits = attachments.limits
    caller = _caller(app, request)
    if isinstance(caller, Response):
        return caller
    conversation_id: str = request.path_params["conversation_id"]
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limits.max_bytes:
        return _refused(too_large(limits))
    board = app.services.board
    if isinstance(caller, _User):
        if caller.conversation_id != conversation_id:
            return _error(403, "forbidden", "That is not your conversation.")
    elif not app.services.desk.holds(caller.agent_id, conversation_id):
        return _error(403, "not_assigned", "You do not hold this chat.")
    state = await board.store.load(conversation_id)
    if state is None:
        return _error(404, "unknown_conversation", "No such conversation.")
    backends = app.backends
    if (
        state.bot_id in backends.platforms
        or state.bot_id in backends.gorgias
        or (state.bot_id in backends.chatwoot)
    ):
        # Its agents are in a helpdesk, which would be handed an address it cannot open.
        return _error(
            409,
            "not_supported",
            "Files cannot be sent here: this conversation's agents use a helpdesk.",
        )
    if isinstance(caller, _User) and state.session is None:
        return _error(
            409, "no_session", "Files can be sent only while the conversation is with an agent."
        )
    data, gone = await read_body(request.receive, limits.max_bytes)
    if data is None:
        return _refused(too_large(limits))
    if gone:
        return _error(400, "bad_request", "The upload was cut short.")
    checked = check_upload(request.headers.get("content-type"), data, limits)
    if isinstance(checked, Refused):
        return _refused(checked)
    name = clean_name(request.query_params.get("name"))
    sender = "user" if isinstance(caller, _User) else f"agent:{caller.agent_id}"
    try:
        kept = await attachments.store.keep(
            conversation_id,
            name=name,
            mime_type=checked,
            data=data,
            sender=sender,
            max_count=limits.max_per_conversation,
            max_bytes=limits.max_conversation_bytes,
            max_total=limits.max_total_bytes,
        )
    except NoRoom as full:
        if full.everywhere:
            log.warning("attachments refused: %d bytes kept in all", limits.max_total_bytes)
            return _error(
                507, "storage_full", "The server cannot keep more files right now; retry later."
            )
        return _error(
            409,
            "conversation_full",
            f"This conversation already holds {limits.max_per_conversation} files or "
            f"{limits.max_conversation_bytes} bytes of them.",
        )
    content = content_for(conversation_id, kept.attachment_id, name, checked, len(data))
    outcome = await _send(app, caller, conversation_id, content, kept.attachment_id)
    if outcome is None:
        # Queued, so it will be shown: the file stays.
        return JSONResponse(
            {"accepted": True, "pending": True, "seq": None, **content.to_json()}, 202, _CORS
        )
    if isinstance(outcome, Accepted):
        log.info(
            "attachment %s kept (%s, %d bytes)",
            kept.attachment_id,
            checked,
            len(data),
            extra={"conversation_id": conversation_id},
        )
        return JSONResponse({"accepted": True, "seq": outcome.seq, **content.to_json()}, 201, _CORS)
    await attachments.store.remove(conversation_id, kept.attachment_id)
    if isinstance(outcome, Response):
        return outcome
    return _error(409, outcome.code, outcome.message)


async def _send(
    app: HttpApp, caller: Caller, conversation_id: str, content: Content, attachment_id: str
) -> Outcome | Response | None:
    """Submit the message; its outcome, or ``None`` when none came in time."""
    outcomes: list[Outcome] = []
    answered = trio.Event()

    def reply(outcome: Outcome) -> None:
        outcomes.append(outcome)
        answered.set()

    event = UserSays(content) if isinstance(caller, _User) else AgentSays(caller.agent_id, content)
    try:
        app.services.board.submit(
            conversation_id, event, reply, message_id=f"attachment:{attachment_id}"
        )
    except Overloaded:
        return _error(429, "overloaded", "The conversation is busy; retry shortly.")
    with trio.move_on_after(ANSWER_WITHIN):
        await answered.wait()
    return outcomes[0] if outcomes else None


async def download(request: Request) -> Response:
    """``GET`` :data:`DOWNLOAD_PATH`: the bytes, to the conversation's parties only."""
    app = cast("HttpApp", request.app)
    caller = _caller(app, request)
    if isinstance(caller, Response):
        return caller
    conversation_id: str = request.path_params["conversation_id"]
    attachment_id: str = request.path_params["attachment_id"]
    missing = _error(404, "not_found", "No such attachment.")
    if not well_formed_id(attachment_id):
        return missing
    if isinstance(caller, _User):
        if caller.conversation_id != conversation_id:
            return missing
    else:
        state = await app.services.board.store.load(conversation_id)
        profile = app.services.desk.profiles.get(caller.agent_id)
        if state is None or profile is None or state.bot_id not in profile.bots:
            return missing
    found = await _attachments(app).store.read(conversation_id, attachment_id)
    if found is None:
        return missing
    attachment, data = found
    disposition = "inline" if attachment.mime_type in INLINE_TYPES else "attachment"
    headers = {
        **_CORS,
        "content-disposition": f"{disposition}; {_filename(attachment.name)}",
        "cache-control": "private, no-store",
    }
    return Response(data, 200, headers, media_type=attachment.mime_type)


def _filename(name: str) -> str:
    """Both forms of the name: plain ASCII for old clients, UTF-8 (RFC 6266) for the rest."""
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


async def preflight(request: Request) -> Response:
    """CORS preflight: any origin may send the token and a file's type."""
    return Response(
        None,
        204,
        {
            **_CORS,
            "access-control-allow-methods": "GET, POST",
            "access-control-allow-headers": "authorization, content-type",
            "access-control-max-age": "600",
        },
    )


ATTACHMENT_ROUTES: Final = (
    Route(UPLOAD_PATH, upload, methods=["POST"]),
    Route(DOWNLOAD_PATH, download, methods=["GET"]),
    Route(UPLOAD_PATH, preflight, methods=["OPTIONS"]),
    Route(DOWNLOAD_PATH, preflight, methods=["OPTIONS"]),
)

__all__ = ["ATTACHMENT_ROUTES", "PREFIX", "Attachments", "download", "upload"]
