"""The Gorgias connector: one Gorgias ticket per livechat session, over the REST API.

Switchover owns the user's channel and writes into Gorgias as the customer, on the ``api``
channel (docs/platforms.md has the walkthrough). Every call authenticates with HTTP Basic
(the API user's email and API key) and first takes a token from the bot's
:class:`~transport.livechat.gorgias.ratelimit.TokenBucket`, so this bot stays inside the
account's 40 requests per 20 seconds.

* ``open``: ``POST /api/tickets`` with ``external_id`` = the session id, the customer, and the
  transcript so far as its first message. It first asks ``GET /api/tickets?external_id=``:
  a ticket created by an earlier try whose answer was lost (a timeout, a crash) is taken
  again instead of a second one being opened.
* ``post``: ``POST /api/tickets/{id}/messages`` as the customer (``from_agent: false``), each
  with ``external_id`` ``<session id>:<seq>``. After a call whose outcome is unknown (a
  timeout, a 5xx) or a restart, the ticket's messages are read before posting again, so a
  message already there is not posted twice.
* ``typing``: nothing; Gorgias has no API for a customer's typing indicator.
* ``close``: an internal note saying why the session ended, then ``PUT /api/tickets/{id}``
  with ``{"status": "closed"}``.
* ``fetch``: ``GET /api/tickets/{id}`` (status, assignee) and, when its
  ``last_message_datetime`` moved, ``GET /api/messages?ticket_id=`` (newest first, until the
  cursor): the agents' public messages become :class:`Message` actions (text ending with
  ``LIVECHAT_SESSION_END`` is a sign-off, which the conversation recognises), a change of
  assignee an :class:`Accept` or :class:`Transfer`, a closed ticket a
  :class:`Release` with reason ``ticket_closed``. Internal notes and the customer's messages
  (Switchover's own) never become actions.

The ticket's cursor is ``<last message id read>/<assignee id last seen>``.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import httpx

from actors import Content, Entry, Party
from actors.model.deliveries import Transcript
from transport.livechat.gorgias.options import GorgiasOptions
from transport.livechat.gorgias.ratelimit import TokenBucket, parse_call_limit
from transport.livechat.platform import (
    Accept,
    Action,
    Agent,
    Message,
    PlatformRefused,
    PlatformUnavailable,
    Release,
    Transfer,
    Verb,
)
from transport.livechat.tickets import Ticket
from transport.livechat.webhook import retry_after

log = logging.getLogger("switchover.livechat.gorgias")

#: Where a user without an email address in their metadata is filed in Gorgias, which needs
#: one per customer: ``<user id>@users.switchover.invalid`` (``.invalid`` never delivers).
PLACEHOLDER_DOMAIN = "users.switchover.invalid"
#: The header Gorgias reports the account's use of its rate limit in (``"10/40"``).
CALL_LIMIT_HEADER = "x-gorgias-account-api-call-limit"
#: The reason a session ends with when its ticket disappears from Gorgias.
TICKET_DELETED = "ticket_deleted"
TICKET_CLOSED = "ticket_closed"
#: Messages read per page, and pages read at most per fetch.
PAGE_SIZE = 100
MAX_PAGES = 20
#: The start of the internal note that tells agents the session ended.
END_NOTE = "Livechat session ended. Reason: "

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9._+-]{1,64}$")
_TAG = re.compile(r"<[^>]+>")


class OutcomeUnknown(PlatformUnavailable):
    """The call failed in a way that does not tell whether Gorgias carried it out (a
    timeout after sending, a 5xx): look before doing it again."""


class GorgiasRefused(PlatformRefused):
    """A 4xx other than 408 and 429, with its ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@attrs.define
