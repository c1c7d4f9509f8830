"""A webhook bot on real HTTP, for tests: checks every signature and behaves as told."""

from __future__ import annotations

import json
from typing import Any

import attrs
import trio

from actors import Content
from transport.bots.webhook import verify_signature

from .asgi_server import (
    Receive,
    Scope,
    Send,
    headers_of,
    lifespan,
    read_body,
    respond,
    respond_json,
)

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

    @property
    def calls(self) -> int:
        return len(self.events) + self.rejected

    async def wait_for_calls(self, count: int, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while self.calls < count:
                await self._changed.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        if not verify_signature(self.secret, headers_of(scope), body, tolerance=60):
            self.rejected += 1
            self._note()
            await respond(send, 401)
            return
        event = json.loads(body)
        self.events.append(event)
        self._note()
        if self.mode == "slow":
            await trio.sleep(30)
        elif self.mode == "5xx":
            await respond(send, 503)
        elif self.mode == "garbage":
            await respond(send, 200, b"<html>oops</html>", "text/html")
        else:
            text = event["content"]["content"].get("text")
            messages = [Content.text(f"echo: {text}").to_json()] if text else []
            await respond_json(send, {"messages": messages})

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
