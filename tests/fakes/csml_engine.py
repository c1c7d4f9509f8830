"""A fake CSML engine server that keeps the engine's HTTP contract to the letter.

The contract (docs: the CSML engine's ``csml_server``): ``POST /run`` takes ``bot_id`` (and
optionally ``version_id``) plus an ``event`` with a required string ``request_id``, a
``client`` ``{user_id, channel_id, bot_id}``, a ``payload`` and ``metadata``; it answers
``{"messages": [{"payload", "interaction_order", "conversation_id", "direction"}],
"conversation_end", "request_id", "received_at", "client"}``. ``POST /conversations/close``
takes a client. Errors are bare 400 / 403 / 500 with an empty body; with API keys
configured, a missing or wrong ``X-Api-Key`` is a 403.

The one bot it runs is CSML Studio's livechat demo, shortened: it greets with a question
offering a ``LIVECHAT_SESSION_START`` button and ``hold``s; ``LIVECHAT_SESSION_END`` gets
"Thanks for chatting with us", ``LIVECHAT_SESSION_EXPIRED`` gets "Your livechat session
expired", both followed by ``goto end``. Other text is echoed and the bot holds again; the
text "show me everything" gets one message of each kind (image, url, file, and a type
Switchover does not know).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Answer = tuple[int, Any]

START = "LIVECHAT_SESSION_START"
END = "LIVECHAT_SESSION_END"
EXPIRED = "LIVECHAT_SESSION_EXPIRED"
GREETING = "Hello! I am the support bot."
HUMAN_QUESTION = "Do you need a human?"
THANKS = "Thanks for chatting with us"
EXPIRY = "Your livechat session expired"

EVERYTHING = [
    {"content_type": "image", "content": {"url": "https://example.com/cat.png"}},
    {"content_type": "url", "content": {"url": "https://example.com", "text": "Example"}},
    {"content_type": "file", "content": {"url": "https://example.com/terms.pdf"}},
    {"content_type": "carousel", "content": {"cards": [{"title": "A"}, {"title": "B"}]}},
]


def human_question() -> dict[str, Any]:
    return {
        "content_type": "question",
        "content": {
            "title": HUMAN_QUESTION,
            "buttons": [
                {
                    "content_type": "button",
                    "content": {
                        "title": "Yes",
                        "payload": START,
                        "accepts": ["Yes", START],
                    },
                }
            ],
        },
    }


def text(value: str) -> dict[str, Any]:
    return {"content_type": "text", "content": {"text": value}}


@attrs.define
class Request:
    """One request the engine received, whatever it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.define
