"""What every answer of the HTTP listener carries, and who may knock.

:class:`SecurityHeaders` adds the headers below to every answer that did not set them
itself: no sniffing, no referrer; a page may run only its own scripts and styles (none
inline) and be framed by nobody, the widget page by the configured origins; JSON (data for
scripts, never a document) gets no policy; anything else (scripts, styles, images: an SVG
opened on its own) may load nothing at all. A ``304 Not Modified`` gets none of them: it
updates the headers of the answer the browser kept, which already has its own.

:class:`AuthThrottle` refuses every request with an ``Authorization`` header from a client
address that has had too many answers 401 lately (``429 too_many_attempts``), as the
WebSocket listener does with its hellos.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transport.protocol.credentials import AddressGuard, retry_words
from transport.servers.http.errors import error_response

Headers = list[tuple[bytes, bytes]]

NOTHING_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def page_policy(frame_ancestors: str) -> str:
    """The Content-Security-Policy of a web page: its own scripts and styles only (the pages
    have no inline script or style), WebSockets to the listener, pictures and media a bot
    links to over https, and attachments the page fetched with its token (``blob:``)."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self';"
        " img-src 'self' https: data: blob:; media-src 'self' https:;"
        " connect-src 'self' ws: wss:; form-action 'self';"
        f" base-uri 'none'; frame-ancestors {frame_ancestors}"
    )


def _headers(policy: str | None) -> Headers:
    headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
    if policy is not None:
        headers.append((b"content-security-policy", policy.encode("latin-1")))
        if "frame-ancestors 'none'" in policy:
            headers.append((b"x-frame-options", b"DENY"))
    return headers


class SecurityHeaders:
    """ASGI middleware adding the security headers to every answer (see the module)."""

    def __init__(self, app: ASGIApp, *, widget_frame_ancestors: Iterable[str] = ()) -> None:
        self.app = app
        self.page_policy = page_policy("'none'")
        self.widget_policy = page_policy(" ".join(widget_frame_ancestors) or "'none'")
        self._page = _headers(self.page_policy)
        self._widget = _headers(self.widget_policy)
        self._data = _headers(None)
        self._other = _headers(NOTHING_POLICY)

    def headers_for(self, path: str, content_type: bytes) -> Headers:
        if content_type.startswith(b"text/html"):
            return self._widget if path.rstrip("/") == "/widget" else self._page
        if content_type.startswith(b"application/json"):
            return self._data
        return self._other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            # A 304 updates the headers of the answer the browser kept: it must not swap that
            # page's policy for the one of a bodiless answer, so it gets none of ours.
            if message["type"] == "http.response.start" and message["status"] != 304:
                headers: Headers = message.get("headers", [])
                content_type = b""
                own: set[bytes] | None = None
                for name, value in headers:  # ASGI header names are lowercase
                    if name == b"content-type":
                        content_type = value
                    elif name in _OURS:
                        own = {name} if own is None else own | {name}
                extra = self.headers_for(path, content_type)
                if own is not None:
                    extra = [header for header in extra if header[0] not in own]
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


_OURS = frozenset(
    {b"x-content-type-options", b"referrer-policy", b"content-security-policy", b"x-frame-options"}
)


class AuthThrottle:
    """ASGI middleware: every answer 401 counts against the client's address; past the
    guard's limit, that address's requests with an ``Authorization`` header are refused
    until its window has passed."""

    def __init__(self, app: ASGIApp, *, guard: AddressGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, _ in scope["headers"]:  # ASGI header names are lowercase
            if name == b"authorization":
                wait = self.guard.locked_for(_address(scope))
                if wait > 0:
                    refusal = error_response(
                        429,
                        "too_many_attempts",
                        f"Too many failed authentications from this address; {retry_words(wait)}.",
                        {"retry-after": str(max(1, math.ceil(wait)))},
                    )
                    await refusal(scope, receive, send)
                    return
                break

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.guard.failed(_address(scope))
            await send(message)

        await self.app(scope, receive, counted)


def _address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""
