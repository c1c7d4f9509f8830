"""``POST /v1/livechat/{bot_id}/chatwoot``: the API inbox's webhook (docs/platforms.md).

Chatwoot signs each webhook of an API inbox (version 4.13 on) with the inbox's secret:
``X-Chatwoot-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<X-Chatwoot-Timestamp>." +
raw body``. With ``webhook_secret`` set, a webhook must carry a valid signature less than
five minutes old; with ``url_token`` set (for installations that sign nothing), the URL must
carry ``?token=<url_token>``; with both, both are checked.

A webhook only says that something happened to a conversation: it pokes the conversation's
ticket, and the engine reads Chatwoot itself (:meth:`ChatwootConnector.fetch`), so every agent
message is applied once and in order whether its webhook came, came twice, came late or never
came (the reconcile reads every open conversation on a timer too). Typing is the exception:
it is passed on directly, best effort. The answer is 200 at once: what makes the webhook
safe to acknowledge is not that it was stored but that the reconcile reads Chatwoot again.

:func:`take_webhook` is a plain function of the request's parts, so any HTTP server can
mount it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from transport.livechat.chatwoot.connector import ChatwootConnector
from transport.livechat.chatwoot.options import ChatwootOptions
from transport.livechat.platform import Action, Agent, AgentIsTyping, PlatformBackend
from transport.signing import header

PATH = "/v1/livechat/{bot_id}/chatwoot"
MAX_BODY_BYTES = 64 * 1024
#: Seconds a signed webhook stays acceptable.
TOLERANCE = 300.0
SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"

WebhookResult = tuple[int, dict[str, Any]]
#: Each Chatwoot-backed bot's backend and options, by bot id.
Sites = Mapping[str, tuple[PlatformBackend, ChatwootOptions]]


def _error(status: int, code: str, message: str) -> WebhookResult:
    return status, {"error": code, "message": message}


def chatwoot_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` value for ``body`` sent at ``timestamp``."""
    message = timestamp.encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_problem(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str | None:
    """Why a webhook's signature cannot be trusted, or ``None`` when it can."""
    timestamp = header(headers, TIMESTAMP_HEADER)
    signature = header(headers, SIGNATURE_HEADER)
    if timestamp is None or signature is None:
        return f"unsigned: {SIGNATURE_HEADER} and {TIMESTAMP_HEADER} are required"
    if not (timestamp.isascii() and timestamp.isdigit()):
        return f"{TIMESTAMP_HEADER} must be Unix seconds"
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > TOLERANCE:
        return f"{TIMESTAMP_HEADER} is more than {TOLERANCE:g} seconds away: a replay or a late one"
    expected = chatwoot_signature(secret, timestamp, body)
    if not hmac.compare_digest(signature.strip().encode("utf-8", "replace"), expected.encode()):
        return "the signature does not match the inbox's secret"
    return None


def _conversation_id(event: Mapping[str, Any]) -> str | None:
    """The display id of the conversation a webhook is about."""
    conversation = event.get("conversation")
    if isinstance(conversation, Mapping):
        found = conversation.get("id")
    elif str(event.get("event", "")).startswith("conversation_"):
        found = event.get("id")
    else:
        found = None
    return str(found) if isinstance(found, int) and not isinstance(found, bool) else None


def _echo(event: Mapping[str, Any]) -> bool:
    """A message Switchover posted itself (incoming) or a private note: nothing to read."""
    if event.get("event") not in ("message_created", "message_updated"):
        return False
    return event.get("message_type") in ("incoming", 0) or event.get("private") is True


async def take_webhook(
    backend: PlatformBackend,
    options: ChatwootOptions,
    headers: Mapping[str, str],
    token: str | None,
    body: bytes,
    *,
    now: float | None = None,
) -> WebhookResult:
    """Handle one webhook of the inbox; returns the HTTP status and the JSON body.
    ``token``: the URL's ``token`` parameter, if any."""
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    if options.url_token is not None and not hmac.compare_digest(
        (token or "").encode("utf-8", "replace"), options.url_token.encode("utf-8")
    ):
        return _error(401, "unauthorized", "The webhook URL's token is missing or wrong.")
    if options.webhook_secret is not None:
        problem = signature_problem(options.webhook_secret, headers, body, now=now)
        if problem is not None:
            return _error(401, "unauthorized", problem[:1].upper() + problem[1:] + ".")
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "bad_request", "The body must be JSON.")
    if not isinstance(event, Mapping):
        return _error(400, "bad_request", "The body must be a JSON object.")
    account = event.get("account")
    if isinstance(account, Mapping) and account.get("id") not in (None, options.account_id):
        return 200, {"ignored": "another account"}
    cid = _conversation_id(event)
    ticket = backend.ticket_by_ref(cid) if cid is not None else None
    if ticket is None:
        return 200, {"ignored": "no open session has this conversation"}
    if event.get("event") == "conversation_typing_on":
        await _typing(backend, ticket.session_id, event)
        return 200, {"received": True}
    if not _echo(event):
        backend.poke(ticket)
    return 200, {"received": True}


async def _typing(backend: PlatformBackend, session_id: str, event: Mapping[str, Any]) -> None:
    """An agent types (not in a private note, and not Switchover's own typing echoed)."""
    user = event.get("user")
    if event.get("is_private") or not isinstance(user, Mapping):
        return
    user_id = user.get("id")
    if not isinstance(user_id, int) or user.get("type", "user") != "user":
        return
    connector = backend.connector
    if isinstance(connector, ChatwootConnector) and connector.own_user_id == user_id:
        return
    name = user.get("available_name") or user.get("name") or ""
    agent = Agent(str(user_id), name if isinstance(name, str) else "")
    await backend.act(Action(f"chatwoot:typing:{uuid.uuid4()}", session_id, AgentIsTyping(agent)))


async def receive(
    sites: Sites, bot_id: str, headers: Mapping[str, str], query: str, body: bytes
) -> WebhookResult:
    """Route one webhook to ``bot_id``'s Chatwoot platform (``query``: the raw query string)."""
    site = sites.get(bot_id)
    if site is None:
        # The same answer as a bad signature: nobody learns which bots use Chatwoot.
        return _error(401, "unauthorized", "No Chatwoot inbox is set up for this bot.")
    backend, options = site
    tokens = parse_qs(query).get("token")
    return await take_webhook(backend, options, headers, tokens[0] if tokens else None, body)
