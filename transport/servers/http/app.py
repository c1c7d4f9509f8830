"""The HTTP app: health, metrics, the web pages, their files, the bots' push endpoint and
the helpdesks' actions endpoint.

trio-websocket cannot answer plain HTTP, so a second listener serves this Starlette app with
hypercorn's trio worker (:mod:`transport.servers.http.serve`). The routes live beside it:
:mod:`.pages`, :mod:`.static` (``/static/…``), :mod:`.metrics`, :mod:`.push` and
:mod:`.actions`; the middleware in :mod:`.security` (headers, the authentication
throttle), :mod:`.body` (the body size limit) and :mod:`.errors` (the JSON error answers).

An ``HttpApp`` is a ``Starlette`` application, so more routes are added as to any other
(``app.add_route``, ``app.routes``) and more metrics to ``app.registry``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from transport.livechat.backends import Backends
from transport.livechat.settings import BotSettingsBook
from transport.protocol.credentials import AddressGuard
from transport.protocol.services import Services
from transport.servers.http import errors, metrics, pages, platforms, push, settings
from transport.servers.http.attachments import ATTACHMENT_ROUTES, PREFIX, Attachments
from transport.servers.http.body import MAX_BODY_BYTES, BoundedBody
from transport.servers.http.security import AuthThrottle, SecurityHeaders
from transport.servers.http.static import WEB_DIR, WebFiles
from transport.version import version

__all__ = ["WEB_DIR", "HttpApp"]

_WILDCARDS = frozenset({"0.0.0.0", "::", "*", "[::]"})


class HttpApp(Starlette):
    """The ASGI application.

    ``ws_port`` is the WebSocket listener's bound port, set by the runtime once it listens,
    so the web pages learn where to connect from ``/config.json``. ``stopping`` turns
    ``/healthz`` to 503 during a graceful shutdown, so a load balancer stops sending users.
    ``backends``: the livechat backends, for the helpdesks' routes (none: those routes
    know no bot). ``bot_settings``: the bots' settings administrators change at run time
    (``/api/bots``, ``/settings``); ``admins`` maps each administrator's token to its id and
    name. ``attachments``: where uploaded files live and their limits (none: the attachment
    routes are not served).
    """

    def __init__(
        self,
        services: Services,
        *,
        web_dir: Path = WEB_DIR,
        ws_port: int = 0,
        public_ws_url: str | None = None,
        ws_host: str | None = None,
        widget_frame_ancestors: Iterable[str] = (),
        backends: Backends | None = None,
        bot_settings: BotSettingsBook | None = None,
        admins: Mapping[str, tuple[str, str]] | None = None,
        attachments: Attachments | None = None,
    ) -> None:
        self.services = services
        self.bot_settings = bot_settings
        self.admin_tokens = {token: admin[0] for token, admin in (admins or {}).items()}
        self.admin_names = {admin_id: name for admin_id, name in (admins or {}).values()}
        self.backends = backends if backends is not None else Backends({}, {})
        self.attachments = attachments
        self.web_dir = web_dir.resolve()
        self.ws_port = ws_port
        self.public_ws_url = public_ws_url
        self.ws_host = ws_host
        self.stopping = False
        #: More of /healthz: each is called per request and its keys added (the clustered
        #: store's partitions and leases).
        self.health: list[Callable[[], dict[str, Any]]] = []
        self.started_at = time.monotonic()
        self.files = WebFiles(self.web_dir)
        self.registry: CollectorRegistry = metrics.registry_for(services, self.started_at)
        limits = services.limits
        # Failed authentications (401) per client address, as on the WebSocket listener.
        guard = AddressGuard(
            auth_failures=limits.auth_failures,
            auth_window=limits.auth_window,
            conversations_per_minute=0.0,
            conversations_burst=1,
            clock=time.monotonic,
        )
        super().__init__(
            routes=[
                Route("/", pages.index, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", metrics.scrape, methods=["GET"]),
                Route("/config.json", pages.client_config, methods=["GET"]),
                Route("/desk", pages.desk, methods=["GET"]),
                Route("/widget", pages.widget, methods=["GET"]),
                Mount("/static", app=self.files),
                Route(push.PATH, push.endpoint, methods=["POST"]),
                *platforms.ROUTES,
                *settings.ROUTES,
                *(ATTACHMENT_ROUTES if attachments is not None else ()),
            ],
            middleware=[
                Middleware(SecurityHeaders, widget_frame_ancestors=widget_frame_ancestors),
                Middleware(
                    BoundedBody,
                    limit=MAX_BODY_BYTES,
                    own_limits=(PREFIX,) if attachments is not None else (),
                ),
                Middleware(AuthThrottle, guard=guard),
                Middleware(errors.InternalErrors),
            ],
            exception_handlers=errors.HANDLERS,
        )
        # "/healthz/" is not "/healthz": nothing is answered with a redirect.
        self.router.redirect_slashes = False

    async def healthz(self, request: Request) -> Response:
        board, desk = self.services.board, self.services.desk
        data = {
            "status": "stopping" if self.stopping else "ok",
            "version": version(),
            "active_conversations": board.active_conversations,
            "dormant_conversations": board.dormant_conversations,
            "queue_length": desk.queue_length,
            "agents_available": desk.agents_available,
        }
        for more in self.health:
            data.update(more())
        return JSONResponse(data, 503 if self.stopping else 200)

    def ws_url(self) -> str | None:
        """Where browsers connect: the configured public address, else the address the
        WebSocket listener is bound to. ``None`` when it listens on every address: the page
        then connects to ``ws_port`` on the host it loaded ``config.json`` from. Never the
        request's ``Host`` header, which any client (or a cache in between) may choose."""
        if self.public_ws_url:
            return self.public_ws_url
        if not self.ws_host or self.ws_host in _WILDCARDS:
            return None
        host = f"[{self.ws_host}]" if ":" in self.ws_host else self.ws_host
        return f"ws://{host}:{self.ws_port}/"
