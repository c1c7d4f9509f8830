"""The web pages and what they read: the index, the agent desk, the chat widget's demo page,
and ``/config.json`` (where the pages open their WebSocket)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from transport.version import version

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp

INDEX = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    "<title>Switchover</title></head><body>\n<h1>Switchover</h1>\n<ul>\n"
    '<li><a href="/widget">Chat widget</a> (talk to the bot, ask for a human)</li>\n'
    '<li><a href="/desk">Agent desk</a> (answer the chats)</li>\n'
    '<li><a href="/settings">Settings</a> (administrators: the bots\' livechat settings)</li>\n'
    '<li><a href="/healthz">Health</a> and <a href="/metrics">metrics</a></li>\n'
    "</ul>\n</body></html>\n"
)


def _app(request: Request) -> HttpApp:
    return cast("HttpApp", request.app)


async def index(request: Request) -> Response:
    return HTMLResponse(INDEX)


async def desk(request: Request) -> Response:
    return await _app(request).files.file("desk.html", request.scope)


async def widget(request: Request) -> Response:
    return await _app(request).files.file("widget.html", request.scope)


async def client_config(request: Request) -> Response:
    app = _app(request)
    data = {
        "ws_url": app.ws_url(),
        "ws_port": app.ws_port,
        "default_bot": app.services.default_bot,
        "version": version(),
    }
    return JSONResponse(data, headers={"cache-control": "no-store"})