class _Known:
    """What this process knows of one ticket. Not kept across restarts: rebuilt with one
    read of the ticket, and one of its messages before the next post."""

    sender: dict[str, Any]
    #: The highest seq of the session known to be in the ticket.
    posted: int = 0
    #: A post's outcome is unknown (or the process restarted): read before posting again.
    uncertain: bool = False
    #: The end note is in the ticket.
    noted: bool = False
    closed: bool = False
    #: ``(last_message_datetime, cursor)`` of the last read that found every message.
    listed: tuple[str, str] | None = None


def customer_email(user_id: str, metadata: Mapping[str, Any]) -> str:
    """The user's ``email`` from their metadata, else a stable placeholder address."""
    given = metadata.get("email")
    if isinstance(given, str) and _EMAIL.match(given.strip()):
        return given.strip()
    local = user_id if _LOCAL_PART.match(user_id) else ""
    if not local:
        local = "u-" + hashlib.sha256(user_id.encode("utf-8", "replace")).hexdigest()[:32]
    return f"{local}@{PLACEHOLDER_DOMAIN}"


def readable(content: Content) -> str:
    """One message as an agent reads it in Gorgias."""
    text = content.text_value
    if text is not None:
        return text
    body = content.content
    if content.content_type == "payload":
        return f"[button] {body.get('title') or body.get('payload')}"
    url = body.get("url")
    if isinstance(url, str):
        return f"[{content.content_type}] {url}"
    shown = json.dumps(dict(body), ensure_ascii=False, separators=(",", ":"), default=str)
    return f"[{content.content_type}] {shown[:2000]}"


def transcript_text(transcript: Transcript) -> str:
    """The first message of a ticket: who asks, and the conversation so far."""
    metadata = transcript.user_metadata
    name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
    who = f"{name} (user {transcript.user_id})" if name else f"user {transcript.user_id}"
    lines = [f"Livechat request from {who}."]
    shown = [e for e in transcript.entries if e.sender is not Party.SYSTEM]
    if shown:
        lines.append("")
        lines.append(
            "Conversation so far"
            + (" (earlier messages left out):" if transcript.truncated else ":")
        )
        for entry in shown:
            lines.append(f"{entry.sender.value.capitalize()}: {readable(entry.content)}")
    return "\n".join(lines)


def end_note(reason: str) -> str:
    return f"{END_NOTE}{reason}"


def parse_cursor(cursor: str | None) -> tuple[int, str | None]:
    """``"<message id>/<assignee id>"`` as ``(message id, assignee id or None)``."""
    if not cursor:
        return 0, None
    last, _, assignee = cursor.partition("/")
    return (int(last) if last.isdigit() else 0), (assignee or None)


def make_cursor(last: int, assignee: str | None) -> str:
    return f"{last}/{assignee or ''}"


