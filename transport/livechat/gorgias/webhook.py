"""``POST /v1/livechat/{bot_id}/gorgias``: Gorgias's HTTP integration says a ticket changed.

Gorgias signs nothing it sends, so the integration carries a secret of Switchover's, the
platform's ``webhook_token``: in the header ``X-Switchover-Token`` (what ``switchover gorgias
setup`` configures) or as ``?token=`` in the URL. A request without it is answered 401 and
does nothing.

The request is only a hint. Its fields (from the URL's query and the JSON or form body, all
optional; ``switchover gorgias setup`` configures them)::

    ticket_id     {{ticket.id}}              which ticket (else external_id: the session id)
    external_id   {{ticket.external_id}}
    event         {{event.type}}             ticket-message-created | ticket-updated
    from_agent    {{message.from_agent}}     False: the customer's own message
    channel       {{message.channel}}
    status        {{ticket.status}}
    assignee_user_id {{ticket.assignee_user_id}}

name the ticket, which Switchover then reads from the API (``fetch``): whatever the
webhooks' order, repeats or losses, each agent's action is applied once and in order, and a
lost webhook is made up for by the next timed read (``reconcile_every``). Two kinds of
request need no read at all, which spares the account's rate limit: a new message from the
customer (Switchover's own post, coming back), a ``ticket-updated`` whose status and
assignee are those Switchover last read, and anything about the ticket of a session that
ended (Switchover's own closing note and status, coming back).

The answer is 200 as soon as the read is scheduled, also for a ticket Switchover does not
know (a session that ended, its own closing coming back, another integration's ticket):
Gorgias disables an integration after 100 failed calls in a row, and such a request is no
failure. Only a missing or wrong token (401), a body over 64 KiB (413) and a body that is
not JSON (400) are refused, so a misconfigured integration shows up in Gorgias's logs.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from transport.livechat.gorgias.connector import parse_cursor
from transport.livechat.platform import PlatformBackend
from transport.livechat.tickets import Ticket
from transport.signing import header

PATH = "/v1/livechat/{bot_id}/gorgias"
TOKEN_HEADER = "X-Switchover-Token"
MAX_BODY_BYTES = 64 * 1024

WebhookResult = tuple[int, dict[str, Any]]

_NONE = frozenset({"", "none", "null"})


def _error(status: int, code: str, message: str) -> WebhookResult:
    return status, {"error": code, "message": message}


def _fields(headers: Mapping[str, str], body: bytes) -> dict[str, str] | None:
    """The body's fields as strings; ``None`` when it is neither JSON nor a form."""
    if not body.strip():
        return {}
    content_type = (header(headers, "content-type") or "").lower()
    if "x-www-form-urlencoded" in content_type:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, Mapping):
        return None
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def _ticket(backend: PlatformBackend, fields: Mapping[str, str]) -> Ticket | None:
    ref = fields.get("ticket_id", "").strip()
    if ref:
        found = backend.ticket_by_ref(ref)
        if found is not None:
            return found
    return backend.open_tickets.get(fields.get("external_id", "").strip())


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    return True if lowered in ("true", "1") else False if lowered in ("false", "0") else None


def nothing_to_read(ticket: Ticket, fields: Mapping[str, str]) -> bool:
    """Whether the request tells of nothing Switchover must read: the customer's own new
    message, or an update leaving status and assignee as last read."""
    event = fields.get("event", "").strip()
    if event == "ticket-message-created":
        from_agent = _flag(fields.get("from_agent"))
        return from_agent is False and fields.get("channel", "") != "internal-note"
    if event == "ticket-updated" and "status" in fields and "assignee_user_id" in fields:
        assignee = fields["assignee_user_id"].strip()
        seen = parse_cursor(ticket.cursor)[1]
        same = (None if assignee.lower() in _NONE else assignee) == seen
        return ticket.cursor is not None and same and fields["status"].strip() != "closed"
    return False


async def take_webhook(
    backend: PlatformBackend | None,
    token: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes,
) -> WebhookResult:
    """Handle one call of Gorgias's HTTP integration for a bot's platform (``backend`` and
    its ``webhook_token``; ``None`` for a bot without a Gorgias platform). Returns the HTTP
    status and the JSON body."""
    given = header(headers, TOKEN_HEADER) or query.get("token")
    if (
        backend is None
        or token is None
        or given is None
        or not hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))
    ):
        return _error(401, "unauthorized", f"Send the platform's webhook_token as {TOKEN_HEADER}.")
    if len(body) > MAX_BODY_BYTES:
        return _error(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    fields = _fields(headers, body)
    if fields is None:
        return _error(400, "bad_request", "The body must be a JSON object or a form.")
    fields = {**{k: v for k, v in query.items() if k != "token"}, **fields}
    ticket = _ticket(backend, fields)
    if ticket is None:
        return 200, {"ok": True, "read": False, "known": False}
    if ticket.ending or nothing_to_read(ticket, fields):
        # (An ending session's ticket is being closed: nothing it says matters any more.)
        return 200, {"ok": True, "read": False, "known": True}
    backend.poke(ticket)
    return 200, {"ok": True, "read": True, "known": True}
