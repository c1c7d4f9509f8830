"""The HTTP listener's error answers, all of one shape: ``{"error": code, "message": words}``
with a stable, machine-readable ``code`` (docs/bots.md lists the push endpoint's).

Starlette raises ``HTTPException`` for an address nothing serves (404) and a method a route
does not take (405); :data:`HANDLERS` answers them. :class:`InternalErrors` turns a handler
that raised into a logged ``500 internal_error``, inside the security headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

log = logging.getLogger("switchover.http")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Every error answer: a stable ``error`` code and words for a person."""
    return JSONResponse({"error": code, "message": message}, status, headers)


def too_large(limit: int) -> Response:
    return error_response(413, "too_large", f"Bodies are limited to {limit} bytes.")


def internal_error() -> Response:
    return error_response(500, "internal_error", "The request could not be handled.")


async def not_found(request: Request, exc: Exception) -> Response:
    """404: what raised it may say what was missing (``HTTPException.detail``)."""
    detail = exc.detail if isinstance(exc, HTTPException) else ""
    if not detail or detail == HTTPStatus.NOT_FOUND.phrase:
        detail = f"Nothing at {request.scope['path']}."
    return error_response(404, "not_found", detail)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 in plain words, ``Allow`` listing what every route at this address takes (a GET
    route also answers HEAD, which goes without saying)."""
    allowed: set[str] = set()
    if isinstance(exc, HTTPException) and exc.headers:
        for name, value in exc.headers.items():
            if name.lower() == "allow":
                allowed.update(method.strip() for method in value.split(","))
    for route in request.app.routes:
        if (
            isinstance(route, Route)
            and route.methods
            and route.path_regex.match(request.scope["path"])
        ):
            allowed |= route.methods
    allowed.discard("HEAD")
    allowed.discard("")
    return PlainTextResponse(
        "method not allowed\n", 405, headers={"allow": ", ".join(sorted(allowed))}
    )


#: Starlette's ``exception_handlers`` for the app.
HANDLERS: Mapping[int, ExceptionHandler] = {404: not_found, 405: method_not_allowed}


class InternalErrors:
    """ASGI middleware: a request whose handler raised is logged and answered ``500
    internal_error``; the server goes on serving."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if started:
                raise  # half an answer is on the wire: only the server can end it now
            await internal_error()(scope, receive, send)
