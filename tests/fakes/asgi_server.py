"""Serve a small ASGI app (the fakes are Starlette apps) on 127.0.0.1 for tests, with the
same hypercorn set-up as the server's own HTTP listener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
from starlette.types import ASGIApp

from transport.servers.http.serve import serve_http


@asynccontextmanager
async def serving(app: ASGIApp, port: int = 0) -> AsyncIterator[str]:
    """Run ``app`` for the ``async with`` block and give its base URL."""
    async with trio.open_nursery() as nursery:
        serve = partial(serve_http, graceful_timeout=0.1)
        bound: int = await nursery.start(serve, app, "127.0.0.1", port, trio.Event())
        try:
            yield f"http://127.0.0.1:{bound}"
        finally:
            nursery.cancel_scope.cancel()
