"""A webhook bot on real HTTP, for tests: checks every signature and behaves as told."""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from actors import Content
from transport.bots.webhook import verify_signature

SECRET = "a-webhook-secret-of-some-length"


@attrs.define
class BotServer:
    """A webhook bot that checks every signature. ``mode`` says how it behaves: "ok"
    echoes text, "slow" never answers in time, "5xx" fails, "garbage" answers nonsense."""

    secret: str = SECRET
    mode: str = "ok"
    events: list[dict[str, Any]] = attrs.field(factory=list)
    rejected: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _app: Starlette = attrs.field(init=False)

    @property
    def calls(self) -> int:
        return len(self.events) + self.rejected

    async def wait_for_calls(self, count: int, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while self.calls < count:
                await self._changed.wait()

    def __attrs_post_init__(self) -> None:
        self._app = Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if not verify_signature(self.secret, request.headers, body, tolerance=60):
            self.rejected += 1
            self._note()
            return Response(status_code=401)
        event = json.loads(body)
        self.events.append(event)
        self._note()
        if self.mode == "slow":
            await trio.sleep(30)
        if self.mode == "5xx":
            return Response(status_code=503)
        if self.mode == "garbage":
            return Response(b"<html>oops</html>", media_type="text/html")
        text = event["content"]["content"].get("text")
        messages = [Content.text(f"echo: {text}").to_json()] if text else []
        return JSONResponse({"messages": messages})

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
