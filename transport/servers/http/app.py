"""The HTTP side: health, metrics, the web pages, and a route table other modules extend.

trio-websocket cannot answer plain HTTP, so a second listener serves this small ASGI app with
hypercorn's trio worker. It has no framework underneath on purpose: a handful of routes, each
an ``async`` function from :class:`Request` to :class:`Response`, registered with
:meth:`HttpApp.add_route`. The bot push endpoint registers its
route the same way (:func:`transport.servers.http.push.register`).
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from transport.protocol.credentials import AddressGuard, retry_words
from transport.protocol.services import Services
from transport.version import version

log = logging.getLogger("switchover.http")

WEB_DIR = Path(__file__).parent.parent.parent / "web"
MAX_BODY_BYTES = 1024 * 1024

# Files the web pages may load: plain names in web/ (and its subfolders), no dot-files.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
    ".woff2": "font/woff2",
}

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@attrs.frozen
class Request:
    """One HTTP request, read whole (bodies are small here: JSON from bots and webhooks)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = attrs.field(factory=dict)

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` when it is not."""
        return json.loads(self.body.decode("utf-8"))


@attrs.frozen
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        # allow_nan=False: an answer is strict JSON, or it is not sent (500 instead).
        return cls(status, json.dumps(data, allow_nan=False).encode("utf-8"), "application/json")

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Response:
        """Every error answer has the same shape: a stable ``error`` code and words."""
        return cls.json({"error": code, "message": message}, status)


Handler = Callable[[Request], Awaitable[Response]]


@attrs.frozen
class Route:
    method: str
    template: str
    handler: Handler
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, method: str, template: str, handler: Handler) -> Route:
        """``template`` is a path whose ``{name}`` segments match one path segment each, and
        a final ``{name:path}`` the rest of the path."""
        parts = []
        for segment in template.strip("/").split("/"):
            match = re.fullmatch(r"\{(\w+)(:path)?\}", segment)
            if match is None:
                parts.append(re.escape(segment))
            else:
                parts.append(f"(?P<{match.group(1)}>{'.+' if match.group(2) else '[^/]+'})")
        return cls(method.upper(), template, handler, re.compile("^/" + "/".join(parts) + "$"))


@attrs.frozen
class Metric:
    """One Prometheus sample, with its help text and type."""

    name: str
    kind: str
    help: str
    value: float


MetricSource = Callable[[], Iterable[Metric]]


class HttpApp:
    """The ASGI application.

    ``ws_port`` is the WebSocket listener's bound port, set by the runtime once it listens,
    so the web pages learn where to connect from ``/config.json``. ``stopping`` turns
    ``/healthz`` to 503 during a graceful shutdown, so a load balancer stops sending users.
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
    ) -> None:
        self.services = services
        self.web_dir = web_dir.resolve()
        self.ws_port = ws_port
        self.public_ws_url = public_ws_url
        self.ws_host = ws_host
        limits = services.limits
        # Failed authentications (401) per client address, as on the WebSocket listener.
        self.guard = AddressGuard(
            auth_failures=limits.auth_failures,
            auth_window=limits.auth_window,
            conversations_per_minute=0.0,
            conversations_burst=1,
            clock=time.monotonic,
        )
        self._page_policy = _page_policy("'none'")
        self._widget_policy = _page_policy(" ".join(widget_frame_ancestors) or "'none'")
        self.stopping = False
        self.started_at = time.monotonic()
        self.routes: list[Route] = []
        self.metric_sources: list[MetricSource] = [self._core_metrics]
        self.add_route("GET", "/", self.index)
        self.add_route("GET", "/healthz", self.healthz)
        self.add_route("GET", "/metrics", self.metrics)
        self.add_route("GET", "/config.json", self.client_config)
        self.add_route("GET", "/desk", self._page("desk.html"))
        self.add_route("GET", "/widget", self._page("widget.html"))
        self.add_route("GET", "/static/{name:path}", self.static)

    # -- extending ----------------------------------------------------------------------

    def add_route(self, method: str, template: str, handler: Handler) -> None:
        """Serve ``method template`` with ``handler``. Later routes do not shadow earlier
        ones with the same template and method."""
        self.routes.append(Route.of(method, template, handler))

    def add_metrics(self, source: MetricSource) -> None:
        """Add samples to ``/metrics``: ``source`` is called on every scrape."""
        self.metric_sources.append(source)

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._respond(scope, receive)
        own = {key.lower() for key in response.headers}
        headers = [
            (b"content-type", response.content_type.encode("latin-1")),
            (b"content-length", str(len(response.body)).encode("latin-1")),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()),
            *(
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in self._security_headers(scope["path"], response).items()
                if k not in own
            ),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    def _security_headers(self, path: str, response: Response) -> dict[str, str]:
        """On every answer: no sniffing, no referrer; a page may run only its own scripts and
        styles (none inline) and be framed by nobody, the widget page by the configured
        origins; anything else may load nothing at all."""
        headers = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
        if response.content_type.startswith("text/html"):
            policy = self._widget_policy if path.rstrip("/") == "/widget" else self._page_policy
        elif response.content_type.startswith("application/json"):
            return headers  # data for scripts, never a document
        else:
            policy = _NOTHING_POLICY  # scripts, styles, images (an SVG opened on its own)
        headers["content-security-policy"] = policy
        if "frame-ancestors 'none'" in policy:
            headers["x-frame-options"] = "DENY"
        return headers

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        body = await _read_body(receive, MAX_BODY_BYTES)
        if body is None:
            return Response.error(
                413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes."
            )
        method = scope["method"].upper()
        path = scope["path"]
        allowed: list[str] = []
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            if route.method != method and not (route.method == "GET" and method == "HEAD"):
                allowed.append(route.method)
                continue
            request = Request(
                method,
                path,
                scope.get("query_string", b"").decode("latin-1"),
                {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
                body,
                match.groupdict(),
            )
            client = scope.get("client")
            address = str(client[0]) if client else ""
            if "authorization" in request.headers:
                wait = self.guard.locked_for(address)
                if wait > 0:
                    seconds = max(1, math.ceil(wait))
                    return Response(
                        429,
                        json.dumps(
                            {
                                "error": "too_many_attempts",
                                "message": "Too many failed authentications from this address;"
                                f" {retry_words(wait)}.",
                            }
                        ).encode("utf-8"),
                        "application/json",
                        {"retry-after": str(seconds)},
                    )
            try:
                response = await route.handler(request)
            except Exception:
                log.exception("%s %s failed", method, path)
                return Response.error(500, "internal_error", "The request could not be handled.")
            if response.status == 401:
                self.guard.failed(address)
            return response
        if allowed:
            return Response(
                405,
                b"method not allowed\n",
                headers={"allow": ", ".join(sorted(set(allowed)))},
            )
        return Response.error(404, "not_found", f"Nothing at {path}.")

    # -- the routes ---------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        page = (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>Switchover</title></head><body>\n<h1>Switchover</h1>\n<ul>\n"
            '<li><a href="/widget">Chat widget</a> (talk to the bot, ask for a human)</li>\n'
            '<li><a href="/desk">Agent desk</a> (answer the chats)</li>\n'
            '<li><a href="/healthz">Health</a> and <a href="/metrics">metrics</a></li>\n'
            "</ul>\n</body></html>\n"
        )
        return Response(200, page.encode("utf-8"), _CONTENT_TYPES[".html"])

    async def healthz(self, request: Request) -> Response:
        board, desk = self.services.board, self.services.desk
        data = {
            "status": "stopping" if self.stopping else "ok",
            "version": version(),
            "active_conversations": board.active_conversations,
            "queue_length": desk.queue_length,
            "agents_available": desk.agents_available,
        }
        return Response.json(data, 503 if self.stopping else 200)

    async def metrics(self, request: Request) -> Response:
        lines: list[str] = []
        for source in self.metric_sources:
            for metric in source():
                lines.append(f"# HELP {metric.name} {metric.help}")
                lines.append(f"# TYPE {metric.name} {metric.kind}")
                lines.append(f"{metric.name} {_sample(metric.value)}")
        body = ("\n".join(lines) + "\n").encode("utf-8")
        return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")

    async def client_config(self, request: Request) -> Response:
        data = {
            "ws_url": self.ws_url(),
            "ws_port": self.ws_port,
            "default_bot": self.services.default_bot,
            "version": version(),
        }
        return Response(
            200,
            json.dumps(data).encode("utf-8"),
            "application/json",
            {"cache-control": "no-store"},
        )

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

    async def static(self, request: Request) -> Response:
        return self.file_response(request.params["name"])

    def _page(self, name: str) -> Handler:
        async def page(request: Request) -> Response:
            return self.file_response(name)

        return page

    def file_response(self, name: str) -> Response:
        """A file of ``web/`` by its relative name; anything that is not plainly a file
        inside it (``..``, absolute paths, dot-files, links out) is not found."""
        missing = Response.error(404, "not_found", f"No file named {name!r}.")
        if not _SAFE_NAME.match(name):
            return missing
        path = (self.web_dir / name).resolve()
        if not path.is_relative_to(self.web_dir) or not path.is_file():
            return missing
        content_type = _CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None:
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(200, path.read_bytes(), content_type, {"cache-control": "no-cache"})

    # -- metrics ------------------------------------------------------------------------

    def _core_metrics(self) -> list[Metric]:
        board, desk = self.services.board, self.services.desk
        stats = board.stats
        return [
            Metric(
                "switchover_conversations_started_total",
                "counter",
                "Conversations brought into memory (new, restored or woken from the store).",
                stats.started,
            ),
            Metric(
                "switchover_conversations_active",
                "gauge",
                "Conversations in memory now.",
                board.active_conversations,
            ),
            Metric(
                "switchover_conversations_hibernated_total",
                "counter",
                "Idle conversations that left memory (they come back from the store).",
                stats.hibernated,
            ),
            Metric(
                "switchover_conversation_restarts_total",
                "counter",
                "Conversation actors restarted after a failure.",
                stats.restarts,
            ),
            Metric(
                "switchover_conversation_escalations_total",
                "counter",
                "Conversations taken out of memory because restarting did not help.",
                stats.escalations,
            ),
            Metric(
                "switchover_queue_length",
                "gauge",
                "Livechat sessions waiting for an agent.",
                desk.queue_length,
            ),
            Metric(
                "switchover_agents_available",
                "gauge",
                "Agents connected and online.",
                desk.agents_available,
            ),
            Metric(
                "switchover_uptime_seconds",
                "gauge",
                "Seconds since the HTTP listener started.",
                round(time.monotonic() - self.started_at, 3),
            ),
        ]


def _sample(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


_WILDCARDS = frozenset({"0.0.0.0", "::", "*", "[::]"})
_NOTHING_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"


def _page_policy(frame_ancestors: str) -> str:
    """The Content-Security-Policy of a web page: its own scripts and styles only (the pages
    have no inline script or style), WebSockets to the listener, pictures and media a bot
    links to over https."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:;"
        " media-src 'self' https:; connect-src 'self' ws: wss:; form-action 'self';"
        f" base-uri 'none'; frame-ancestors {frame_ancestors}"
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
