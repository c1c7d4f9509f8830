"""Chatwoot on real HTTP, as far as Switchover uses it: one account, its API inboxes,
contacts, conversations and messages, and the inbox's webhooks.

It checks what Chatwoot checks: the ``api_access_token`` header (401), the account, inbox,
contact and conversation ids (404), the fields its OpenAPI definitions require and their
enums (422), administrator rights for creating an inbox (401), and an identifier used by
two contacts (422). It answers the shapes Chatwoot answers (``payload`` wrappers, the
conversation's display id as ``id``, ``messages?after=`` oldest first and at most 100).

A test acts as Chatwoot's agents (:meth:`Chatwoot.agent_reply`, :meth:`private_note`,
:meth:`assign`, :meth:`resolve`, :meth:`typing`); each change sends the inbox's webhook to
its ``webhook_url``, signed like Chatwoot 4.13 and later (``X-Chatwoot-Signature: sha256=``
HMAC of ``"<timestamp>." + body``), once, from one delivery task, and never again when it
fails (like Chatwoot). Switchover's own calls send their webhooks too (its incoming
messages, its notes, its resolve, its typing), as Chatwoot does.

It misbehaves on command: drop, repeat or swap an agent's message's webhook, sign it with the
wrong secret or an old timestamp, sign nothing (an older installation), answer the next API
calls with an error (500, 429 with ``Retry-After``), even after doing what was asked.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

ACCOUNT_ID = 1
INBOX_ID = 1
SECRET = "a-chatwoot-inbox-signing-secret"
URL_TOKEN = "a-token-in-the-chatwoot-webhook-url"
API_TOKEN = "chatwoot-agent-access-token-24"
ADMIN_TOKEN = "chatwoot-admin-access-token-24"
SIGN_OFF = "Let us know if we can do anything else.\n\nLIVECHAT_SESSION_END"
PAGE_SIZE = 15
STATUSES = ("open", "resolved", "pending", "snoozed")
MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}


@attrs.frozen
class User:
    """A Chatwoot user (an agent or an administrator)."""

    id: int
    name: str
    role: str = "agent"

    def push_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "available_name": self.name,
            "avatar_url": "",
            "type": "user",
            "availability_status": "online",
            "thumbnail": "",
        }

    def agent_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": ACCOUNT_ID,
            "availability_status": "online",
            "auto_offline": True,
            "confirmed": True,
            "email": f"{self.name.lower()}@example.com",
            "available_name": self.name,
            "name": self.name,
            "role": self.role,
            "thumbnail": "",
        }


#: The owner of API_TOKEN (the access token Switchover calls with).
TOKEN_OWNER = User(3, "Switchover desk")
ADMIN = User(1, "Ada Admin", "administrator")
HANA = User(7, "Hana")
INES = User(9, "Ines")


class _Reply(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def _refuse(status: int, message: str) -> _Reply:
    return _Reply(status, {"message": message, "error": message})


@attrs.define
class Delivery:
    """One webhook sent (or not): its event, its conversation, the answer's status (0:
    nothing answered) and the body Switchover answered with."""

    event: str
    conversation_id: int | None
    status: int
    answer: str = ""
    #: The message a message_created webhook is about.
    message_id: int | None = None


@attrs.define
class Chatwoot:
    #: The API inbox's signing secret; ``None`` for an installation that signs nothing.
    secret: str | None = SECRET
    users: dict[str, User] = attrs.field(
        factory=lambda: {API_TOKEN: TOKEN_OWNER, ADMIN_TOKEN: ADMIN}
    )
    inboxes: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    contacts: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    #: (contact id, inbox id) -> source id
    contact_inboxes: dict[tuple[int, int], str] = attrs.field(factory=dict)
    conversations: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    messages: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    #: Every API call: (method, path, status, when on trio's clock).
    calls: list[tuple[str, str, int, float]] = attrs.field(factory=list)
    deliveries: list[Delivery] = attrs.field(factory=list)
    #: API failures to answer: (method, path pattern, status, Retry-After, after storing).
    failures: collections.deque[tuple[str, str, int, str | None, bool]] = attrs.field(
        factory=collections.deque
    )
    _ids: dict[str, itertools.count[int]] = attrs.field(
        factory=lambda: {
            k: itertools.count(start)
            for k, start in (("inbox", 2), ("contact", 100), ("conversation", 1), ("message", 1000))
        }
    )
    _outbox: Any = None
    #: Webhooks queued and not yet handled.
    _unsent: int = 0
    _held: list[tuple[dict[str, Any], str]] = attrs.field(factory=list)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _app: Starlette = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        methods = ["GET", "POST", "PUT"]
        self._app = Starlette(routes=[Route("/api/{rest:path}", self._receive, methods=methods)])
        self.inboxes[INBOX_ID] = {
            "id": INBOX_ID,
            "name": "Preset API inbox",
            "channel_type": "Channel::Api",
            "webhook_url": "",
            "secret": self.secret,
        }

    # -- for tests: set-up and waiting --------------------------------------------------------

    def set_webhook_url(self, url: str, inbox_id: int = INBOX_ID) -> None:
        self.inboxes[inbox_id]["webhook_url"] = url

    def fail_next(
        self,
        count: int,
        status: int = 500,
        *,
        method: str = "POST",
        path: str = r"/messages$",
        retry_after: str | None = None,
        after_storing: bool = False,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` whose path matches ``path`` with
        ``status``; ``after_storing``: do what was asked first (the caller cannot tell)."""
        self.failures.extend([(method, path, status, retry_after, after_storing)] * count)

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        """The first true value of ``check()``, re-checked after every change."""
        with trio.fail_after(timeout):
            while True:
                found = check()
                if found:
                    return found
                await self._changed.wait()

    def conversation_of(self, switchover_conversation: str) -> dict[str, Any] | None:
        """The newest Chatwoot conversation of a Switchover conversation."""
        found = [
            c
            for c in self.conversations.values()
            if c["custom_attributes"].get("switchover_conversation") == switchover_conversation
        ]
        return found[-1] if found else None

    def of(
        self, cid: int, kind: str | None = None, *, private: bool | None = None
    ) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages.values()
            if m["conversation_id"] == cid
            and (kind is None or m["message_type"] == MESSAGE_TYPES[kind])
            and (private is None or m["private"] is private)
        ]

    def incoming(self, cid: int) -> list[str]:
        """What the contact wrote in the conversation (Switchover's posts), in order."""
        return [m["content"] for m in self.of(cid, "incoming")]

    def notes(self, cid: int) -> list[str]:
        return [m["content"] for m in self.of(cid, "outgoing", private=True)]

    async def delivery_of(self, message: dict[str, Any], timeout: float = 10.0) -> Delivery:
        """The (first) delivery of ``message``'s webhook, once it was handled."""
        found: list[Delivery] = await self.wait_until(
            lambda: [d for d in self.deliveries if d.message_id == message["id"]], timeout
        )
        return found[0]

    # -- for tests: the agents ---------------------------------------------------------------

    # Each takes ``mishap``, what goes wrong with its webhook: "drop" (never sent), "twice",
    # "swap" (held back and sent after the next webhook), "wrong_secret", "stale" (signed ten
    # minutes ago), "unsigned".

    async def agent_reply(
        self,
        cid: int,
        text: str,
        agent: User = HANA,
        *,
        attachments: list[dict[str, Any]] | None = None,
        mishap: str = "",
    ) -> dict[str, Any]:
        return self._message(cid, text, "outgoing", agent, attachments=attachments, mishap=mishap)

    async def private_note(
        self, cid: int, text: str, agent: User = HANA, *, mishap: str = ""
    ) -> dict[str, Any]:
        return self._message(cid, text, "outgoing", agent, private=True, mishap=mishap)

    async def assign(self, cid: int, agent: User | None, by: User = ADMIN) -> None:
        conversation = self._conversation(cid)
        before = conversation["assignee"]
        conversation["assignee"] = agent
        words = f"Assigned to {agent.name} by {by.name}" if agent else f"Unassigned by {by.name}"
        self._message(cid, words, "activity", None)
        self._conversation_event(
            "conversation_updated",
            conversation,
            {
                "assignee_id": {
                    "previous_value": before and before.id,
                    "current_value": agent and agent.id,
                }
            },
        )

    async def resolve(self, cid: int, by: User = HANA) -> None:
        self._set_status(self._conversation(cid), "resolved", by)

    async def delete(self, cid: int) -> None:
        """An administrator deletes the conversation (Chatwoot sends no webhook for it)."""
        self.conversations.pop(cid)
        for message_id in [m["id"] for m in self.of(cid)]:
            del self.messages[message_id]
        self.changed()

    async def typing(self, cid: int, agent: User = HANA, *, private: bool = False) -> None:
        self._typing(self._conversation(cid), agent, private)

    # -- the webhooks -----------------------------------------------------------------------------

    @asynccontextmanager
    async def delivering(self) -> AsyncIterator[None]:
        """Send the webhooks for as long as the block runs."""
        send, receive = trio.open_memory_channel[tuple[dict[str, Any], str, str]](1000)
        self._outbox = send
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, http)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
                self._outbox = None

    def _send_webhook(
        self, payload: dict[str, Any], inbox_id: int = INBOX_ID, mishap: str = ""
    ) -> None:
        url = self.inboxes[inbox_id]["webhook_url"]
        if url and self._outbox is not None:
            self._unsent += 1
            self._outbox.send_nowait((payload, url, mishap))

    async def _deliver(self, receive: Any, http: httpx.AsyncClient) -> None:
        async for payload, url, mishap in receive:
            if mishap == "swap":
                self._held.append((payload, url))
                continue
            await self._post(http, payload, url, mishap)
            while self._held:
                held, held_url = self._held.pop(0)
                await self._post(http, held, held_url, "")

    async def quiet(self, timeout: float = 10.0) -> None:
        """Once every webhook queued so far was handled (a swapped one waits for the next)."""
        await self.wait_until(lambda: self._unsent == len(self._held), timeout)

    async def _post(
        self, http: httpx.AsyncClient, payload: dict[str, Any], url: str, mishap: str
    ) -> None:
        cid = (
            payload.get("conversation", {}).get("id")
            if "conversation" in payload
            else payload.get("id")
        )
        message_id = payload["id"] if payload["event"].startswith("message_") else None
        if mishap == "drop":
            self.deliveries.append(Delivery(payload["event"], cid, 0, "dropped", message_id))
            self._unsent -= 1
            self.changed()
            return
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()) - (600 if mishap == "stale" else 0))
        headers = {"Content-Type": "application/json", "X-Chatwoot-Delivery": str(uuid.uuid4())}
        secret = "not-the-inbox-secret-at-all" if mishap == "wrong_secret" else self.secret
        if secret is not None and mishap != "unsigned":
            digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
            headers["X-Chatwoot-Signature"] = "sha256=" + digest.hexdigest()
            headers["X-Chatwoot-Timestamp"] = timestamp
        for _ in range(2 if mishap == "twice" else 1):
            try:
                response = await http.post(url, content=body, headers=headers, timeout=5.0)
                status, answer = response.status_code, response.text
            except httpx.HTTPError as exc:
                status, answer = 0, type(exc).__name__
            self.deliveries.append(Delivery(payload["event"], cid, status, answer, message_id))
            self.changed()
        self._unsent -= 1
        self.changed()

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        method, path = request.method, request.url.path
        query = dict(request.query_params)
        failure = self._failure(method, path)
        headers: dict[str, str] = {}
        if failure is not None and not failure[4]:
            status, answer = failure[2], {"error": "injected failure"}
        else:
            try:
                status, answer = 200, self._route(method, path, query, request.headers, body)
            except _Reply as reply:
                status, answer = reply.status, reply.body
            if failure is not None and status < 300:
                # Done, but the caller is told it failed.
                status, answer = failure[2], {"error": "injected failure after storing"}
        if failure is not None and failure[3] is not None:
            headers["retry-after"] = failure[3]
        self.calls.append((method, path, status, trio.current_time()))
        self.changed()
        return JSONResponse(answer, status, headers=headers)

    def _failure(self, method: str, path: str) -> tuple[str, str, int, str | None, bool] | None:
        if self.failures:
            wanted_method, pattern, *_ = self.failures[0]
            if wanted_method == method and re.search(pattern, path):
                return self.failures.popleft()
        return None

    def _route(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes
    ) -> Any:
        user = self.users.get(headers.get("api_access_token", ""))
        if user is None:
            raise _Reply(401, {"error": "Invalid Access Token"})
        found = re.fullmatch(r"/api/v1/accounts/(\d+)(/.*)", path)
        if found is None:
            raise _refuse(404, "not found")
        if int(found.group(1)) != ACCOUNT_ID:
            raise _refuse(404, "Account not found")
        rest = found.group(2)
        data: Any = {}
        if body:
            try:
                data = json.loads(body)
            except ValueError:
                raise _refuse(400, "bad JSON") from None
            if not isinstance(data, dict):
                raise _refuse(422, "the body must be an object")
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("POST", r"/inboxes", self._create_inbox),
            ("GET", r"/contacts/search", self._search_contacts),
            ("POST", r"/contacts", self._create_contact),
            ("PUT", r"/contacts/(\d+)", self._update_contact),
            ("POST", r"/contacts/(\d+)/contact_inboxes", self._create_contact_inbox),
            ("GET", r"/contacts/(\d+)/conversations", self._contact_conversations),
            ("POST", r"/conversations", self._create_conversation),
            ("GET", r"/conversations/(\d+)", self._show_conversation),
            ("GET", r"/conversations/(\d+)/messages", self._list_messages),
            ("POST", r"/conversations/(\d+)/messages", self._create_message),
            ("POST", r"/conversations/(\d+)/toggle_status", self._toggle_status),
            ("POST", r"/conversations/(\d+)/toggle_typing_status", self._toggle_typing),
            ("POST", r"/conversations/(\d+)/assignments", self._assignments),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, rest)
            if match is not None and route_method == method:
                return handler(user, data, query, *(int(g) for g in match.groups()))
        raise _refuse(404, f"no route for {method} {rest}")

    # -- the API ----------------------------------------------------------------------------------

    def _create_inbox(self, user: User, data: dict[str, Any], query: dict[str, str]) -> Any:
        if user.role != "administrator":
            raise _Reply(401, {"error": "You are not authorized to do this action"})
        name, channel = data.get("name"), data.get("channel")
        if not isinstance(name, str) or not name:
            raise _refuse(422, "Name can't be blank")
        if not isinstance(channel, dict) or channel.get("type") != "api":
            raise _refuse(422, "channel.type must be one this fake knows: api")
        webhook_url = channel.get("webhook_url", "")
        if not isinstance(webhook_url, str):
            raise _refuse(422, "webhook_url must be a string")
        inbox_id = next(self._ids["inbox"])
        self.inboxes[inbox_id] = {
            "id": inbox_id,
            "name": name,
            "channel_type": "Channel::Api",
            "webhook_url": webhook_url,
            "secret": self.secret,
        }
        return self._inbox_json(inbox_id)

    def _inbox_json(self, inbox_id: int) -> dict[str, Any]:
        inbox = self.inboxes[inbox_id]
        shown = {
            "id": inbox_id,
            "name": inbox["name"],
            "channel_type": inbox["channel_type"],
            "webhook_url": inbox["webhook_url"],
            "inbox_identifier": f"inbox-{inbox_id}",
            "enable_auto_assignment": True,
        }
        if inbox["secret"] is not None:
            shown["secret"] = inbox["secret"]
        return shown

    def _inbox(self, inbox_id: object) -> dict[str, Any]:
        if isinstance(inbox_id, bool) or not isinstance(inbox_id, int):
            raise _refuse(422, "inbox_id is required and must be a number")
        inbox = self.inboxes.get(inbox_id)
        if inbox is None:
            raise _refuse(404, "Inbox not found")
        return inbox

    def _contact_json(
        self, contact: dict[str, Any], *, with_inboxes: bool = True
    ) -> dict[str, Any]:
        shown = {
            "id": contact["id"],
            "name": contact["name"],
            "email": None,
            "phone_number": None,
            "identifier": contact["identifier"],
            "thumbnail": "",
            "custom_attributes": dict(contact["custom_attributes"]),
            "availability_status": "offline",
        }
        if with_inboxes:
            shown["contact_inboxes"] = [
                {"source_id": source_id, "inbox": self._inbox_json(inbox_id)}
                for (contact_id, inbox_id), source_id in self.contact_inboxes.items()
                if contact_id == contact["id"]
            ]
        return shown

    def _search_contacts(self, user: User, data: dict[str, Any], query: dict[str, str]) -> Any:
        q = query.get("q", "").strip()
        if not q:
            raise _refuse(422, "q is required")
        page = int(query.get("page", "1") or 1)
        matches = [
            c
            for c in self.contacts.values()
            if q.lower() in (c["name"] or "").lower() or q in (c["identifier"] or "")
        ]
        shown = matches[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return {
            "meta": {"count": len(matches), "current_page": page},
            "payload": [self._contact_json(c) for c in shown],
        }

    def _create_contact(self, user: User, data: dict[str, Any], query: dict[str, str]) -> Any:
        inbox_id = data.get("inbox_id")
        self._inbox(inbox_id)
        identifier = data.get("identifier")
        if identifier is not None and not isinstance(identifier, str):
            raise _refuse(422, "identifier must be a string")
        if identifier and any(c["identifier"] == identifier for c in self.contacts.values()):
            raise _refuse(422, "Identifier has already been taken")
        attributes = data.get("custom_attributes", {})
        if not isinstance(attributes, dict):
            raise _refuse(422, "custom_attributes must be an object")
        contact_id = next(self._ids["contact"])
        contact = {
            "id": contact_id,
            "name": data.get("name") or f"contact-{contact_id}",
            "identifier": identifier,
            "custom_attributes": dict(attributes),
        }
        self.contacts[contact_id] = contact
        source_id = str(uuid.uuid4())
        self.contact_inboxes[(contact_id, inbox_id)] = source_id
        return {
            "payload": {
                "contact": self._contact_json(contact),
                "contact_inbox": {"inbox": self._inbox_json(inbox_id), "source_id": source_id},
            }
        }

    def _contact(self, contact_id: int) -> dict[str, Any]:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise _refuse(404, "Contact not found")
        return contact

    def _update_contact(
        self, user: User, data: dict[str, Any], query: dict[str, str], contact_id: int
    ) -> Any:
        contact = self._contact(contact_id)
        attributes = data.get("custom_attributes")
        if attributes is not None:
            if not isinstance(attributes, dict):
                raise _refuse(422, "custom_attributes must be an object")
            contact["custom_attributes"].update(attributes)
        if isinstance(data.get("name"), str):
            contact["name"] = data["name"]
        return {"payload": self._contact_json(contact)}

    def _create_contact_inbox(
        self, user: User, data: dict[str, Any], query: dict[str, str], contact_id: int
    ) -> Any:
        self._contact(contact_id)
        inbox_id = data.get("inbox_id")
        self._inbox(inbox_id)
        source_id = data.get("source_id") or str(uuid.uuid4())
        self.contact_inboxes[(contact_id, inbox_id)] = source_id
        return {"source_id": source_id, "inbox": self._inbox_json(inbox_id)}

    def _contact_conversations(
        self, user: User, data: dict[str, Any], query: dict[str, str], contact_id: int
    ) -> Any:
        self._contact(contact_id)
        mine = [c for c in self.conversations.values() if c["contact_id"] == contact_id]
        return {"payload": [self._conversation_json(c) for c in mine[-20:][::-1]]}

    def _create_conversation(self, user: User, data: dict[str, Any], query: dict[str, str]) -> Any:
        source_id = data.get("source_id")
        if not isinstance(source_id, str) or not source_id:
            raise _refuse(422, "source_id is required")
        links = [key for key, value in self.contact_inboxes.items() if value == source_id]
        if not links:
            raise _refuse(422, "no contact inbox has this source_id")
        contact_id, inbox_id = links[0]
        if "inbox_id" in data and data["inbox_id"] != inbox_id:
            raise _refuse(422, "inbox_id does not match the source_id's inbox")
        if "contact_id" in data and data["contact_id"] != contact_id:
            raise _refuse(422, "contact_id does not match the source_id's contact")
        status = data.get("status", "open")
        if status not in ("open", "resolved", "pending"):
            raise _refuse(422, "status must be open, resolved or pending")
        attributes = data.get("custom_attributes", {})
        if not isinstance(attributes, dict):
            raise _refuse(422, "custom_attributes must be an object")
        cid = next(self._ids["conversation"])
        conversation = {
            "id": cid,
            "inbox_id": inbox_id,
            "contact_id": contact_id,
            "status": status,
            "assignee": None,
            "custom_attributes": dict(attributes),
        }
        self.conversations[cid] = conversation
        self._conversation_event("conversation_created", conversation)
        return self._conversation_json(conversation)

    def _conversation(self, cid: int) -> dict[str, Any]:
        conversation = self.conversations.get(cid)
        if conversation is None:
            raise _refuse(404, "Conversation not found")
        return conversation

    def _conversation_json(self, conversation: dict[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "sender": self._contact_json(
                self.contacts[conversation["contact_id"]], with_inboxes=False
            ),
            "channel": "Channel::Api",
        }
        if conversation["assignee"] is not None:
            meta["assignee"] = conversation["assignee"].agent_json()
        mine = self.of(conversation["id"])
        return {
            "meta": meta,
            "id": conversation["id"],
            "messages": [self._message_json(mine[-1])] if mine else [],
            "account_id": ACCOUNT_ID,
            "inbox_id": conversation["inbox_id"],
            "status": conversation["status"],
            "custom_attributes": dict(conversation["custom_attributes"]),
            "can_reply": True,
            "timestamp": int(time.time()),
        }

    def _show_conversation(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        return self._conversation_json(self._conversation(cid))

    def _list_messages(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        self._conversation(cid)
        mine = self.of(cid)
        if "after" in query:
            after = int(query["after"])
            shown = [m for m in mine if m["id"] > after][:100]
        else:
            shown = mine[-20:]
        return {
            "meta": {
                "labels": [],
                "additional_attributes": {},
                "contact_id": self._conversation(cid)["contact_id"],
            },
            "payload": [self._message_json(m) for m in shown],
        }

    def _create_message(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        conversation = self._conversation(cid)
        content = data.get("content")
        if not isinstance(content, str):
            raise _refuse(422, "content is required")
        kind = data.get("message_type", "outgoing")
        if kind not in ("outgoing", "incoming"):
            raise _refuse(422, "message_type must be outgoing or incoming")
        private = data.get("private", False)
        if not isinstance(private, bool):
            raise _refuse(422, "private must be a boolean")
        sender = None if kind == "incoming" else user
        message = self._message(cid, content, kind, sender, private=private)
        if kind == "incoming" and conversation["status"] == "resolved":
            # An incoming message reopens a resolved conversation.
            self._set_status(conversation, "open", None)
        return self._message_json(message)

    def _toggle_status(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        conversation = self._conversation(cid)
        status = data.get("status")
        if status not in STATUSES:
            raise _refuse(422, f"status must be one of {', '.join(STATUSES)}")
        self._set_status(conversation, status, user)
        return {
            "meta": {},
            "payload": {"success": True, "current_status": status, "conversation_id": cid},
        }

    def _toggle_typing(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        conversation = self._conversation(cid)
        if data.get("typing_status") not in ("on", "off"):
            raise _refuse(422, "typing_status must be on or off")
        if data["typing_status"] == "on":
            self._typing(conversation, user, bool(data.get("is_private", False)))
        return {}

    def _assignments(
        self, user: User, data: dict[str, Any], query: dict[str, str], cid: int
    ) -> Any:
        raise _refuse(422, "this fake assigns through Chatwoot.assign")

    # -- what changes ---------------------------------------------------------------------------

    def _message(
        self,
        cid: int,
        content: str,
        kind: str,
        sender: User | None,
        *,
        private: bool = False,
        attachments: list[dict[str, Any]] | None = None,
        mishap: str = "",
    ) -> dict[str, Any]:
        conversation = self._conversation(cid)
        message = {
            "id": next(self._ids["message"]),
            "conversation_id": cid,
            "inbox_id": conversation["inbox_id"],
            "content": content,
            "message_type": MESSAGE_TYPES[kind],
            "private": private,
            "created_at": int(time.time()),
            "sender": sender,
            "attachments": attachments or [],
        }
        self.messages[message["id"]] = message
        if kind != "activity":
            self._send_webhook(
                {
                    "event": "message_created",
                    "id": message["id"],
                    "content": content,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                    "message_type": kind,
                    "content_type": "text",
                    "content_attributes": {},
                    "source_id": None,
                    "private": private,
                    "sender": self._sender(conversation, sender),
                    "inbox": {"id": conversation["inbox_id"], "name": "API inbox"},
                    "conversation": self._conversation_json(conversation),
                    "account": {"id": ACCOUNT_ID, "name": "Acme"},
                },
                conversation["inbox_id"],
                mishap,
            )
        self.changed()
        return message

    def _sender(self, conversation: dict[str, Any], sender: User | None) -> dict[str, Any]:
        if sender is None:
            contact = self.contacts[conversation["contact_id"]]
            return {"id": contact["id"], "name": contact["name"], "type": "contact"}
        return {"id": sender.id, "name": sender.name, "email": "", "type": "user"}

    def _message_json(self, message: dict[str, Any]) -> dict[str, Any]:
        shown = {
            "id": message["id"],
            "content": message["content"],
            "inbox_id": message["inbox_id"],
            "conversation_id": message["conversation_id"],
            "message_type": message["message_type"],
            "content_type": "text",
            "content_attributes": {},
            "created_at": message["created_at"],
            "private": message["private"],
            "source_id": None,
        }
        sender = message["sender"]
        if sender is not None:
            shown["sender"] = sender.push_data()
        elif message["message_type"] == MESSAGE_TYPES["incoming"]:
            conversation = self.conversations[message["conversation_id"]]
            contact = self.contacts[conversation["contact_id"]]
            shown["sender"] = {"id": contact["id"], "name": contact["name"], "type": "contact"}
        if message["attachments"]:
            shown["attachments"] = message["attachments"]
        return shown

    def _set_status(self, conversation: dict[str, Any], status: str, by: User | None) -> None:
        before = conversation["status"]
        conversation["status"] = status
        who = f" by {by.name}" if by else ""
        self._message(
            conversation["id"], f"Conversation was marked {status}{who}", "activity", None
        )
        self._conversation_event(
            "conversation_status_changed",
            conversation,
            {"status": {"previous_value": before, "current_value": status}},
        )

    def _conversation_event(
        self, event: str, conversation: dict[str, Any], changed: dict[str, Any] | None = None
    ) -> None:
        payload = {**self._conversation_json(conversation), "event": event}
        if changed is not None:
            payload["changed_attributes"] = [changed]
        self._send_webhook(payload, conversation["inbox_id"])
        self.changed()

    def _typing(self, conversation: dict[str, Any], user: User, private: bool) -> None:
        self._send_webhook(
            {
                "event": "conversation_typing_on",
                "user": {"id": user.id, "name": user.name, "email": "", "type": "user"},
                "conversation": self._conversation_json(conversation),
                "is_private": private,
            },
            conversation["inbox_id"],
        )
