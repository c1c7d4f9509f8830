"""The livechat platforms' routes: what helpdesks tell Switchover (docs/platforms.md).

Each is the Starlette route of a plain function in ``transport/livechat/``, given the
backends the app was built with (``HttpApp.backends``):

* ``POST /v1/livechat/{bot_id}/actions``: the generic webhook protocol's actions
  (:func:`transport.livechat.actions.take_action`);
* ``POST /v1/livechat/{bot_id}/gorgias``: Gorgias's HTTP integration
  (:func:`transport.livechat.gorgias.webhook.take_webhook`);
* ``POST /v1/livechat/{bot_id}/chatwoot``: a Chatwoot inbox's webhook
  (:func:`transport.livechat.chatwoot.webhook.receive`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from transport.livechat import actions
from transport.livechat.backends import Backends
from transport.livechat.chatwoot import webhook as chatwoot_webhook
from transport.livechat.gorgias import webhook as gorgias_webhook

if TYPE_CHECKING:
    from transport.servers.http.app import HttpApp

__all__ = ["ROUTES"]


def _backends(request: Request) -> Backends:
    return cast("HttpApp", request.app).backends


async def _actions(request: Request) -> Response:
    status, answer = await actions.take_action(
        _backends(request).platforms,
        request.path_params["bot_id"],
        request.headers,
        await request.body(),
    )
    return JSONResponse(answer, status)


async def _gorgias(request: Request) -> Response:
    backend, token = _backends(request).gorgias.get(request.path_params["bot_id"], (None, None))
    status, answer = await gorgias_webhook.take_webhook(
        backend, token, request.headers, dict(request.query_params), await request.body()
    )
    return JSONResponse(answer, status)


async def _chatwoot(request: Request) -> Response:
    status, answer = await chatwoot_webhook.receive(
        _backends(request).chatwoot,
        request.path_params["bot_id"],
        request.headers,
        request.url.query,
        await request.body(),
    )
    return JSONResponse(answer, status)


ROUTES = [
    Route(actions.PATH, _actions, methods=["POST"]),
    Route(gorgias_webhook.PATH, _gorgias, methods=["POST"]),
    Route(chatwoot_webhook.PATH, _chatwoot, methods=["POST"]),
]