def _id(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _agent(person: Any) -> Agent | None:
    """A Gorgias user (``sender`` or ``assignee_user``) as an agent."""
    if not isinstance(person, Mapping) or person.get("id") is None:
        return None
    name = person.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [person.get("firstname"), person.get("lastname")]
        name = " ".join(p for p in parts if isinstance(p, str) and p) or person.get("email")
    return Agent(str(person["id"]), name if isinstance(name, str) else "")


def is_agent_reply(message: Mapping[str, Any]) -> bool:
    """A message an agent sent to the customer: not an internal note, not the customer's
    (Switchover's own posts), not one that failed to send."""
    return (
        message.get("from_agent") is True
        and message.get("channel") != "internal-note"
        and message.get("public") is not False
        and not message.get("failed_datetime")
    )


def message_text(message: Mapping[str, Any]) -> str:
    """An agent's message as text: ``body_text``, else ``body_html`` without its tags, then
    its attachments' addresses."""
    text = message.get("body_text")
    if not isinstance(text, str) or not text.strip():
        raw = message.get("body_html")
        text = html.unescape(_TAG.sub("", raw)) if isinstance(raw, str) else ""
    lines = [text.strip()] if text.strip() else []
    for attachment in message.get("attachments") or []:
        if isinstance(attachment, Mapping) and isinstance(attachment.get("url"), str):
            name = attachment.get("name")
            lines.append(f"{name}: {attachment['url']}" if name else attachment["url"])
    return "\n".join(lines)


class GorgiasConnector:
    """Carries one bot's sessions into its Gorgias account (a
    :class:`~transport.livechat.platform.Connector`)."""

    def __init__(
        self, options: GorgiasOptions, http: httpx.AsyncClient, bucket: TokenBucket | None = None
    ) -> None:
        self.options = options
        self.http = http
        self.bucket = bucket or TokenBucket(options.requests_per_window, options.window)
        self._auth = httpx.BasicAuth(options.email, options.api_key)
        self._known: dict[str, _Known] = {}

    # -- the calls ---------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call inside the rate limit; its JSON answer, or the failure as
        :class:`PlatformUnavailable` (:class:`OutcomeUnknown` when Gorgias may have done
        it) or :class:`GorgiasRefused`."""
        await self.bucket.take()
        try:
            response = await self.http.request(
                method,
                self.options.base_url + path,
                params=params,
                json=body,
                auth=self._auth,
                timeout=self.options.timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise PlatformUnavailable(f"cannot connect ({type(exc).__name__}: {exc})") from None
        except httpx.TransportError as exc:
            raise OutcomeUnknown(f"no answer ({type(exc).__name__}: {exc})") from None
        used = parse_call_limit(response.headers.get(CALL_LIMIT_HEADER))
        if used is not None:
            self.bucket.observe(*used)
        status = response.status_code
        if status in (408, 429):
            wait = retry_after(response.headers.get("retry-after"))
            raise PlatformUnavailable(f"{method} {path}: answered HTTP {status}", wait)
        if status >= 500:
            wait = retry_after(response.headers.get("retry-after"))
            raise OutcomeUnknown(f"{method} {path}: answered HTTP {status}", wait)
        if status >= 400:
            raise GorgiasRefused(
                f"{method} {path}: answered HTTP {status}: {response.text[:200]!r}", status
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise OutcomeUnknown(f"{method} {path}: the answer is not JSON") from None

    # -- Connector ---------------------------------------------------------------------------

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        email = customer_email(transcript.user_id, transcript.user_metadata)
        sender = {"email": email}
        found = await self._find(ticket.session_id)
        if found is None:
            found = await self.request(
                "POST", "/api/tickets", body=self._ticket(ticket, transcript, email)
            )
        if not isinstance(found, Mapping) or _id(found.get("id")) < 0:
            raise OutcomeUnknown("POST /api/tickets: the answer has no ticket id")
        ref = str(found["id"])
        ids = [_id(m.get("id")) for m in found.get("messages") or [] if isinstance(m, Mapping)]
        # Start reading after the ticket's first message (the request itself): whatever an
        # agent did after it is still to be read.
        ticket.cursor = make_cursor(min(ids) if ids else 0, None)
        self._known[ref] = _Known(sender)
        return ref

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        ref = self._ref(ticket)
        known = await self._known_of(ref)
        if known.uncertain:
            await self._read_posted(ticket, ref, known)
        if entry.seq <= known.posted:
            return
        body = {
            "channel": "api",
            "via": "api",
            "from_agent": False,
            "external_id": f"{ticket.session_id}:{entry.seq}",
            "body_text": readable(entry.content),
            "sender": known.sender,
        }
        try:
            await self.request("POST", f"/api/tickets/{ref}/messages", body=body)
        except OutcomeUnknown:
            known.uncertain = True
            raise
        known.posted = entry.seq

    async def typing(self, ticket: Ticket) -> None:
        """Gorgias has no API for the customer's typing indicator: nothing is sent."""

    async def close(self, ticket: Ticket, reason: str) -> None:
        ref = ticket.ref
        if ref is None:
            return
        try:
            await self._close(ticket, ref, reason)
        except PlatformRefused:
            self._known.pop(ref, None)
            raise

    async def _close(self, ticket: Ticket, ref: str, reason: str) -> None:
        known = await self._known_of(ref)
        if not known.noted and known.uncertain:
            await self._read_posted(ticket, ref, known)
        if not known.noted:
            note = {
                "channel": "internal-note",
                "via": "api",
                "from_agent": True,
                "external_id": f"{ticket.session_id}:ended",
                "body_text": end_note(reason),
                "sender": {"email": self.options.email},
            }
            try:
                await self.request("POST", f"/api/tickets/{ref}/messages", body=note)
            except OutcomeUnknown:
                known.uncertain = True
                raise
            known.noted = True
        if not known.closed:
            await self.request("PUT", f"/api/tickets/{ref}", body={"status": "closed"})
            known.closed = True
        self._known.pop(ref, None)

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        ref = ticket.ref
        if ref is None:
            return ()
        session_id = ticket.session_id
        try:
            data = await self.request("GET", f"/api/tickets/{ref}")
        except GorgiasRefused as exc:
            if exc.status not in (404, 410):
                raise
            release = Release(None, TICKET_DELETED)
            return [(Action(f"gorgias:{ref}:deleted", session_id, release), ticket.cursor or "")]
        if not isinstance(data, Mapping):
            raise OutcomeUnknown(f"GET /api/tickets/{ref}: the answer is not a ticket")
        known = self._remember(ref, data)
        last, seen = parse_cursor(ticket.cursor)
        cursor = make_cursor(last, seen)
        fetched: list[tuple[Action, str]] = []
        marker = data.get("last_message_datetime")
        marker = marker if isinstance(marker, str) else None
        if marker is None or known.listed != (marker, ticket.cursor or cursor):
            for message in await self._messages_after(ref, last):
                if not is_agent_reply(message):
                    continue
                agent = _agent(message.get("sender"))
                text = message_text(message)
                if agent is None or not text:
                    continue
                last = _id(message.get("id"))
                cursor = make_cursor(last, seen)
                verb: Verb = Message(agent, Content.text(text))
                fetched.append((Action(f"gorgias:{last}", session_id, verb), cursor))
        assignee = _agent(data.get("assignee_user"))
        if assignee is None and data.get("assignee_user_id") is not None:
            assignee = Agent(str(data["assignee_user_id"]))
        now = assignee.agent_id if assignee is not None else None
        if now != seen:
            seen = now
            cursor = make_cursor(last, seen)
            verb = self._assignment(ticket, assignee)
            when = data.get("updated_datetime") or last
            action_id = f"gorgias:{ref}:assignee:{now or '-'}:{when}"
            fetched.append((Action(action_id, session_id, verb), cursor))
        if data.get("status") == "closed":
            when = data.get("closed_datetime") or data.get("updated_datetime") or last
            release = Release(None, TICKET_CLOSED)
            fetched.append((Action(f"gorgias:{ref}:closed:{when}", session_id, release), cursor))
        if marker is not None:
            known.listed = (marker, cursor)
        return fetched

    # -- helpers -----------------------------------------------------------------------------

    def _ticket(self, ticket: Ticket, transcript: Transcript, email: str) -> dict[str, Any]:
        metadata = transcript.user_metadata
        name = metadata.get("name")
        name = name if isinstance(name, str) and name.strip() else transcript.user_id
        message = {
            "channel": "api",
            "via": "api",
            "from_agent": False,
            "external_id": f"{ticket.session_id}:request",
            "body_text": transcript_text(transcript),
            "sender": {"email": email},
        }
        return {
            "external_id": ticket.session_id,
            "channel": "api",
            "via": "api",
            "from_agent": False,
            "subject": f"Livechat with {name}",
            "customer": {"email": email, "name": name},
            "messages": [message],
            "meta": {
                "switchover": {
                    "bot_id": ticket.bot_id,
                    "conversation_id": ticket.conversation_id,
                    "session_id": ticket.session_id,
                    "user_id": transcript.user_id,
                }
            },
        }

    async def _find(self, session_id: str) -> Mapping[str, Any] | None:
        """The ticket an earlier try opened for the session, if any."""
        # Filtered again here: a few of the newest tickets, should the filter be ignored.
        page = await self.request(
            "GET", "/api/tickets", params={"external_id": session_id, "limit": 30}
        )
        data = page.get("data") if isinstance(page, Mapping) else None
        for found in data or []:
            if isinstance(found, Mapping) and found.get("external_id") == session_id:
                return found
        return None

    def _assignment(self, ticket: Ticket, to: Agent | None) -> Verb:
        if ticket.agent_id is None and to is not None:
            return Accept(to)
        current = Agent(ticket.agent_id or "gorgias", ticket.agent_name)
        return Transfer(current, to)

    def _ref(self, ticket: Ticket) -> str:
        if ticket.ref is None:
            raise PlatformRefused(f"session {ticket.session_id} has no Gorgias ticket")
        return ticket.ref

    def _remember(self, ref: str, data: Mapping[str, Any]) -> _Known:
        known = self._known.get(ref)
        if known is None:
            customer = data.get("customer")
            email = customer.get("email") if isinstance(customer, Mapping) else None
            sender: dict[str, Any] = {"email": email} if isinstance(email, str) else {}
            if not sender and isinstance(customer, Mapping) and customer.get("id") is not None:
                sender = {"id": customer["id"]}
            known = self._known[ref] = _Known(sender, uncertain=True)
        known.closed = data.get("status") == "closed"
        return known

    async def _known_of(self, ref: str) -> _Known:
        """What is known of the ticket; after a restart, read it once."""
        known = self._known.get(ref)
        if known is not None:
            return known
        data = await self.request("GET", f"/api/tickets/{ref}")
        if not isinstance(data, Mapping):
            raise OutcomeUnknown(f"GET /api/tickets/{ref}: the answer is not a ticket")
        return self._remember(ref, data)

    async def _read_posted(self, ticket: Ticket, ref: str, known: _Known) -> None:
        """Find which of the session's messages are in the ticket already."""
        prefix = f"{ticket.session_id}:"
        for message in await self._messages_after(ref, 0):
            external_id = message.get("external_id")
            if not isinstance(external_id, str) or not external_id.startswith(prefix):
                continue
            suffix = external_id[len(prefix) :]
            if suffix.isdigit():
                known.posted = max(known.posted, int(suffix))
            elif suffix == "ended":
                known.noted = True
        known.uncertain = False

    async def _messages_after(self, ref: str, last: int) -> list[Mapping[str, Any]]:
        """The ticket's messages with an id above ``last``, oldest first: newest pages first
        until one reaches ``last``."""
        params: dict[str, Any] = {
            "ticket_id": ref,
            "order_by": "created_datetime:desc",
            "limit": PAGE_SIZE,
        }
        found: dict[int, Mapping[str, Any]] = {}
        for _ in range(MAX_PAGES):
            page = await self.request("GET", "/api/messages", params=params)
            if not isinstance(page, Mapping):
                raise OutcomeUnknown("GET /api/messages: the answer is not a list")
            data = [m for m in page.get("data") or [] if isinstance(m, Mapping)]
            for message in data:
                if _id(message.get("id")) > last:
                    found[_id(message.get("id"))] = message
            meta = page.get("meta")
            following = meta.get("next_cursor") if isinstance(meta, Mapping) else None
            if not data or any(_id(m.get("id")) <= last for m in data) or not following:
                break
            params["cursor"] = following
        else:
            log.warning(
                "ticket %s: more than %d messages to read; read the newest",
                ref,
                MAX_PAGES * PAGE_SIZE,
            )
        return [found[key] for key in sorted(found)]
