"""A Gorgias account on real HTTP: the REST API Switchover uses, and HTTP integrations that
call Switchover back.

It checks what Gorgias checks: HTTP Basic with the API user's email and key (401), the fields
a ticket and a message need (400), and the rate limit of an API key, 40 requests per 20
seconds as a leaky bucket on trio's clock (429 with ``Retry-after``; every answer says
``X-Gorgias-Account-Api-Call-Limit: used/limit``). It keeps tickets, messages, customers and
integrations with increasing ids and answers in Gorgias's documented shapes.

A test acts as Gorgias's agents (:meth:`Gorgias.assign`, :meth:`reply`, :meth:`note`,
:meth:`close`); each change, and each message or change made through the API, calls the HTTP
integrations whose trigger matches (``ticket-message-created``, ``ticket-updated``), their
``{{...}}`` templates filled in. It misbehaves on command: answer the next API calls with a
status (before or after doing what they ask), drop, repeat or hold webhooks (and release the
held ones in reverse order).
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import httpx
import trio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from transport.livechat.gorgias.setup import integration

EMAIL = "switchover@shop.example"
API_KEY = "a-gorgias-api-key-for-tests"
WEBHOOK_TOKEN = "a-gorgias-webhook-token-for-tests"
API_USER = {"id": 1, "email": EMAIL, "name": "Switchover API", "firstname": "", "lastname": ""}
AGENTS = {
    7: {"id": 7, "email": "hana@shop.example", "name": "Hana", "firstname": "Hana"},
    9: {"id": 9, "email": "ines@shop.example", "name": "Ines", "firstname": "Ines"},
}
SESSION_END = "LIVECHAT_SESSION_END"
_TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}")
_TICKET = re.compile(r"^/api/tickets/(\d+)$")
_TICKET_MESSAGES = re.compile(r"^/api/tickets/(\d+)/messages$")
_INTEGRATION = re.compile(r"^/api/integrations/(\d+)$")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _render(template: str, context: Mapping[str, Any]) -> str:
    """Gorgias's ``{{a.b}}``: a missing value renders empty, others as Python prints them
    (``None``, ``True``)."""

    def value(match: re.Match[str]) -> str:
        found: Any = context
        for part in match.group(1).split("."):
            found = found.get(part) if isinstance(found, Mapping) else None
        return "" if found is None and match.group(1).startswith("message.") else str(found)

    return _TEMPLATE.sub(value, template)


@attrs.define
class Delivery:
    """One call of an HTTP integration: the event and how Switchover answered (``None``:
    dropped or held)."""

    event: str
    ticket_id: int
    status: int | None
    answer: Any = None


@attrs.frozen
class Failure:
    """How to answer an API call: ``status`` (with ``Retry-after``), after doing what it
    asks or not, for any call or one ``"METHOD /path"``."""

    status: int
    retry_after: str | None = None
    after: bool = False
    call: str | None = None


@attrs.define
class Gorgias:
    limit: int = 40
    window: float = 20.0
    tickets: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    messages: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    customers: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    integrations: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    #: Every API call: (trio time, method, path, status), in arrival order.
    calls: list[tuple[float, str, str, int]] = attrs.field(factory=list)
    #: The ticket of each read of messages (``GET /api/messages?ticket_id=``).
    message_reads: list[int] = attrs.field(factory=list)
    #: API calls answered 429, and the highest use of the rate limit seen.
    throttled: int = 0
    peak: float = 0.0
    deliveries: list[Delivery] = attrs.field(factory=list)
    failures: collections.deque[Failure] = attrs.field(factory=collections.deque)
    #: While set to an event, API calls wait for it (a Gorgias that is slow to answer).
    gate: trio.Event | None = None
    drop_webhooks: int = 0
    repeat_webhooks: bool = False
    holding: bool = False
    held: list[tuple[Delivery, dict[str, Any]]] = attrs.field(factory=list)
    _level: float = 0.0
    _level_at: float | None = None
    _ids: Any = attrs.field(factory=lambda: itertools.count(1))
    _clock: Any = attrs.field(factory=lambda: itertools.count(1))
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _app: Starlette = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        methods = ["GET", "POST", "PUT"]
        self._app = Starlette(routes=[Route("/api/{rest:path}", self._receive, methods=methods)])

    # -- misbehaviour ------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 500,
        retry_after: str | None = None,
        *,
        after: bool = False,
        call: str | None = None,
    ) -> None:
        """Answer the next ``count`` API calls (of ``call`` only, such as ``"POST
        /api/tickets"``, when given) with ``status``; with ``after``, do what they ask
        first (the caller cannot tell whether it happened)."""
        self.failures.extend([Failure(status, retry_after, after, call)] * count)

    async def release_held(self, *, reverse: bool = False) -> None:
        held, self.held, self.holding = self.held, [], False
        for delivery, request in reversed(held) if reverse else held:
            await self._send(delivery, request)

    def integrate(self, url: str, *, bot_id: str = "shop", token: str = WEBHOOK_TOKEN) -> int:
        """Add the HTTP integration ``switchover gorgias setup`` would add."""
        body = integration(bot_id, url, token)
        return int(self._add_integration(body)["id"])

    # -- what a test reads -------------------------------------------------------------------

    def ticket_of(self, session_id: str) -> dict[str, Any] | None:
        for ticket in self.tickets.values():
            if ticket["external_id"] == session_id:
                return ticket
        return None

    def messages_of(self, ticket_id: int) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["ticket_id"] == ticket_id]

    def customer_texts(self, ticket_id: int) -> list[str]:
        """What the customer wrote after the ticket's first message (the request)."""
        texts = [m["body_text"] for m in self.messages_of(ticket_id) if not m["from_agent"]]
        return texts[1:]

    def notes(self, ticket_id: int) -> list[str]:
        return [
            m["body_text"] for m in self.messages_of(ticket_id) if m["channel"] == "internal-note"
        ]

    def statuses(self, event: str | None = None) -> list[int | None]:
        return [d.status for d in self.deliveries if event is None or d.event == event]

    async def wait_until(self, check: Callable[[], Any], timeout: float = 10.0) -> Any:
        with trio.fail_after(timeout):
            while not (found := check()):
                await self._changed.wait()
            return found

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the agents --------------------------------------------------------------------------

    async def assign(self, ticket_id: int, agent: int | None = 7) -> None:
        ticket = self.tickets[ticket_id]
        ticket["assignee_user"] = dict(AGENTS[agent]) if agent is not None else None
        ticket["assignee_user_id"] = agent
        self._updated(ticket)
        await self._fire("ticket-updated", ticket)

    async def reply(self, ticket_id: int, text: str, agent: int = 7) -> dict[str, Any]:
        """An agent's public reply (a macro's text is one too)."""
        message = self._message(
            self.tickets[ticket_id],
            {"channel": "api", "via": "helpdesk", "from_agent": True, "body_text": text},
            AGENTS[agent],
        )
        await self._fire("ticket-message-created", self.tickets[ticket_id], message)
        return message

    async def sign_off(self, ticket_id: int, agent: int = 7) -> dict[str, Any]:
        """The macro that ends the livechat session."""
        return await self.reply(ticket_id, f"Anything else?\n\n{SESSION_END}", agent)

    async def note(self, ticket_id: int, text: str, agent: int = 7) -> dict[str, Any]:
        message = self._message(
            self.tickets[ticket_id],
            {"channel": "internal-note", "via": "helpdesk", "from_agent": True, "body_text": text},
            AGENTS[agent],
        )
        await self._fire("ticket-message-created", self.tickets[ticket_id], message)
        return message

    async def close(self, ticket_id: int) -> None:
        ticket = self.tickets[ticket_id]
        self._set_status(ticket, "closed")
        await self._fire("ticket-updated", ticket)

    # -- state -------------------------------------------------------------------------------

    def _now(self) -> str:
        return f"2026-12-03T10:00:00.{next(self._clock):06d}"

    def _updated(self, ticket: dict[str, Any]) -> None:
        ticket["updated_datetime"] = self._now()
        self._touch()

    def _set_status(self, ticket: dict[str, Any], status: str) -> None:
        ticket["status"] = status
        ticket["closed_datetime"] = self._now() if status == "closed" else None
        self._updated(ticket)

    def _customer(self, given: Mapping[str, Any]) -> dict[str, Any]:
        email = given.get("email")
        if given.get("id") is not None:
            for customer in self.customers.values():
                if customer["id"] == given["id"]:
                    return customer
            raise Refused(400, "customer: no customer has that id")
        if not isinstance(email, str) or "@" not in email:
            raise Refused(400, "customer: an email or an id is required")
        if email not in self.customers:
            name = given.get("name") if isinstance(given.get("name"), str) else ""
            self.customers[email] = {"id": next(self._ids), "email": email, "name": name}
        return self.customers[email]

    def _check_message(self, data: Any, customer: Mapping[str, Any] | None) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise Refused(400, "a message must be an object")
        for field in ("channel", "via"):
            if not isinstance(data.get(field), str) or not data[field]:
                raise Refused(400, f"message.{field}: required")
        if not isinstance(data.get("from_agent"), bool):
            raise Refused(400, "message.from_agent: must be a boolean")
        if not (data.get("body_text") or data.get("body_html")):
            raise Refused(400, "message: body_text or body_html is required")
        sender = data.get("sender")
        if not isinstance(sender, Mapping) or not (sender.get("email") or sender.get("id")):
            raise Refused(400, "message.sender: an email or an id is required")
        if data["channel"] == "internal-note" and not data["from_agent"]:
            raise Refused(400, "an internal note is from an agent (from_agent: true)")
        if data["from_agent"]:
            users = [API_USER, *AGENTS.values()]
            found = next((u for u in users if sender.get("email") in (u["email"],)), None)
            if found is None:
                raise Refused(400, "message.sender: an agent's message is sent by a user")
            return dict(found)
        if customer is not None and sender.get("email") not in (None, customer["email"]):
            raise Refused(400, "message.sender: not the ticket's customer")
        return dict(customer) if customer is not None else self._customer(sender)

    def _message(
        self, ticket: dict[str, Any], data: Mapping[str, Any], sender: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = self._now()
        message = {
            "id": next(self._ids),
            "ticket_id": ticket["id"],
            "external_id": data.get("external_id"),
            "channel": data["channel"],
            "via": data["via"],
            "from_agent": data["from_agent"],
            "public": data["channel"] != "internal-note",
            "sender": dict(sender),
            "body_text": data.get("body_text"),
            "body_html": data.get("body_html"),
            "attachments": [],
            "created_datetime": now,
            "failed_datetime": None,
        }
        self.messages[message["id"]] = message
        ticket["last_message_datetime"] = now
        if not data["from_agent"] and ticket["status"] == "closed":
            # A customer's new message reopens a closed ticket.
            ticket["status"], ticket["closed_datetime"] = "open", None
        self._updated(ticket)
        return message

    def _shown(self, ticket: Mapping[str, Any], *, with_messages: bool = True) -> dict[str, Any]:
        shown = {k: v for k, v in ticket.items()}
        if with_messages:
            shown["messages"] = self.messages_of(ticket["id"])
        return shown

    def _add_integration(self, body: Mapping[str, Any]) -> dict[str, Any]:
        if body.get("type") != "http" or not isinstance(body.get("http"), Mapping):
            raise Refused(400, "only HTTP integrations here: type http with an http object")
        http = body["http"]
        if not isinstance(http.get("url"), str) or not isinstance(http.get("triggers"), Mapping):
            raise Refused(400, "http.url and http.triggers are required")
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise Refused(400, "name is required")
        made = {"id": next(self._ids), **body, "created_datetime": self._now()}
        self.integrations[made["id"]] = made
        return made

    # -- the webhooks ------------------------------------------------------------------------

    async def _fire(
        self, event: str, ticket: Mapping[str, Any], message: Mapping[str, Any] | None = None
    ) -> None:
        context = {
            "ticket": {k: v for k, v in ticket.items() if k != "messages"},
            "message": dict(message or {}),
            "event": {"type": event, "id": next(self._ids), "object_id": (message or {}).get("id")},
        }
        for made in list(self.integrations.values()):
            http = made["http"]
            if not http["triggers"].get(event):
                continue
            request = {
                "url": _render(http["url"], context),
                "headers": {k: _render(v, context) for k, v in (http.get("headers") or {}).items()},
                "json": {k: _render(v, context) for k, v in (http.get("form") or {}).items()},
            }
            delivery = Delivery(event, ticket["id"], None)
            self.deliveries.append(delivery)
            if self.drop_webhooks > 0:
                self.drop_webhooks -= 1
            elif self.holding:
                self.held.append((delivery, request))
            else:
                await self._send(delivery, request)
                if self.repeat_webhooks:
                    again = Delivery(event, ticket["id"], None)
                    self.deliveries.append(again)
                    await self._send(again, request)
        self._touch()

    async def _send(self, delivery: Delivery, request: Mapping[str, Any]) -> None:
        try:
            # Plain HTTP to 127.0.0.1: no TLS to set up (which costs more than the call).
            async with httpx.AsyncClient(verify=False) as http:
                response = await http.post(
                    request["url"], headers=request["headers"], json=request["json"], timeout=10
                )
        except httpx.TransportError as exc:
            # Gorgias counts it as a failed call; nothing else happens.
            delivery.answer = f"{type(exc).__name__}: {exc}"
        else:
            delivery.status = response.status_code
            delivery.answer = response.json() if response.content else None
        self._touch()

    # -- the API -----------------------------------------------------------------------------

    def _throttle(self) -> tuple[bool, float]:
        """Count one call in the leaky bucket: whether it fits, and the wait if not."""
        now = trio.current_time()
        rate = self.limit / self.window
        if self._level_at is not None:
            self._level = max(0.0, self._level - (now - self._level_at) * rate)
        self._level_at = now
        if self._level + 1 > self.limit + 1e-9:
            return False, (self._level + 1 - self.limit) / rate
        self._level += 1
        self.peak = max(self.peak, self._level)
        return True, 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if self.gate is not None:
            await self.gate.wait()
        method, path = request.method, request.url.path
        after: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        query = dict(request.query_params)
        status, answer, extra = self._handle(method, path, query, request.headers, body, after)
        self.calls.append((trio.current_time(), method, path, status))
        headers = {"x-gorgias-account-api-call-limit": f"{math.ceil(self._level)}/{self.limit}"}
        self._touch()
        # Gorgias calls its integrations after the change, not within the request.
        background = BackgroundTask(self._fire_all, after) if after else None
        return JSONResponse(answer, status, headers={**headers, **extra}, background=background)

    async def _fire_all(
        self, after: list[tuple[str, dict[str, Any], dict[str, Any] | None]]
    ) -> None:
        for event, ticket, message in after:
            await self._fire(event, ticket, message)

    def _handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        after: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
    ) -> tuple[int, Any, dict[str, str]]:
        expected = "Basic " + base64.b64encode(f"{EMAIL}:{API_KEY}".encode()).decode()
        if headers.get("authorization") != expected:
            return 401, {"error": {"msg": "Unauthorized"}}, {}
        fits, wait = self._throttle()
        if not fits:
            self.throttled += 1
            retry = str(max(1, math.ceil(wait)))
            return 429, {"error": {"msg": "Too many requests"}}, {"retry-after": retry}
        failure = next((f for f in self.failures if f.call in (None, f"{method} {path}")), None)
        if failure is not None:
            self.failures.remove(failure)
            if not failure.after:
                return self._failure(failure)
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return 400, {"error": {"msg": "The body is not JSON"}}, {}
        try:
            status, answer = self._route(method, path, query, data, after)
        except Refused as exc:
            return exc.status, {"error": {"msg": str(exc)}}, {}
        if failure is not None:
            return self._failure(failure)
        return status, answer, {}

    def _failure(self, failure: Failure) -> tuple[int, Any, dict[str, str]]:
        extra = {"retry-after": failure.retry_after} if failure.retry_after else {}
        return failure.status, {"error": {"msg": "failing on command"}}, extra

    def _route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        data: Any,
        after: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
    ) -> tuple[int, Any]:
        if path == "/api/tickets" and method == "GET":
            found = [
                self._shown(t, with_messages=False)
                for t in sorted(self.tickets.values(), key=lambda t: -t["id"])
                if "external_id" not in query or t["external_id"] == query["external_id"]
            ]
            limit = int(query.get("limit", 30))
            return 200, _page("/api/tickets", found[:limit], None)
        if path == "/api/tickets" and method == "POST":
            return 201, self._create_ticket(data)
        if (match := _TICKET.match(path)) is not None:
            ticket = self._ticket(int(match.group(1)))
            if method == "GET":
                return 200, self._shown(ticket)
            if method == "PUT":
                return 200, self._update_ticket(ticket, data, after)
        if (match := _TICKET_MESSAGES.match(path)) is not None and method == "POST":
            ticket = self._ticket(int(match.group(1)))
            customer = self.customers.get(ticket["customer"]["email"])
            sender = self._check_message(data, customer)
            message = self._message(ticket, data, sender)
            after.append(("ticket-message-created", ticket, message))
            return 201, message
        if path == "/api/messages" and method == "GET":
            if query.get("ticket_id", "").isdigit():
                self.message_reads.append(int(query["ticket_id"]))
            return 200, self._list_messages(query)
        if path == "/api/integrations" and method == "GET":
            found = [
                i for i in self.integrations.values() if query.get("type") in (None, i["type"])
            ]
            return 200, _page("/api/integrations", found, None)
        if path == "/api/integrations" and method == "POST":
            return 201, self._add_integration(data if isinstance(data, Mapping) else {})
        if (match := _INTEGRATION.match(path)) is not None and method == "PUT":
            found = self.integrations.get(int(match.group(1)))
            if found is None:
                raise Refused(404, "no such integration")
            made = self._add_integration(data if isinstance(data, Mapping) else {})
            del self.integrations[made["id"]]
            made["id"] = found["id"]
            self.integrations[found["id"]] = made
            return 200, made
        raise Refused(404, f"no {method} {path} here")

    def _ticket(self, ticket_id: int) -> dict[str, Any]:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            raise Refused(404, "ticket not found")
        return ticket

    def _create_ticket(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise Refused(400, "the body must be a ticket object")
        for field in ("channel", "via"):
            if not isinstance(data.get(field), str):
                raise Refused(400, f"{field}: required")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise Refused(400, "messages: a ticket needs at least one message")
        if not isinstance(data.get("customer"), Mapping):
            raise Refused(400, "customer: required")
        external_id = data.get("external_id")
        if external_id is not None and not isinstance(external_id, str):
            raise Refused(400, "external_id: must be a string")
        customer = self._customer(data["customer"])
        senders = [self._check_message(m, customer) for m in messages]
        now = self._now()
        ticket: dict[str, Any] = {
            "id": next(self._ids),
            "external_id": external_id,
            "status": "open",
            "channel": data["channel"],
            "via": data["via"],
            "subject": data.get("subject"),
            "customer": dict(customer),
            "assignee_user": None,
            "assignee_user_id": None,
            "meta": data.get("meta"),
            "created_datetime": now,
            "updated_datetime": now,
            "last_message_datetime": None,
            "closed_datetime": None,
        }
        self.tickets[ticket["id"]] = ticket
        for message, sender in zip(messages, senders, strict=True):
            self._message(ticket, message, sender)
        return self._shown(ticket)

    def _update_ticket(
        self,
        ticket: dict[str, Any],
        data: Any,
        after: list[tuple[str, dict[str, Any], dict[str, Any] | None]],
    ) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise Refused(400, "the body must be an object")
        status = data.get("status", ticket["status"])
        if status not in ("open", "closed"):
            raise Refused(400, f"status: must be open or closed, got {status!r}")
        if status != ticket["status"]:
            self._set_status(ticket, status)
            after.append(("ticket-updated", ticket, None))
        return self._shown(ticket)

    def _list_messages(self, query: Mapping[str, str]) -> dict[str, Any]:
        ticket_id = query.get("ticket_id")
        found = [
            m
            for m in self.messages.values()
            if ticket_id is None or str(m["ticket_id"]) == ticket_id
        ]
        order = query.get("order_by", "created_datetime:desc")
        found.sort(key=lambda m: m["id"], reverse=order.endswith(":desc"))
        limit = min(100, int(query.get("limit", 30)))
        start = int(base64.b64decode(query["cursor"]).decode()) if query.get("cursor") else 0
        page = found[start : start + limit]
        following = start + limit if start + limit < len(found) else None
        cursor = base64.b64encode(str(following).encode()).decode() if following else None
        return _page("/api/messages", page, cursor)


def _page(uri: str, data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {
        "object": "list",
        "uri": uri,
        "data": data,
        "meta": {"next_cursor": next_cursor, "prev_cursor": None},
    }
