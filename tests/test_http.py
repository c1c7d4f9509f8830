"""The HTTP listener: real hypercorn on an ephemeral port, a real HTTP client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from prometheus_client import Gauge
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from actors import SESSION_START, Content, Desk, Switchboard, UserSays
from transport.protocol.services import Services
from transport.servers.http.app import WEB_DIR, HttpApp
from transport.servers.http.serve import serve_http


@attrs.frozen
class Served:
    app: HttpApp
    url: str
    board: Switchboard
    web: Path


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    web = tmp_path / "web"
    (web / "img").mkdir(parents=True)
    (web / "desk.html").write_text("<!doctype html><title>desk</title>")
    (web / "widget.html").write_text("<!doctype html><title>widget</title>")
    (web / "widget.js").write_text("console.log('hi')")
    (web / "widget.css").write_text("body { margin: 0 }")
    (web / "img" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (web / ".env").write_text("SECRET=1")
    (tmp_path / "outside.txt").write_text("private")
    (web / "link.txt").symlink_to(tmp_path / "outside.txt")
    return web


def services_of(board: Switchboard) -> Services:
    desk = board.backends["desk"]
    assert isinstance(desk, Desk)
    return Services(board, desk, secret="s", bot_tokens={"bot-token": "demo"})


@asynccontextmanager
async def serving(app: HttpApp) -> AsyncIterator[str]:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http, app, "127.0.0.1", 0, stop)
        assert port > 0
        yield f"http://127.0.0.1:{port}"
        stop.set()


@pytest.fixture
async def served(board: Switchboard, web_dir: Path) -> AsyncIterator[Served]:
    app = HttpApp(services_of(board), web_dir=web_dir, ws_port=9999)
    async with serving(app) as url:
        yield Served(app, url, board, web_dir)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.url, timeout=5) as client:
        yield client


async def raw_get(url: str, target: str) -> bytes:
    """Send a request line exactly as written (HTTP clients normalise ``..`` away)."""
    host, port = url.removeprefix("http://").split(":")
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            await stream.send_all(request.encode())
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


async def test_healthz_reports_status_version_and_load(
    served: Served, client: httpx.AsyncClient
) -> None:
    state = await served.board.open_conversation("demo")
    await served.board.ask(state.conversation_id, UserSays(Content.payload(SESSION_START)))
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["status"] == "ok"
    assert data["version"]
    assert data["active_conversations"] == 1
    assert data["dormant_conversations"] == 0
    assert data["queue_length"] in (0, 1)  # the desk may not have seen the request yet
    served.app.stopping = True
    stopping = await client.get("/healthz")
    assert stopping.status_code == 503 and stopping.json()["status"] == "stopping"


async def test_metrics_are_prometheus_text(served: Served, client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await served.board.open_conversation("demo")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in response.text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["switchover_conversations_started_total"] == 2
    assert samples["switchover_conversations_active"] == 2
    assert samples["switchover_conversations_dormant"] == 0
    assert samples["switchover_conversation_restarts_total"] == 0
    assert samples["switchover_conversation_escalations_total"] == 0
    assert samples["switchover_queue_length"] == 0
    assert samples["switchover_agents_available"] == 0
    assert "# TYPE switchover_conversations_started_total counter" in response.text
    assert "# TYPE switchover_conversations_active gauge" in response.text


async def test_other_modules_add_metrics_and_routes(
    served: Served, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    things = Gauge("switchover_test_things", "Things.", registry=served.app.registry)
    things.set(2.5)

    async def echo(request: Request) -> Response:
        return JSONResponse({"name": request.path_params["name"], "got": await request.json()}, 201)

    served.app.add_route("/v1/echo/{name}", echo, methods=["POST"])
    metrics = await client.get("/metrics")
    assert "switchover_test_things 2.5" in metrics.text
    created = await client.post("/v1/echo/ann", json={"a": 1})
    assert (created.status_code, created.json()) == (201, {"name": "ann", "got": {"a": 1}})
    too_big = await client.post("/v1/echo/ann", content=b"x" * (1024 * 1024 + 1))
    assert too_big.status_code == 413 and too_big.json()["error"] == "too_large"
    broken = await client.post("/v1/echo/ann", content=b"{not json")
    assert broken.status_code == 500 and broken.json()["error"] == "internal_error"
    assert broken.headers["x-content-type-options"] == "nosniff"
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in failures] == ["POST /v1/echo/ann failed"]
    assert failures[0].name == "switchover.http" and failures[0].exc_info is not None
    # The server is still fine after a handler failed.
    assert (await client.get("/healthz")).status_code == 200


async def test_the_bot_push_route_is_built_in(served: Served, client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/bots/demo/messages", json={"conversation_id": "x"})
    assert response.status_code == 401
    state = await served.board.open_conversation("demo")
    pushed = await client.post(
        "/v1/bots/demo/messages",
        headers={"authorization": "Bearer bot-token"},
        json={
            "conversation_id": state.conversation_id,
            "messages": [{"content_type": "text", "content": {"text": "ping"}}],
        },
    )
    assert pushed.status_code == 200 and pushed.json()["accepted"] is True


async def test_the_helpdesks_actions_route_is_built_in(client: httpx.AsyncClient) -> None:
    # No platform was given to this app: every bot's token is unknown, in JSON.
    response = await client.post(
        "/v1/livechat/demo/actions", json={}, headers={"authorization": "Bearer x" * 3}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_config_json_tells_the_pages_where_the_websocket_is(
    served: Served, client: httpx.AsyncClient
) -> None:
    served.app.ws_host = "127.0.0.1"
    response = await client.get("/config.json")
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert (data["ws_url"], data["ws_port"]) == ("ws://127.0.0.1:9999/", 9999)
    assert data["default_bot"] == "demo"
    # The request's Host header is never reflected: anyone (or a cache) could choose it.
    forged = await client.get("/config.json", headers={"host": "evil.example.com:80"})
    assert forged.json()["ws_url"] == "ws://127.0.0.1:9999/"
    # Listening on every address: the page uses ws_port on the host config.json came from.
    served.app.ws_host = "0.0.0.0"
    assert (await client.get("/config.json")).json()["ws_url"] is None
    served.app.ws_host = "::1"
    assert (await client.get("/config.json")).json()["ws_url"] == "ws://[::1]:9999/"
    served.app.public_ws_url = "wss://chat.example.com/ws"
    assert (await client.get("/config.json")).json()["ws_url"] == "wss://chat.example.com/ws"


async def test_every_answer_carries_the_security_headers(
    served: Served, client: httpx.AsyncClient
) -> None:
    for path in ("/", "/desk", "/widget", "/static/widget.js", "/healthz", "/nothing-here"):
        headers = (await client.get(path)).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "no-referrer", path
    for path in ("/", "/desk"):
        policy = (await client.get(path)).headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
    assert (
        "frame-ancestors 'none'" in (await client.get("/widget")).headers["content-security-policy"]
    )
    svg = (await client.get("/static/img/logo.svg")).headers["content-security-policy"]
    assert svg.startswith("default-src 'none'")
    framed = HttpApp(
        served.app.services,
        web_dir=served.app.web_dir,
        widget_frame_ancestors=["https://shop.example.com", "'self'"],
    )
    async with serving(framed) as url, httpx.AsyncClient(base_url=url, timeout=5) as other:
        widget = (await other.get("/widget")).headers
        assert (
            "frame-ancestors https://shop.example.com 'self'" in widget["content-security-policy"]
        )
        assert "x-frame-options" not in widget  # DENY would forbid what the policy allows
        desk = (await other.get("/desk")).headers
        assert "frame-ancestors 'none'" in desk["content-security-policy"]
        assert desk["x-frame-options"] == "DENY"


async def test_the_security_headers_keep_their_values(client: httpx.AsyncClient) -> None:
    page = (await client.get("/desk")).headers
    assert page["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self';"
        " img-src 'self' https: data: blob:; media-src 'self' https:;"
        " connect-src 'self' ws: wss:; form-action 'self';"
        " base-uri 'none'; frame-ancestors 'none'"
    )
    script = (await client.get("/static/widget.js")).headers
    assert script["content-security-policy"] == (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
    )
    assert script["x-frame-options"] == "DENY"
    data = (await client.get("/healthz")).headers
    assert "content-security-policy" not in data and "x-frame-options" not in data
    for path in ("/nothing-here", "/static/missing.js"):
        missing = (await client.get(path)).headers
        assert missing["content-type"] == "application/json", path
        assert missing["x-content-type-options"] == "nosniff", path


def test_the_pages_have_no_inline_script_or_style() -> None:
    for page in WEB_DIR.glob("*.html"):
        html = page.read_text()
        assert "<style" not in html, page
        for tag in re.findall(r"<script[^>]*>", html):
            assert "src=" in tag, (page, tag)
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", html), page  # no inline handlers


@pytest.mark.parametrize(
    ("path", "content_type", "text"),
    [
        ("/desk", "text/html; charset=utf-8", "<title>desk</title>"),
        ("/widget", "text/html; charset=utf-8", "<title>widget</title>"),
        ("/static/widget.js", "text/javascript; charset=utf-8", "console.log"),
        ("/static/widget.css", "text/css; charset=utf-8", "margin"),
        ("/static/img/logo.svg", "image/svg+xml", "<svg"),
    ],
)
async def test_pages_and_static_files(
    client: httpx.AsyncClient, path: str, content_type: str, text: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert text in response.text
    head = await client.head(path)
    assert head.status_code == 200 and head.content == b""


async def test_the_index_links_both_pages(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert 'href="/widget"' in response.text and 'href="/desk"' in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/static/missing.js",
        "/static/.env",
        "/static/img",
        "/static/link.txt",
        "/static/%2e%2e/outside.txt",
        "/static/img/%2e%2e/%2e%2e/outside.txt",
        "/static/..%2foutside.txt",
        "/static/%2fetc%2fpasswd",
    ],
)
async def test_anything_else_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "private" not in response.text


@pytest.mark.parametrize(
    "target",
    ["/static/../outside.txt", "/static/img/../../outside.txt", "/static/../../etc/passwd"],
)
async def test_path_traversal_is_refused_on_the_wire(served: Served, target: str) -> None:
    answer = await raw_get(served.url, target)
    status_line = answer.split(b"\r\n", 1)[0]
    assert b" 404 " in status_line or b" 400 " in status_line, status_line
    assert b"private" not in answer and b"root:" not in answer


async def test_wrong_methods_are_refused_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.post("/healthz", content=b"")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"


async def test_the_real_pages_are_served(board: Switchboard) -> None:
    app = HttpApp(services_of(board))
    assert app.web_dir == WEB_DIR.resolve()
    files = {
        "/desk": ("desk.html", "text/html; charset=utf-8"),
        "/widget": ("widget.html", "text/html; charset=utf-8"),
        "/static/widget.js": ("widget.js", "text/javascript; charset=utf-8"),
        "/static/widget.css": ("widget.css", "text/css; charset=utf-8"),
        "/static/switchover-common.js": ("switchover-common.js", "text/javascript; charset=utf-8"),
    }
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        for path, (name, content_type) in files.items():
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type, path
            assert response.content == (WEB_DIR / name).read_bytes(), path


async def test_files_carry_validators_and_are_revalidated(client: httpx.AsyncClient) -> None:
    for path in ("/desk", "/static/widget.js"):
        first = await client.get(path)
        assert first.headers["cache-control"] == "no-cache", path
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        again = await client.get(path, headers={"if-none-match": etag})
        assert (again.status_code, again.content) == (304, b""), path
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "no-cache"
        # The browser merges a 304's headers into its copy: a page must keep its own policy.
        assert "content-security-policy" not in again.headers
        since = await client.get(path, headers={"if-modified-since": modified})
        assert since.status_code == 304, path
        stale = await client.get(path, headers={"if-none-match": '"something-else"'})
        assert stale.status_code == 200 and stale.content == first.content, path


async def test_a_changed_file_gets_a_new_etag(served: Served, client: httpx.AsyncClient) -> None:
    before = (await client.get("/static/widget.js")).headers["etag"]
    (served.web / "widget.js").write_text("console.log('a new release, a longer file')")
    after = await client.get("/static/widget.js", headers={"if-none-match": before})
    assert after.status_code == 200
    assert after.headers["etag"] != before
    assert "a new release" in after.text


async def test_metrics_speak_openmetrics_to_a_scraper_that_asks(client: httpx.AsyncClient) -> None:
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    response = await client.get("/metrics", headers={"accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "# TYPE switchover_conversations_started counter" in response.text
    assert "switchover_conversations_started_total 0.0" in response.text
    assert response.text.endswith("# EOF\n")


async def test_each_app_keeps_its_own_metrics(board: Switchboard, served: Served) -> None:
    other = HttpApp(services_of(board))
    Gauge("switchover_only_here", "Only in one app.", registry=other.registry).set(7)
    await board.open_conversation("demo")
    async with serving(other) as url, httpx.AsyncClient(timeout=5) as client:
        mine = (await client.get(f"{served.url}/metrics")).text
        theirs = (await client.get(f"{url}/metrics")).text
    assert "switchover_conversations_active 1.0" in mine
    assert "switchover_conversations_active 1.0" in theirs
    assert "switchover_only_here 7.0" in theirs and "switchover_only_here" not in mine


async def test_a_trailing_slash_is_another_address(client: httpx.AsyncClient) -> None:
    for path in ("/healthz/", "/desk/", "/static/"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


async def test_a_file_route_takes_get_only(client: httpx.AsyncClient) -> None:
    response = await client.post("/static/widget.js", content=b"")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.text == "method not allowed\n"


async def test_a_head_answer_sends_no_body_on_the_wire(served: Served) -> None:
    host, port = served.url.removeprefix("http://").split(":")
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            # Two requests on one connection: a body after the HEAD answer would be read as
            # the start of the second answer.
            await stream.send_all(
                f"HEAD /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n"
                f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:80]


async def test_a_route_may_set_its_own_security_header(
    served: Served, client: httpx.AsyncClient
) -> None:
    async def framed(request: Request) -> Response:
        policy = "default-src 'none'; frame-ancestors https://partner.example.com"
        return HTMLResponse(
            "<!doctype html><title>framed</title>", headers={"Content-Security-Policy": policy}
        )

    served.app.add_route("/framed", framed, methods=["GET"])
    headers = (await client.get("/framed")).headers
    assert headers.get_list("content-security-policy") == [
        "default-src 'none'; frame-ancestors https://partner.example.com"
    ]
    assert headers["x-content-type-options"] == "nosniff"