class FakeCsmlEngine:
    """The ASGI app. ``bots`` maps the engine's bot ids to their version ids; ``api_keys``
    turns key checking on. ``failing`` makes every request a bare 500 (an engine that is
    down behind its proxy). ``runs`` keeps the ``/run`` bodies it ran, ``closed`` the
    clients of ``/conversations/close``, ``requests`` everything."""

    bots: Mapping[str, frozenset[str]] = attrs.field(
        factory=lambda: {"support": frozenset({"v1", "v2"})}
    )
    api_keys: frozenset[str] = frozenset()
    failing: bool = False
    requests: list[Request] = attrs.field(factory=list)
    runs: list[dict[str, Any]] = attrs.field(factory=list)
    closed: list[dict[str, Any]] = attrs.field(factory=list)
    # Open engine conversations by client: their id and the step they hold at.
    open: dict[tuple[str, str, str], str] = attrs.field(factory=dict)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _app: Starlette = attrs.field(init=False)

    async def wait_for_runs(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        with trio.fail_after(timeout):
            while len(self.runs) < count:
                await self._changed.wait()
        return self.runs

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[Request]:
        with trio.fail_after(timeout):
            while len(self.requests) < count:
                await self._changed.wait()
        return self.requests

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def __attrs_post_init__(self) -> None:
        everything = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        self._app = Starlette(
            routes=[
                Route("/status", self._endpoint(self._status), methods=["GET"]),
                Route("/run", self._endpoint(self._json(self._run)), methods=["POST"]),
                Route(
                    "/conversations/close",
                    self._endpoint(self._json(self._close)),
                    methods=["POST"],
                ),
                # Anything else, a known path with another method included: a bare 404.
                Route("/{path:path}", self._endpoint(lambda _: (404, None)), methods=everything),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    def _endpoint(
        self, answer: Callable[[Request], Answer]
    ) -> Callable[[HttpRequest], Awaitable[Response]]:
        """A route that keeps every request, checks the API key, fails when told to, and
        answers ``answer``'s JSON, or a bare status when it is ``None``."""

        async def endpoint(http: HttpRequest) -> Response:
            request = Request(http.url.path, dict(http.headers), await http.body())
            self.requests.append(request)
            if self.api_keys and request.headers.get("x-api-key") not in self.api_keys:
                request.status, body = 403, None
            elif self.failing:
                request.status, body = 500, None
            else:
                request.status, body = answer(request)
            self._note()
            if body is None:
                return Response(status_code=request.status)
            return JSONResponse(body, request.status)

        return endpoint

    @staticmethod
    def _json(answer: Callable[[dict[str, Any]], Answer]) -> Callable[[Request], Answer]:
        """Bodies must be JSON objects: anything else is a bare 400."""

        def parsed(request: Request) -> Answer:
            try:
                data = json.loads(request.body)
            except ValueError:
                return 400, None
            return answer(data) if isinstance(data, dict) else (400, None)

        return parsed

    def _status(self, request: Request) -> Answer:
        return 200, {"engine_version": "1.11.2"}

    def _close(self, data: dict[str, Any]) -> Answer:
        client = _client(data)
        if client is None:
            return 400, None
        self.closed.append(data)
        self.open.pop(client, None)
        return 200, None

    def _run(self, data: dict[str, Any]) -> Answer:
        received_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        bot_id = data.get("bot_id")
        version_id = data.get("version_id")
        if not isinstance(bot_id, str) or bot_id not in self.bots:
            return 400, None
        if version_id is not None and version_id not in self.bots[bot_id]:
            return 400, None
        event = data.get("event")
        if not isinstance(event, dict):
            return 400, None
        request_id = event.get("request_id")
        client = _client(event.get("client"))
        payload = event.get("payload")
        if (
            not isinstance(request_id, str)
            or client is None
            or not isinstance(payload, dict)
            or not isinstance(payload.get("content_type"), str)
            or not isinstance(payload.get("content"), dict)
            or not isinstance(event.get("metadata"), dict)
        ):
            return 400, None
        self.runs.append(data)
        replies, ended = self._step(client, payload)
        conversation_id = self.open.get(client) or str(uuid.uuid4())
        if ended:
            self.open.pop(client, None)
        messages = [
            {
                "payload": reply,
                "interaction_order": order,
                "conversation_id": conversation_id,
                "direction": "SEND",
            }
            for order, reply in enumerate(replies)
        ]
        return 200, {
            "messages": messages,
            "conversation_end": ended,
            "request_id": request_id,
            "received_at": received_at,
            "client": event["client"],
        }

    def _step(
        self, client: tuple[str, str, str], payload: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], bool]:
        """The flow. Returns the messages and whether the conversation ended."""
        if client not in self.open:
            self.open[client] = str(uuid.uuid4())
            return [text(GREETING), human_question()], False
        content = payload["content"]
        if payload["content_type"] == "payload":
            if content.get("payload") == END:
                return [text(THANKS)], True
            if content.get("payload") == EXPIRED:
                return [text(EXPIRY)], True
        said = content.get("text") if payload["content_type"] == "text" else None
        if said == "show me everything":
            return list(EVERYTHING), False
        if isinstance(said, str):
            return [text(f"You said: {said}"), human_question()], False
        return [text(f"I got a {payload['content_type']}"), human_question()], False


def _client(value: object) -> tuple[str, str, str] | None:
    if not isinstance(value, dict):
        return None
    parts = (value.get("user_id"), value.get("channel_id"), value.get("bot_id"))
    if not all(isinstance(part, str) for part in parts):
        return None
    return (str(parts[0]), str(parts[1]), str(parts[2]))
