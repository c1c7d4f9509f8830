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
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .asgi_server import Receive, Scope, Send, headers_of, lifespan, read_body, respond
from .asgi_server import respond_json as _respond_json

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        request = Request(scope["path"], headers_of(scope), body)
        self.requests.append(request)
        request.status, answer = self._answer(scope["method"], request)
        self._note()
        if answer is None:
            await respond(send, request.status)
        else:
            await _respond_json(send, answer, request.status)

    def _answer(self, method: str, request: Request) -> tuple[int, Any]:
        if self.api_keys and request.headers.get("x-api-key") not in self.api_keys:
            return 403, None
        if self.failing:
            return 500, None
        if method == "GET" and request.path == "/status":
            return 200, {"engine_version": "1.11.2"}
        if method != "POST":
            return 404, None
        try:
            data = json.loads(request.body)
        except ValueError:
            return 400, None
        if not isinstance(data, dict):
            return 400, None
        if request.path == "/run":
            return self._run(data)
        if request.path == "/conversations/close":
            client = _client(data)
            if client is None:
                return 400, None
            self.closed.append(data)
            self.open.pop(client, None)
            return 200, None
        return 404, None

    def _run(self, data: dict[str, Any]) -> tuple[int, Any]:
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
