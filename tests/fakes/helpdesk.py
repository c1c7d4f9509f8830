"""A helpdesk on real HTTP that speaks Switchover's generic webhook platform protocol.

It checks what a careful helpdesk checks of every event (the signature and its timestamp,
the event's JSON Schema, the event id for repeats) and keeps what arrived per session. It
misbehaves on command: answer the next calls with a status (500, 429 with ``Retry-After``),
or stay down until told otherwise. Its agents act through Switchover's real HTTP API with
:class:`HelpdeskAgent`, which can also repeat or reorder what it sends.
"""

from __future__ import annotations

import collections
import json
from importlib import resources
from typing import Any

import attrs
import httpx
import jsonschema
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from transport.signing import verify_signature

SECRET = "a-helpdesk-signing-secret"
API_TOKEN = "a-helpdesk-api-token-for-tests"


def _schemas() -> dict[str, jsonschema.protocols.Validator]:
    folder = resources.files("transport.livechat") / "schemas"
    validators = {}
    for kind in ("session.requested", "session.message", "session.typing", "session.ended"):
        schema = json.loads((folder / f"{kind}.json").read_text())
        validators[kind] = jsonschema.Draft202012Validator(schema)
    return validators


@attrs.define
class Helpdesk:
    """The helpdesk's webhook receiver (``POST /events``). ``events`` holds each event once,
    in arrival order; ``repeats`` counts events received again with an id already seen."""

    secret: str = SECRET
    events: list[dict[str, Any]] = attrs.field(factory=list)
    repeats: int = 0
    rejected: list[str] = attrs.field(factory=list)
    #: Statuses to answer the next calls with, in order (then 200 again).
    failures: collections.deque[tuple[int, str | None]] = attrs.field(factory=collections.deque)
    down: bool = False
    calls: int = 0
    #: When each call arrived (trio's clock), and with which status it was answered.
    answered: list[tuple[float, int]] = attrs.field(factory=list)
    _seen: set[str] = attrs.field(factory=set)
    _schemas: dict[str, Any] = attrs.field(factory=_schemas)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _app: Starlette = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._app = Starlette(routes=[Route("/events", self._receive, methods=["POST"])])

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        self.failures.extend([(status, retry_after)] * count)

    def of(self, session_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["session_id"] == session_id and (kind is None or e["type"] == kind)
        ]

    def texts(self, session_id: str) -> list[str]:
        """What the user wrote in the session, as the helpdesk shows it, in order."""
        return [
            e["data"]["content"]["content"]["text"]
            for e in self.of(session_id, "session.message")
            if e["data"]["content"]["content_type"] == "text"
        ]

    async def wait_for(self, check: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first event (in arrival order) for which ``check`` is true."""
        with trio.fail_after(timeout):
            while True:
                for event in self.events:
                    if check(event):
                        return event
                await self._changed.wait()

    async def wait_for_calls(self, count: int, timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while self.calls < count:
                await self._changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        self.calls += 1
        try:
            return self._take(request, body)
        finally:
            self._changed.set()
            self._changed = trio.Event()

    def _take(self, request: Request, body: bytes) -> Response:
        if self.down:
            return Response(status_code=503)
        if self.failures:
            status, retry_after = self.failures.popleft()
            self.answered.append((trio.current_time(), status))
            headers = {"retry-after": retry_after} if retry_after else None
            return Response(status_code=status, headers=headers)
        if not verify_signature(self.secret, request.headers, body, tolerance=300):
            self.rejected.append("signature")
            return Response(status_code=401)
        event = json.loads(body)
        validator = self._schemas.get(event.get("type"))
        errors = [] if validator is None else list(validator.iter_errors(event))
        if validator is None or errors:
            self.rejected.append(f"schema: {errors[:1]}")
            return Response(status_code=400)
        self.answered.append((trio.current_time(), 200))
        if event["id"] in self._seen:
            self.repeats += 1
        else:
            self._seen.add(event["id"])
            self.events.append(event)
        return Response(status_code=200)


@attrs.define
class HelpdeskAgent:
    """One of the helpdesk's agents, acting through Switchover's HTTP API."""

    http: httpx.AsyncClient
    url: str
    agent_id: str = "h-7"
    name: str = "Hana"
    token: str = API_TOKEN
    _ids: int = 0

    def action(self, session_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        body: dict[str, Any] = {"id": f"{self.agent_id}-{self._ids}", "type": kind}
        body["session_id"] = session_id
        if kind != "release" or fields.pop("as_agent", True):
            body["agent"] = {"id": self.agent_id, "name": self.name}
        body.update(fields)
        return body

    async def send(self, body: dict[str, Any], *, token: str | None = None) -> httpx.Response:
        return await self.http.post(
            self.url,
            json=body,
            headers={"Authorization": f"Bearer {token or self.token}"},
        )

    async def act(self, session_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        response = await self.send(self.action(session_id, kind, **fields))
        assert response.status_code in (200, 202), response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def say(self, session_id: str, text: str) -> dict[str, Any]:
        content = {"content_type": "text", "content": {"text": text}}
        return await self.act(session_id, "message", content=content)
