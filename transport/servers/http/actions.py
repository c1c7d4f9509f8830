"""``POST /v1/livechat/{bot_id}/actions``: what a helpdesk's agents did, for the livechat
platforms of the generic webhook protocol (docs/platforms.md). The work is
:func:`transport.livechat.actions.take_action`; this is its Starlette route, reading the
platforms the app was given (``HttpApp.platforms``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from transport.livechat.actions import PATH, take_action

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp

__all__ = ["PATH", "endpoint"]


async def endpoint(request: Request) -> Response:
    """``POST`` :data:`PATH` on the HTTP app: :func:`take_action` with the app's platforms."""
    platforms = cast("HttpApp", request.app).platforms
    status, answer = await take_action(
        platforms, request.path_params["bot_id"], request.headers, await request.body()
    )
    return JSONResponse(answer, status)
