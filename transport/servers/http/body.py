"""Bounded request bodies: the whole body is read before the request is routed, and one over
:data:`MAX_BODY_BYTES` is answered ``413 too_large`` without going further. Routes may hold
theirs to less (the bots' push: 64 KiB, checked once the token is)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transport.servers.http.errors import too_large

MAX_BODY_BYTES = 1024 * 1024


async def read_body(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """The body, or ``None`` past ``limit`` bytes; and whether the client went away."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the whole body at once: most requests
        return (body if len(body) <= limit else None), False
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False
        message = await receive()


class BoundedBody:
    """ASGI middleware: read the body up to ``limit`` bytes, then hand the request on with
    the body as one message (so handlers read it at once, from memory). Requests under a
    path in ``own_limits`` pass untouched: their routes check who asks before reading, and
    read up to limits of their own (the attachments' uploads)."""

    def __init__(
        self, app: ASGIApp, limit: int = MAX_BODY_BYTES, own_limits: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.own_limits = own_limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            self.own_limits and scope["path"].startswith(self.own_limits)
        ):
            await self.app(scope, receive, send)
            return
        body, gone = await read_body(receive, self.limit)
        if body is None:
            await too_large(self.limit)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            if gone:
                return {"type": "http.disconnect"}
            return await receive()

        await self.app(scope, replay, send)
