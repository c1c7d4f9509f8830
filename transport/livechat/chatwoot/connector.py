"""Switchover's sessions in a Chatwoot API-channel inbox, through Chatwoot's Application API.

One Chatwoot conversation per livechat session (an incoming message on a resolved
conversation would reopen it, so sessions never share one):

* **open**: find or create the contact (``identifier`` = the Switchover user id, the user's
  flat metadata as ``custom_attributes``), create the conversation (status ``open``,
  ``custom_attributes.switchover_session``), post the transcript so far as one private note;
  the conversation's display id is the ticket's ``ref``. Repeating it after a crash finds the
  conversation (and the note) made the first time instead of making another. The ticket's
  cursor starts at the conversation's beginning: an agent or an automation may answer
  before the note is in, and Switchover's own messages are told apart by their type.
* **post**: each message the user writes, as an ``incoming`` message. Chatwoot takes no
  idempotency key, so when a post's outcome is unknown (a timeout, a 5xx), the next try first
  reads the messages Chatwoot has after the last one known before that post, and posts only
  if no identical incoming message is there.
* **typing**: ``toggle_typing_status`` on (best effort).
* **close**: a private note with the reason, then ``toggle_status`` resolved (unless the
  agent resolved it first).
* **fetch**: what the agents did since the ticket's cursor (a message id, as a string): the
  conversation (its assignee and status), then its messages after the cursor, oldest first
  (at most 100 a page, read until a page is short). Only outgoing, non-private messages
  reach the user; incoming ones (Switchover's own posts), private notes, activity and
  template messages are skipped. A new assignee is an accept (or a transfer from the agent
  before); unassigning changes nothing (the session stays with its agent until another is
  assigned or writes); a resolved conversation ends the session or offers the sign-off
  (``on_resolve``). Action ids are ``chatwoot:<message id>``,
  ``chatwoot:<conversation>:assignee:<user id>#<n>`` (n counts the assignee's changes) and
  ``chatwoot:<conversation>:resolved@<last message id>``, so a repeated read repeats nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from actors import Content, Entry, Party
from actors.model.deliveries import Transcript
from transport.livechat.chatwoot.options import ChatwootOptions
from transport.livechat.platform import (
    Accept,
    Action,
    Agent,
    Message,
    PlatformRefused,
    PlatformUnavailable,
    Release,
    SignOff,
    Transfer,
    Verb,
)
from transport.livechat.tickets import Ticket
from transport.livechat.webhook import retry_after

#: Chatwoot answers at most this many messages per ``?after=`` read.
PAGE = 100
#: Pages read at most in one go (a conversation of 10,000 new messages is read in parts).
MAX_PAGES = 100
#: Pages of contact search results looked through for an exact identifier.
MAX_SEARCH_PAGES = 20
#: Chatwoot refuses longer message contents.
MAX_CONTENT = 100_000
#: The custom attribute naming the session a conversation serves.
SESSION_ATTRIBUTE = "switchover_session"
CONVERSATION_ATTRIBUTE = "switchover_conversation"
NOTE_HEADER = "Conversation before the handoff"
OUTGOING, INCOMING = 1, 0
AGENT_SENDERS = ("user", "agent_bot")
#: Why a session ends when an agent resolves its conversation, or someone deletes it.
RESOLVED, DELETED = "resolved", "deleted"
#: Reasons the conversation already knows (nothing to note or resolve at the end).
AGENT_REASONS = (RESOLVED, DELETED)
ATTACHMENT_TYPES = {"image": "image", "audio": "audio", "video": "video", "file": "file"}


class Unsure(PlatformUnavailable):
    """A failed call after which Chatwoot may or may not have done what it was asked (a
    timeout, a broken connection, a 5xx): tried again, with care for posts."""


class ChatwootRefused(PlatformRefused):
    """Chatwoot refused a call for good; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def describe(content: Content) -> str:
    """Readable words for any content: its text, a button's text or payload, else a short
    description of what it is (``[image] https://...``)."""
    data = content.content
    for key in ("text", "payload", "title"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            if content.content_type in ("text", "payload"):
                return value
            return f"[{content.content_type}] {value}"
    url = data.get("url")
    if isinstance(url, str) and url:
        return f"[{content.content_type}] {url}"
    return f"[{content.content_type}]"


def contact_attributes(metadata: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """The user's metadata as Chatwoot custom attributes: flat strings, numbers, booleans."""
    return {
        str(key): value
        for key, value in metadata.items()
        if isinstance(value, str | int | float | bool)
    }


def transcript_note(ticket: Ticket, transcript: Transcript) -> str:
    """The transcript so far as one readable private note."""
    lines = [
        f"{NOTE_HEADER} (Switchover conversation {ticket.conversation_id}, "
        f"session {ticket.session_id}):"
    ]
    if transcript.truncated:
        lines.append("(earlier messages left out)")
    labels = {Party.USER: "User", Party.BOT: "Bot", Party.AGENT: "Agent"}
    body = [
        f"{labels[e.sender]}: {describe(e.content)}"
        for e in transcript.entries
        if e.sender in labels
    ]
    if not body:
        body = ["(no messages before the handoff)"]
    note = "\n".join(lines + body)
    while len(note) > MAX_CONTENT and len(body) > 1:
        body = body[len(body) // 4 or 1 :]
        note = "\n".join([*lines, "(earlier messages left out)", *body])
    return note[:MAX_CONTENT]


def close_note(reason: str) -> str:
    return f"The session ended in Switchover (reason: {reason})."


class ChatwootConnector:
    """Calls Chatwoot's Application API for one bot's sessions."""

    def __init__(self, options: ChatwootOptions, http: httpx.AsyncClient) -> None:
        self.options = options
        self.http = http
        #: The highest message id known per session (for checking an unsure post).
        self._last_known: dict[str, int] = {}
        #: Per session, a post whose outcome is unknown: its entry's seq and the last
        #: message id known before it was tried.
        self._unsure: dict[str, tuple[int, int]] = {}
        #: Per session, how far a fetch read past the cursor it left (skipped messages
        #: only): (the cursor it left, the last id it read).
        self._read_past: dict[str, tuple[str, int]] = {}
        #: Per session, the conversation's assignee as last read, and how many times it
        #: changed (so assigning A, B, then A again is three actions, not two).
        self._assignees: dict[str, tuple[str | None, int]] = {}
        #: Sessions whose close note is in.
        self._close_noted: set[str] = set()
        #: The user id of the access token's owner, once seen (its typing is Switchover's).
        self.own_user_id: int | None = None

    # -- Connector ------------------------------------------------------------------------

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        contact_id, source_id, known = await self._contact(transcript)
        cid = await self._session_conversation(contact_id, ticket.session_id) if known else None
        note_id: int | None = None
        if cid is None:
            created = await self._call(
                "POST",
                "/conversations",
                {
                    "source_id": source_id,
                    "inbox_id": self.options.inbox_id,
                    "contact_id": contact_id,
                    "status": "open",
                    "custom_attributes": {
                        SESSION_ATTRIBUTE: ticket.session_id,
                        CONVERSATION_ATTRIBUTE: ticket.conversation_id,
                    },
                },
            )
            cid = _int(created, "id")
        else:
            # Made by an earlier try that did not live to record it: its note may be there.
            for message in await self._messages_after(str(cid), 0):
                if message.get("private") and str(message.get("content", "")).startswith(
                    NOTE_HEADER
                ):
                    note_id = _int(message, "id")
        if note_id is None:
            note = await self._note(str(cid), transcript_note(ticket, transcript))
            note_id = _int(note, "id")
        self._remember(ticket.session_id, note_id)
        ticket.posted_id = str(note_id)
        # Read from the conversation's start: an agent (or an automation) may answer before
        # the note is in. Switchover's own messages are told apart by their type (incoming,
        # private), never by where they are.
        ticket.cursor = "0"
        return str(cid)

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        cid = self._ref(ticket)
        text = describe(entry.content)[:MAX_CONTENT] or "[empty message]"
        unsure = self._unsure.get(ticket.session_id)
        found: int | None = None
        if unsure is not None and unsure[0] == entry.seq:
            found = await self._already_posted(cid, unsure[1], text)
        elif ticket.session_id not in self._last_known and ticket.posted_id is not None:
            # The first post since this process started: the last one before a crash may
            # have reached Chatwoot without being recorded (posts of a session go one by one,
            # so only that one can come after the last recorded).
            found = await self._already_posted(cid, int(ticket.posted_id), text)
        if found is not None:
            self._unsure.pop(ticket.session_id, None)
            self._remember(ticket.session_id, found)
            ticket.posted_id = str(found)
            return
        if ticket.session_id not in self._last_known:
            # Know where the conversation stands before a post whose outcome may be unsure.
            later = await self._messages_after(cid, _cursor_id(ticket.cursor))
            self._remember(ticket.session_id, _last_id(later, _cursor_id(ticket.cursor)))
        mark = self._last_known[ticket.session_id]
        body = {"content": text, "message_type": "incoming", "private": False}
        try:
            posted = await self._call("POST", f"/conversations/{cid}/messages", body)
        except Unsure:
            self._unsure[ticket.session_id] = (entry.seq, mark)
            raise
        self._unsure.pop(ticket.session_id, None)
        self._remember(ticket.session_id, _int(posted, "id"))
        ticket.posted_id = str(_int(posted, "id"))

    async def typing(self, ticket: Ticket) -> None:
        cid = self._ref(ticket)
        await self._call(
            "POST", f"/conversations/{cid}/toggle_typing_status", {"typing_status": "on"}
        )

    async def close(self, ticket: Ticket, reason: str) -> None:
        cid, session_id = ticket.ref, ticket.session_id
        if cid is not None and reason not in AGENT_REASONS:
            if session_id not in self._close_noted:
                await self._note(cid, close_note(reason))
                self._close_noted.add(session_id)
            await self._call("POST", f"/conversations/{cid}/toggle_status", {"status": "resolved"})
        for memory in (self._last_known, self._unsure, self._read_past, self._assignees):
            memory.pop(session_id, None)
        self._close_noted.discard(session_id)

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        if ticket.ref is None:
            return ()
        cid = ticket.ref
        # The conversation first: every message written before its state changed is then
        # in the list read after it (a last message is never lost to its resolve).
        try:
            conversation = await self._call("GET", f"/conversations/{cid}")
        except ChatwootRefused as refused:
            if refused.status != 404:
                raise
            release = Release(None, DELETED)
            gone = Action(f"chatwoot:{cid}:deleted", ticket.session_id, release)
            return [(gone, ticket.cursor or "0")]
        start = ticket.cursor or "0"
        after = _cursor_id(start)
        read_past = self._read_past.get(ticket.session_id)
        if read_past is not None and read_past[0] == start:
            after = max(after, read_past[1])
        messages = await self._messages_after(cid, after)
        assignee = _assignee(conversation)
        seen = self._assignees.get(ticket.session_id)
        generation = 0 if seen is None else seen[1] + (seen[0] != _id_of(assignee))
        self._assignees[ticket.session_id] = (_id_of(assignee), generation)
        actions = _Reading(ticket, start, after, assignee, generation).actions(
            messages, conversation.get("status") == "resolved", self.options.on_resolve
        )
        last = _last_id(messages, after)
        self._remember(ticket.session_id, last)
        left = actions[-1][1] if actions else start
        self._read_past[ticket.session_id] = (left, last)
        return actions

    # -- the contact and the conversation ------------------------------------------------------

    async def _contact(self, transcript: Transcript) -> tuple[int, str, bool]:
        """The contact's id, its source id in the inbox, and whether it existed before."""
        identifier = transcript.user_id
        attributes = contact_attributes(transcript.user_metadata)
        name = transcript.user_metadata.get("name")
        contact = await self._find_contact(identifier) if identifier else None
        if contact is None:
            body: dict[str, Any] = {"inbox_id": self.options.inbox_id}
            if identifier:
                body["identifier"] = identifier
            if isinstance(name, str) and name.strip():
                body["name"] = name
            if attributes:
                body["custom_attributes"] = attributes
            try:
                created = await self._call("POST", "/contacts", body)
            except ChatwootRefused as refused:
                # Made meanwhile (the identifier is taken): use it.
                contact = await self._find_contact(identifier) if identifier else None
                if refused.status != 422 or contact is None:
                    raise
            else:
                payload = _mapping(created, "payload")
                contact_id = _int(_mapping(payload, "contact"), "id")
                source_id = _mapping(payload, "contact_inbox").get("source_id")
                if not isinstance(source_id, str) or not source_id:
                    source_id = await self._contact_inbox(contact_id)
                return contact_id, source_id, False
        contact_id = _int(contact, "id")
        if attributes and any(
            (contact.get("custom_attributes") or {}).get(k) != v for k, v in attributes.items()
        ):
            # Custom attributes sent are merged into the contact's by Chatwoot.
            await self._call("PUT", f"/contacts/{contact_id}", {"custom_attributes": attributes})
        for link in contact.get("contact_inboxes") or ():
            inbox = link.get("inbox") if isinstance(link, Mapping) else None
            if isinstance(inbox, Mapping) and inbox.get("id") == self.options.inbox_id:
                source_id = link.get("source_id")
                if isinstance(source_id, str) and source_id:
                    return contact_id, source_id, True
        return contact_id, await self._contact_inbox(contact_id), True

    async def _find_contact(self, identifier: str) -> Mapping[str, Any] | None:
        """The contact whose identifier is exactly ``identifier`` (the search also matches
        names, e-mails and parts of identifiers, so its pages are looked through)."""
        for page in range(1, MAX_SEARCH_PAGES + 1):
            found = await self._call(
                "GET", "/contacts/search", params={"q": identifier, "page": str(page)}
            )
            contacts = found.get("payload") if isinstance(found, Mapping) else None
            if not isinstance(contacts, list) or not contacts:
                return None
            for contact in contacts:
                if isinstance(contact, Mapping) and contact.get("identifier") == identifier:
                    return contact
        return None

    async def _contact_inbox(self, contact_id: int) -> str:
        link = await self._call(
            "POST", f"/contacts/{contact_id}/contact_inboxes", {"inbox_id": self.options.inbox_id}
        )
        source_id = link.get("source_id") if isinstance(link, Mapping) else None
        if not isinstance(source_id, str) or not source_id:
            raise PlatformUnavailable("Chatwoot gave no source_id for the contact's inbox")
        return source_id

    async def _session_conversation(self, contact_id: int, session_id: str) -> int | None:
        """The conversation an earlier try made for this session, if any."""
        listed = await self._call("GET", f"/contacts/{contact_id}/conversations")
        conversations = listed.get("payload") if isinstance(listed, Mapping) else None
        for conversation in conversations if isinstance(conversations, list) else ():
            if not isinstance(conversation, Mapping):
                continue
            attributes = conversation.get("custom_attributes") or {}
            if (
                conversation.get("inbox_id") == self.options.inbox_id
                and isinstance(attributes, Mapping)
                and attributes.get(SESSION_ATTRIBUTE) == session_id
            ):
                return _int(conversation, "id")
        return None

    # -- messages -------------------------------------------------------------------------------

    async def _note(self, cid: str, text: str) -> Mapping[str, Any]:
        note = await self._call(
            "POST",
            f"/conversations/{cid}/messages",
            {"content": text, "message_type": "outgoing", "private": True},
        )
        if not isinstance(note, Mapping):
            raise Unsure("Chatwoot's answer to a note is not an object")
        sender = note.get("sender")
        if isinstance(sender, Mapping) and isinstance(sender.get("id"), int):
            self.own_user_id = sender["id"]
        return note

    async def _messages_after(self, cid: str, after: int) -> list[Mapping[str, Any]]:
        """The conversation's messages after message ``after``, oldest first."""
        messages: list[Mapping[str, Any]] = []
        for _ in range(MAX_PAGES):
            page = await self._call(
                "GET", f"/conversations/{cid}/messages", params={"after": str(after)}
            )
            found = page.get("payload") if isinstance(page, Mapping) else None
            if not isinstance(found, list):
                raise PlatformUnavailable("Chatwoot's message list has no payload")
            batch = sorted(
                (m for m in found if isinstance(m, Mapping) and isinstance(m.get("id"), int)),
                key=lambda m: int(m["id"]),
            )
            batch = [m for m in batch if m["id"] > after]
            messages.extend(batch)
            if len(found) < PAGE or not batch:
                break
            after = batch[-1]["id"]
        return messages

    async def _already_posted(self, cid: str, mark: int, text: str) -> int | None:
        """The id of an incoming message with ``text`` after message ``mark``, if any."""
        for message in await self._messages_after(cid, mark):
            if _is_incoming(message) and str(message.get("content", "")).strip() == text.strip():
                return _int(message, "id")
        return None

    # -- HTTP -----------------------------------------------------------------------------------

    def _ref(self, ticket: Ticket) -> str:
        if ticket.ref is None:
            raise PlatformRefused(f"session {ticket.session_id} has no Chatwoot conversation")
        return ticket.ref

    def _remember(self, session_id: str, message_id: int) -> None:
        self._last_known[session_id] = max(self._last_known.get(session_id, 0), message_id)

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One call to the Application API; its JSON answer."""
        try:
            response = await self.http.request(
                method,
                self.options.api_url + path,
                json=dict(body) if body is not None else None,
                params=params,
                headers={"api_access_token": self.options.api_token},
                timeout=self.options.timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise PlatformUnavailable(f"cannot connect ({type(exc).__name__}: {exc})") from None
        except httpx.TimeoutException as exc:
            raise Unsure(f"no answer in time ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise Unsure(f"the connection failed ({type(exc).__name__}: {exc})") from None
        status = response.status_code
        if status >= 500:
            raise Unsure(
                f"answered HTTP {status}", retry_after(response.headers.get("retry-after"))
            )
        if status in (408, 429):
            raise PlatformUnavailable(
                f"answered HTTP {status}", retry_after(response.headers.get("retry-after"))
            )
        if not 200 <= status < 300:
            raise ChatwootRefused(
                f"{method} {path} answered HTTP {status}: {response.text[:200]!r}", status
            )
        if not response.content:
            return {}
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Unsure(f"{method} {path} answered {status} without JSON") from None


# -- reading what the agents did ------------------------------------------------------------


class _Reading:
    """Turns one read of a conversation into actions, in order.

    Messages each become a :class:`Message` (the engine joins an agent who writes without
    being assigned). A new assignee joins (an accept, or a transfer from the agent before)
    just before their first message of the read, else after everything read; its action
    id counts the assignee's changes, so a repeat of the same read is the same action, and
    an agent who writes while another is assigned does not make the assignee join again.
    A resolved conversation ends the session, or offers the sign-off, after everything.
    """

    def __init__(
        self, ticket: Ticket, start: str, after: int, assignee: Agent | None, generation: int
    ) -> None:
        self.ticket = ticket
        self.cid = ticket.ref
        self.cursor = start
        self.after = after
        self.current = ticket.agent_id
        self.assignee = assignee
        self.generation = generation
        self.found: list[tuple[Action, str]] = []

    def _add(self, action_id: str, verb: Verb, cursor: str) -> None:
        self.found.append((Action(action_id, self.ticket.session_id, verb), cursor))

    def _assign(self, agent: Agent) -> None:
        verb = Accept(agent) if self.current is None else Transfer(Agent(self.current), agent)
        action_id = f"chatwoot:{self.cid}:assignee:{agent.agent_id}#{self.generation}"
        self._add(action_id, verb, self.cursor)
        self.current = agent.agent_id

    def actions(
        self, messages: Sequence[Mapping[str, Any]], resolved: bool, on_resolve: str
    ) -> list[tuple[Action, str]]:
        waiting = self.assignee
        if waiting is not None and waiting.agent_id == self.current:
            waiting = None
        for message in messages:
            message_id = int(message["id"])
            if not _from_agent(message):
                continue
            agent = _agent(message.get("sender"))
            if agent is None:
                # Chatwoot's own outgoing message (an automation): from the agent in charge.
                if self.current is None:
                    continue
                agent = Agent(self.current)
            if waiting is not None and agent.agent_id == waiting.agent_id:
                self._assign(waiting)
                waiting = None
            contents = _contents(message)
            for n, content in enumerate(contents):
                action_id = f"chatwoot:{message_id}" + (f":{n}" if n else "")
                # Only the last part moves the cursor past the message.
                after_it = str(message_id) if n == len(contents) - 1 else self.cursor
                self._add(action_id, Message(agent, content), after_it)
            self.cursor = str(message_id)
            self.current = agent.agent_id
        if waiting is not None:
            self._assign(waiting)
        if resolved:
            by = self.assignee or (Agent(self.current) if self.current is not None else None)
            verb: Verb = (
                SignOff(by) if on_resolve == "offer" and by is not None else Release(by, RESOLVED)
            )
            last = _last_id(messages, self.after)
            self._add(f"chatwoot:{self.cid}:resolved@{last}", verb, self.cursor)
        return self.found


def _assignee(conversation: Mapping[str, Any]) -> Agent | None:
    meta = conversation.get("meta")
    return _agent(meta.get("assignee")) if isinstance(meta, Mapping) else None


def _id_of(agent: Agent | None) -> str | None:
    return agent.agent_id if agent is not None else None


def _from_agent(message: Mapping[str, Any]) -> bool:
    """An outgoing, non-private message: what the user is meant to see."""
    if message.get("private") is not False:
        return False
    if message.get("message_type") not in (OUTGOING, "outgoing"):
        return False
    sender = message.get("sender")
    if sender is None:
        return True
    return isinstance(sender, Mapping) and sender.get("type", "user") in AGENT_SENDERS


def _is_incoming(message: Mapping[str, Any]) -> bool:
    return message.get("message_type") in (INCOMING, "incoming") and not message.get("private")


def _agent(person: object) -> Agent | None:
    """A Chatwoot agent (a user, or an agent bot) as Switchover names agents."""
    if not isinstance(person, Mapping) or not isinstance(person.get("id"), int):
        return None
    kind = person.get("type") or "user"
    if kind not in AGENT_SENDERS:
        return None
    name = person.get("available_name") or person.get("name") or ""
    agent_id = str(person["id"]) if kind == "user" else f"{kind}:{person['id']}"
    return Agent(agent_id, name if isinstance(name, str) else "")


def _contents(message: Mapping[str, Any]) -> list[Content]:
    """What one Chatwoot message shows the user: its text, then each attachment."""
    contents = []
    text = message.get("content")
    if isinstance(text, str) and text.strip():
        contents.append(Content.text(text))
    for attachment in message.get("attachments") or ():
        if not isinstance(attachment, Mapping):
            continue
        url = attachment.get("data_url")
        if isinstance(url, str) and url:
            kind = ATTACHMENT_TYPES.get(str(attachment.get("file_type")), "file")
            contents.append(Content(kind, {"url": url}))
    return contents


def _last_id(messages: Sequence[Mapping[str, Any]], default: int) -> int:
    return max([default, *(int(m["id"]) for m in messages)])


def _cursor_id(cursor: str | None) -> int:
    try:
        return max(0, int(cursor or 0))
    except ValueError:
        return 0


def _mapping(data: object, key: str) -> Mapping[str, Any]:
    value = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(value, Mapping):
        raise PlatformUnavailable(f"Chatwoot's answer has no {key!r} object")
    return value


def _int(data: object, key: str) -> int:
    value = data.get(key) if isinstance(data, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlatformUnavailable(f"Chatwoot's answer has no numeric {key!r}")
    return value
