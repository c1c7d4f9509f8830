"""The HTTP listener on Starlette against the hand-written app it replaced, in one run.

Two servers run side by side as subprocesses pinned to the server CPU, each with its own
switchboard (memory store, one quiet bot, a few conversations) behind ``serve_http``
(hypercorn's trio worker): the Starlette ``HttpApp`` of this tree, and the baseline, the
hand-written ``HttpApp`` of ``transport/servers/http.py`` as it was at ``BASELINE``
(``git show``n into a temporary module at bench time, with the push route mounted on it the
way that tree did, around the same ``push_messages``). The load generator, this process
(pinned to the client CPU), drives both over real sockets on 127.0.0.1 with a minimal
keep-alive HTTP/1.1 client, alternating old and new, for a bounded number of requests:

- ``push``: ``POST /v1/bots/{bot_id}/messages``, one text message, 200 once the
  conversation has stored it (the core's work is in the figure, the same on both sides);
- ``healthz``: ``GET /healthz``;
- ``file``: ``GET /static/widget.js`` (a web file; the old app read it whole, the new one
  goes through ``StaticFiles``);
- ``revalidate``: the same with the ``If-None-Match`` a browser sends for the copy it kept
  (``Cache-Control: no-cache``): the new app answers ``304`` with no body; the old one had
  no validators and sent the whole file again.

For each workload: the **server's CPU time per request** (``/proc/<pid>/stat`` via psutil;
it does not depend on how much of its core the server got) and the ratio new / old, and the
load generator's CPU (a fraction of wall time: near 100 % the client, not the server, sets
the rate). Before the servers start, the same ``GET /healthz`` is also handed to each app in
this process directly, with no hypercorn and no socket: what the app itself (framework and
middleware) costs of the whole. The version lookup that the old ``/healthz`` did on every
request is cached for both sides here (this tree's ``transport.version``); its cost is
printed beside the table.

    .venv/bin/python bench/http.py                 # 3 rounds of 4,000 requests per workload
    .venv/bin/python bench/http.py --quick         # 1 round of 1,000
    .venv/bin/python bench/http.py --rounds 5 --requests 10000 --connections 8

Writes ``bench/results/http.json``. Needs psutil (``pip install -e '.[bench]'``) and git.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder (bench/) comes first on the path, and this file is
# named http.py: put the repository there instead, so that "http" stays the standard
# library's (hypercorn, httpx and the email package import it).
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from importlib import metadata  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402

from bench.servers import (  # noqa: E402
    BENCH,
    CLIENT_CPU,
    HOST,
    PYTHON,
    ROOT,
    can_pin,
    free_port,
    running,
    scratch,
)

#: The last commit whose HTTP app was written by hand (transport/servers/http.py).
BASELINE = "690108b0e9ac75826598f559990cb68fcbea64ab"
BASELINE_PATH = "transport/servers/http.py"
BOT = "bench"
TOKEN = "bench-bot-token-0123456789"
WORKLOADS = ("push", "healthz", "file", "revalidate")


# -- the servers (run as: bench/http.py serve ...) -----------------------------------------


class QuietBot:
    """A bot that says nothing: the pushes are the only traffic."""

    async def on_event(self, event: object) -> Sequence[Any]:
        return []


def load_baseline(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("switchover_http_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def build_app(side: str, baseline: Path | None, services: Any) -> Any:
    from transport.servers.http.push import PATH, push_messages
    from transport.servers.http.static import WEB_DIR

    if side == "new":
        from transport.servers.http.app import HttpApp

        return HttpApp(services)
    assert baseline is not None
    old = load_baseline(baseline)
    app = old.HttpApp(services, web_dir=WEB_DIR)  # its own default is relative to its file

    async def handle(request: Any) -> Any:  # what that tree's push.register mounted
        status, answer = await push_messages(
            services, request.params["bot_id"], request.headers, request.body
        )
        return old.Response.json(answer, status)

    app.add_route("POST", PATH, handle)
    return app


async def serve(side: str, port: int, conversations: int, baseline: Path | None) -> None:
    from actors import BotBinding, BotSettings, Desk, open_switchboard
    from transport.protocol.services import Services
    from transport.servers.http.serve import serve_http

    settings = BotSettings()
    desk = Desk({BOT: settings}, [])
    bots = {BOT: BotBinding(QuietBot(), settings)}
    async with open_switchboard(bots, {"desk": desk}, hibernate_after=None) as board:
        ids = [(await board.open_conversation(BOT)).conversation_id for _ in range(conversations)]
        services = Services(board, desk, "bench-secret", bot_tokens={TOKEN: BOT})
        app = build_app(side, baseline, services)
        print(json.dumps({"conversations": ids}), flush=True)
        await serve_http(app, HOST, port, trio.Event())


# -- the load generator -----------------------------------------------------------------


def etag_of(port: int, path: str) -> str:
    """The ETag a browser would have kept ("" from an app that sends none)."""
    import http.client

    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.getheader("etag") or '"none"'
    finally:
        connection.close()


def requests_for(workload: str, conversations: list[str], etag: str = "") -> list[bytes]:
    head = f"Host: {HOST}\r\n"
    if workload == "healthz":
        return [f"GET /healthz HTTP/1.1\r\n{head}\r\n".encode()]
    if workload == "file":
        return [f"GET /static/widget.js HTTP/1.1\r\n{head}\r\n".encode()]
    if workload == "revalidate":
        head += f"If-None-Match: {etag}\r\n"
        return [f"GET /static/widget.js HTTP/1.1\r\n{head}\r\n".encode()]
    requests = []
    for conversation_id in conversations:
        body = json.dumps(
            {
                "conversation_id": conversation_id,
                "messages": [{"content_type": "text", "content": {"text": "ping"}}],
            }
        ).encode()
        requests.append(
            (
                f"POST /v1/bots/{BOT}/messages HTTP/1.1\r\n{head}"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    return requests


#: The first answer that was not a 200, to say why a run failed.
refusals: list[bytes] = []


async def one_connection(port: int, requests: list[bytes], count: int, offset: int) -> int:
    """``count`` requests back to back on one keep-alive connection; the number answered
    200 (or 304, to a request for a file the client kept). Reads each answer by its
    Content-Length."""
    ok = 0
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        buffer = b""
        for i in range(count):
            await stream.send_all(requests[(offset + i) % len(requests)])
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection")
                buffer += chunk
            body, buffer = buffer[:length], buffer[length:]
            if head[9:12] in (b"200", b"304"):
                ok += 1
            elif not refusals:
                refusals.append(head.split(b"\r\n", 1)[0] + b" " + body[:200])
    return ok


async def drive(port: int, requests: list[bytes], total: int, connections: int) -> int:
    answered = 0

    async def run(index: int, count: int) -> None:
        nonlocal answered
        done = await one_connection(port, requests, count, index)
        answered += done  # after the await: "answered +=" would read it before

    async with trio.open_nursery() as nursery:
        share, extra = divmod(total, connections)
        for index in range(connections):
            nursery.start_soon(run, index, share + (index < extra))
    return answered


def cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def measure(
    pid: int, port: int, requests: list[bytes], total: int, connections: int
) -> dict[str, float]:
    server_before, client_before, wall_before = (
        cpu_of(pid),
        time.process_time(),
        time.perf_counter(),
    )
    answered = trio.run(drive, port, requests, total, connections)
    wall = time.perf_counter() - wall_before
    client = time.process_time() - client_before
    server = cpu_of(pid) - server_before
    if answered != total:
        raise RuntimeError(
            f"{total - answered} of {total} requests were not answered 200 or 304: {refusals[:1]}"
        )
    return {
        "requests": total,
        "wall_s": wall,
        "rate": total / wall,
        "server_us": server / total * 1e6,
        "server_cpu_fraction": server / wall,
        "client_cpu_fraction": client / wall,
    }


def metadata_lookup_us(samples: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(samples):
        metadata.version("switchover")
    return (time.perf_counter() - start) / samples * 1e6


async def app_alone(baseline: Path, calls: int, repeats: int = 3) -> dict[str, list[float]]:
    """CPU per ``GET /healthz`` handed to each app directly, without hypercorn or sockets:
    what the app itself costs, framework and middleware, alternating old and new."""
    from actors import BotBinding, BotSettings, Desk, open_switchboard
    from transport.protocol.services import Services

    settings = BotSettings()
    desk = Desk({BOT: settings}, [])
    bots = {BOT: BotBinding(QuietBot(), settings)}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.1"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", HOST.encode()), (b"accept", b"*/*")],
        "client": (HOST, 50000),
        "server": (HOST, 8080),
        "extensions": {},
    }
    request = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    figures: dict[str, list[float]] = {"old": [], "new": []}
    async with open_switchboard(bots, {"desk": desk}, hibernate_after=None) as board:
        services = Services(board, desk, "bench-secret", bot_tokens={TOKEN: BOT})
        apps = {side: build_app(side, baseline, services) for side in figures}
        for _ in range(repeats):
            for side, app in apps.items():
                for _ in range(calls // 10):  # warm up
                    await app(dict(scope), receive, send)
                start = time.process_time()
                for _ in range(calls):
                    await app(dict(scope), receive, send)
                figures[side].append((time.process_time() - start) / calls * 1e6)
    if set(statuses) != {200}:
        raise RuntimeError(f"/healthz answered {sorted(set(statuses))} in process")
    return figures


# -- the run ----------------------------------------------------------------------------


def baseline_source(workdir: Path) -> Path:
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE}:{BASELINE_PATH}"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        message = f"cannot read the baseline {BASELINE}:{BASELINE_PATH} with git: {exc}"
        raise SystemExit(message) from exc
    path = workdir / "switchover_http_baseline.py"
    path.write_bytes(source)
    return path


def main_run(args: argparse.Namespace) -> None:
    if can_pin():
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "baseline": BASELINE,
        "libraries": {
            name: metadata.version(name)
            for name in ("starlette", "prometheus-client", "hypercorn", "h11", "trio", "anyio")
        },
        "requests": args.requests,
        "connections": args.connections,
        "rounds": args.rounds,
        "metadata_lookup_us": metadata_lookup_us(),
        "runs": {w: {"old": [], "new": []} for w in WORKLOADS},
    }
    with scratch() as workdir:
        baseline = baseline_source(workdir)
        results["app_alone_us"] = trio.run(app_alone, baseline, args.requests * 5)
        ports = {"old": free_port(), "new": free_port()}
        commands = {
            side: [
                PYTHON,
                str(BENCH / "http.py"),
                "serve",
                "--side",
                side,
                "--port",
                str(ports[side]),
                "--conversations",
                str(args.conversations),
                "--baseline",
                str(baseline),
            ]
            for side in ("old", "new")
        }
        logs = {side: workdir / f"{side}.log" for side in ("old", "new")}
        with (
            running(commands["old"], ports["old"], logs["old"]) as old,
            running(commands["new"], ports["new"], logs["new"]) as new,
        ):
            servers = {"old": old, "new": new}
            conversations = {
                side: json.loads(logs[side].read_text().splitlines()[0])["conversations"]
                for side in servers
            }
            etags = {
                side: etag_of(server.port, "/static/widget.js") for side, server in servers.items()
            }
            results["etags"] = etags
            for side, server in servers.items():  # warm up: imports, first answers, caches
                for workload in WORKLOADS:
                    measure(
                        server.pid,
                        server.port,
                        requests_for(workload, conversations[side], etags[side]),
                        max(200, args.requests // 10),
                        args.connections,
                    )
            for round_ in range(args.rounds):
                order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
                for workload in WORKLOADS:
                    for side in order:
                        server = servers[side]
                        run = measure(
                            server.pid,
                            server.port,
                            requests_for(workload, conversations[side], etags[side]),
                            args.requests,
                            args.connections,
                        )
                        results["runs"][workload][side].append(run)
                        print(
                            f"round {round_ + 1} {workload:8} {side}: "
                            f"{run['rate']:8,.0f} req/s  server {run['server_us']:6.1f} us/req  "
                            f"load generator {run['client_cpu_fraction']:.0%}",
                            file=sys.stderr,
                        )
    report(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


def report(results: dict[str, Any]) -> None:
    print(
        f"\n{results['requests']:,} requests per workload and side per round, "
        f"{results['connections']} connections, {results['rounds']} round(s); medians "
        "(range). server us/req is the server's CPU time per request."
    )
    print(
        "\n| workload | old us/req | new us/req | new / old | new - old | old req/s | new req/s "
        "| load generator CPU old / new |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary = {}
    for workload, sides in results["runs"].items():

        def figures(
            side: str, key: str, runs: dict[str, list[dict[str, float]]] = sides
        ) -> list[float]:
            return [run[key] for run in runs[side]]

        old_us, new_us = figures("old", "server_us"), figures("new", "server_us")
        ratios = [n / o for n, o in zip(new_us, old_us, strict=True)]
        summary[workload] = {
            "old_us": statistics.median(old_us),
            "new_us": statistics.median(new_us),
            "ratio": statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }

        def spread(values: list[float], fmt: str) -> str:
            middle = format(statistics.median(values), fmt)
            if len(values) == 1:
                return middle
            return f"{middle} ({format(min(values), fmt)}-{format(max(values), fmt)})"

        client = f"{statistics.median(figures('old', 'client_cpu_fraction')):.0%} / "
        client += f"{statistics.median(figures('new', 'client_cpu_fraction')):.0%}"
        print(
            f"| {workload} | {spread(old_us, '.1f')} | {spread(new_us, '.1f')} "
            f"| {spread(ratios, '.2f')}x "
            f"| {statistics.median(new_us) - statistics.median(old_us):+.1f} us "
            f"| {spread(figures('old', 'rate'), ',.0f')} "
            f"| {spread(figures('new', 'rate'), ',.0f')} "
            f"| {client} |"
        )
    results["summary"] = summary
    alone = results["app_alone_us"]
    print(
        "\nThe app alone, GET /healthz handed to it without hypercorn or sockets: "
        f"old {statistics.median(alone['old']):.1f} us, "
        f"new {statistics.median(alone['new']):.1f} us "
        f"per request (CPU, median of {len(alone['old'])})"
    )
    print(
        f"\nimportlib.metadata.version() (what the old /healthz and /config.json did on every "
        f"request before the version was cached): {results['metadata_lookup_us']:.0f} us"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command")
    serve_parser = commands.add_parser("serve", help="run one side's server (used by the run)")
    serve_parser.add_argument("--side", choices=("old", "new"), required=True)
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--conversations", type=int, default=16)
    serve_parser.add_argument("--baseline", type=Path)
    parser.add_argument("--requests", type=int, default=4000, help="per workload, side, round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 round of 1,000 requests")
    parser.add_argument("--out", default=str(BENCH / "results" / "http.json"))
    args = parser.parse_args(argv)
    if args.command == "serve":
        trio.run(serve, args.side, args.port, args.conversations, args.baseline)
        return
    if args.quick:
        args.requests, args.rounds = 1000, 1
    main_run(args)


if __name__ == "__main__":
    main()
