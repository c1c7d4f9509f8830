"""Serving an ASGI app with hypercorn's trio worker: bound, reported, stopped on an event."""

from __future__ import annotations

import logging
from typing import Any

import trio
from starlette.types import ASGIApp


async def serve_http(
    app: ASGIApp,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until ``shutdown`` is set; report the bound
    port (useful with port 0)."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve

    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("switchover.http.server")
    config.include_server_header = False

    class _Started:
        def started(self, bound: list[str] | None = None) -> None:
            task_status.started(_port_of(bound or []))

    # hypercorn's own types spell out every ASGI message; Starlette's are plain mappings.
    asgi_app: Any = app
    await serve(asgi_app, config, shutdown_trigger=shutdown.wait, task_status=_Started())


def _port_of(bound: list[str]) -> int:
    """The port of hypercorn's first bound URL, ``http://127.0.0.1:54321``."""
    if not bound:
        return 0
    return int(bound[0].rsplit(":", 1)[1])
