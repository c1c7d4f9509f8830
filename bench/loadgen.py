"""The load generator: WebSocket clients in their own process, built on ``websockets``.

A load generator written with trio-websocket spends as much CPU per frame as the server it
measures and ends up measuring itself; the ``websockets`` library's asyncio client costs
about a third of that. This process is meant to run pinned to its own core (``taskset -c 1``)
while the server runs on the other; it reports its own CPU use beside the server's so that a
saturated client is seen rather than mistaken for a slow server.

Three workloads, each printing progress lines (``progress {json}``) on stderr and one result
line (``result {json}``) on stdout:

* ``echo``: N connections each doing back-to-back round trips against an echo server.
* ``sessions``: M agents and N users of ``switchover serve``; each user opens a conversation,
  presses the human button (``LIVECHAT_SESSION_START``), waits for an agent to pick it up, and
  then plays ping-pong: the user writes, the agent answers, the user writes again.
* ``idle``: open K connections (bare handshakes, or Switchover users saying hello), hold them
  idle while the server's memory is read, then close them and resume every user.

Only ever connects to 127.0.0.1. Every loop is bounded by a duration or a count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect

# A ~100-byte text frame, the size of a short chat message in the wire protocol.
PING_TEXT = "the quick brown fox jumps over"
SESSION_START = "LIVECHAT_SESSION_START"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_client(url: str, **options: Any) -> Any:
    """Every client connection is opened the same way: no compression (the trio-websocket
    server offers none), no client-side pings, no size limit surprises."""
    if not url.startswith(("ws://127.0.0.1", "ws://localhost")):
        raise SystemExit(f"refusing to send load anywhere but 127.0.0.1: {url}")
    return connect(
        url,
        compression=None,
        ping_interval=None,
        max_size=2**22,
        open_timeout=60,
        close_timeout=5,
        **options,
    )


# --- measurement ------------------------------------------------------------------------


@dataclass
class CpuSample:
    wall: float
    own: float
    server: float | None
    server_rss: int | None


def sample(server: psutil.Process | None) -> CpuSample:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = server_rss = None
    if server is not None:
        times = server.cpu_times()
        server_cpu = times.user + times.system
        server_rss = server.memory_info().rss
    return CpuSample(time.monotonic(), usage.ru_utime + usage.ru_stime, server_cpu, server_rss)


@dataclass
class Window:
    """Counts round trips only between ``open`` and ``close``; before that is warm-up."""

    measuring: bool = False
    round_trips: int = 0
    latencies: list[float] = field(default_factory=list)
    total_round_trips: int = 0

    def record(self, latency: float) -> None:
        self.total_round_trips += 1
        if self.measuring:
            self.round_trips += 1
            self.latencies.append(latency)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def progress(**fields: Any) -> None:
    print("progress " + json.dumps(fields), file=sys.stderr, flush=True)


async def measure(
    window: Window,
    *,
    warmup: float,
    duration: float,
    server: psutil.Process | None,
    label: str,
    workers: list[asyncio.Task[None]],
) -> dict[str, Any]:
    """Let the workers warm up, then count for ``duration`` seconds and sample CPU at both ends."""
    await asyncio.sleep(warmup)
    start = sample(server)
    window.measuring = True
    deadline = start.wall + duration
    while (now := time.monotonic()) < deadline:
        await asyncio.sleep(min(1.0, deadline - now))
        failed = [w for w in workers if w.done()]
        if failed:
            for w in failed:
                if w.exception() is not None:
                    raise RuntimeError(f"{label}: a client failed") from w.exception()
            raise RuntimeError(f"{label}: a client stopped early")
        elapsed = time.monotonic() - start.wall
        progress(
            label=label,
            elapsed=round(elapsed, 1),
            of=duration,
            round_trips=window.round_trips,
            rate=round(window.round_trips / elapsed) if elapsed else 0,
        )
    window.measuring = False
    end = sample(server)
    elapsed = end.wall - start.wall
    latencies = sorted(window.latencies)
    result: dict[str, Any] = {
        "seconds": round(elapsed, 3),
        "round_trips": window.round_trips,
        "round_trips_per_s": window.round_trips / elapsed,
        "latency_ms": {
            "p50": percentile(latencies, 0.50) * 1e3,
            "p99": percentile(latencies, 0.99) * 1e3,
            "max": (latencies[-1] if latencies else float("nan")) * 1e3,
        },
        "client_cpu_fraction": (end.own - start.own) / elapsed,
    }
    if start.server is not None and end.server is not None:
        result["server_cpu_fraction"] = (end.server - start.server) / elapsed
        result["server_cpu_seconds"] = end.server - start.server
        result["server_rss_bytes"] = end.server_rss
    return result


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def bounded(concurrency: int, jobs: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``jobs`` with at most ``concurrency`` in flight: opening thousands of connections at
    once only measures the listen backlog."""
    limit = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with limit:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


# --- echo -------------------------------------------------------------------------------


async def run_echo(args: argparse.Namespace, server: psutil.Process | None) -> dict[str, Any]:
    frame = json.dumps(
        {"type": "message", "id": "c1", "content_type": "text", "content": {"text": PING_TEXT}}
    )
    window = Window()
    connections: list[ClientConnection] = []

    async def open_one() -> None:
        connections.append(await open_client(args.url))

    await bounded(args.concurrency, [open_one] * args.connections)

    async def ping_pong(ws: ClientConnection) -> None:
        clock = time.perf_counter
        while True:
            sent = clock()
            await ws.send(frame)
            await ws.recv()
            window.record(clock() - sent)

    workers = [asyncio.create_task(ping_pong(ws)) for ws in connections]
    try:
        result = await measure(
            window,
            warmup=args.warmup,
            duration=args.duration,
            server=server,
            label=f"bare echo, {args.connections} conns",
            workers=workers,
        )
    finally:
        await cancel_all(workers)
        await asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True)
    result["connections"] = args.connections
    # One echo is one frame in and one frame out on the server.
    result["messages_per_s"] = result["round_trips_per_s"]
    return result


# --- live sessions ----------------------------------------------------------------------


class Agent:
    """One agent connection answering every user message in every chat it holds."""

    def __init__(self, ws: ClientConnection, agent_id: str) -> None:
        self.ws = ws
        self.agent_id = agent_id
        self.picked_up: dict[str, asyncio.Event] = {}
        self.answered = 0

    def pickup_event(self, conversation_id: str) -> asyncio.Event:
        return self.picked_up.setdefault(conversation_id, asyncio.Event())

    async def answer(self) -> None:
        ws = self.ws
        dumps = json.dumps
        loads = json.loads
        async for raw in ws:
            frame = loads(raw)
            kind = frame.get("type")
            if kind == "entry" and frame.get("sender") == "user":
                content = frame.get("content") or {}
                if frame.get("content_type") != "text":
                    continue
                # With an id, as the desk sends it: the answer is acked (with its seq)
                # rather than echoed back. Unique per answer: a conversation takes a
                # repeated id with the same text for a resend.
                await ws.send(
                    dumps(
                        {
                            "type": "message",
                            "id": f"a{self.answered}",
                            "conversation_id": frame["conversation_id"],
                            "content_type": "text",
                            "content": {"text": "re: " + str(content.get("text", ""))[:40]},
                        }
                    )
                )
                self.answered += 1
            elif kind == "transcript":
                self.pickup_event(frame["conversation_id"]).set()
            elif kind == "error":
                print(f"agent {self.agent_id} got an error: {raw!r}", file=sys.stderr, flush=True)


async def hello(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "hello", "v": 1, **message}))
    welcome: dict[str, Any] = json.loads(await ws.recv())
    if welcome.get("type") != "welcome":
        raise RuntimeError(f"expected a welcome, got {welcome}")
    return welcome


async def open_agent(url: str, token: str) -> Agent:
    ws = await open_client(url)
    welcome = await hello(ws, {"role": "agent", "token": token})
    await ws.send(json.dumps({"type": "presence", "status": "online"}))
    return Agent(ws, welcome.get("agent_id", token))


async def await_frame(
    ws: ClientConnection, accept: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if frame.get("type") == "error":
                raise RuntimeError(f"server refused: {frame}")
            if accept(frame):
                return frame


def is_agent_joined(frame: dict[str, Any]) -> bool:
    return (
        frame.get("type") == "entry"
        and frame.get("content_type") == "notice"
        and (frame.get("content") or {}).get("code") == "agent_joined"
    )


def is_agent_entry(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "entry" and frame.get("sender") == "agent"


@dataclass
class User:
    ws: ClientConnection
    conversation_id: str
    resume_token: str
    last_seq: int = 0


async def open_live_user(url: str, bot_id: str, index: int, timeout: float) -> User:
    ws = await open_client(url)
    welcome = await hello(
        ws, {"role": "user", "bot_id": bot_id, "metadata": {"name": f"load user {index}"}}
    )
    await ws.send(
        json.dumps(
            {"type": "message", "content_type": "payload", "content": {"payload": SESSION_START}}
        )
    )
    await await_frame(ws, is_agent_joined, timeout)
    return User(ws, welcome["conversation_id"], welcome.get("resume_token", ""))


async def run_sessions(args: argparse.Namespace, server: psutil.Process | None) -> dict[str, Any]:
    tokens = args.agent_tokens.split(",")
    setup_started = time.monotonic()
    agents = [await open_agent(args.url, token) for token in tokens]
    answering = [asyncio.create_task(agent.answer()) for agent in agents]
    users: list[User] = []

    async def open_one(index: int) -> None:
        users.append(await open_live_user(args.url, args.bot_id, index, args.setup_timeout))
        if len(users) % 100 == 0:
            progress(label="setting up", users=len(users), of=args.users)

    await bounded(
        args.concurrency,
        [lambda i=i: open_one(i) for i in range(args.users)],  # type: ignore[misc]
    )
    setup_seconds = time.monotonic() - setup_started
    window = Window()
    # With an id, as the chat widget and the Python client send it: the server acks it with
    # its seq instead of echoing the entry back. Unique per message (a numbered suffix on a
    # frame made once): a conversation takes a repeated id with the same text for a resend.
    head, tail = json.dumps(
        {"type": "message", "id": "u#", "content_type": "text", "content": {"text": PING_TEXT}}
    ).split("u#", 1)

    async def ping_pong(user: User) -> None:
        ws = user.ws
        clock = time.perf_counter
        loads = json.loads
        sent_count = 0
        while True:
            sent = clock()
            sent_count += 1
            await ws.send(f"{head}u{sent_count}{tail}")
            while True:
                reply = loads(await ws.recv())
                if reply.get("type") == "entry" and reply.get("sender") == "agent":
                    break
                if reply.get("type") == "error":
                    raise RuntimeError(f"server refused a user message: {reply}")
            window.record(clock() - sent)

    workers = [asyncio.create_task(ping_pong(user)) for user in users]
    try:
        result = await measure(
            window,
            warmup=args.warmup,
            duration=args.duration,
            server=server,
            label=f"switchover, {args.users} sessions",
            workers=workers + answering,
        )
    finally:
        await cancel_all(workers + answering)
        await asyncio.gather(
            *(u.ws.close() for u in users), *(a.ws.close() for a in agents), return_exceptions=True
        )
    result["sessions"] = args.users
    result["agents"] = len(agents)
    result["connections"] = args.users + len(agents)
    result["setup_seconds"] = round(setup_seconds, 2)
    # A round trip is two routed messages: the user's to the agent, the agent's to the user.
    result["messages_per_s"] = 2 * result["round_trips_per_s"]
    return result


# --- idle connections -------------------------------------------------------------------


async def run_idle(args: argparse.Namespace, server: psutil.Process | None) -> dict[str, Any]:
    """Open ``count`` connections, hold them while memory is read, then reconnect them all.

    ``bare``: a plain WebSocket handshake. ``user``: handshake plus a user's hello (a new
    conversation); the reconnect then resumes each conversation with its token.
    """
    await asyncio.sleep(args.warmup)
    before = sample(server)
    open_conns: list[ClientConnection] = []
    users: list[User] = []

    async def open_bare() -> None:
        open_conns.append(await open_client(args.url))

    async def open_user() -> None:
        ws = await open_client(args.url)
        welcome = await hello(ws, {"role": "user", "bot_id": args.bot_id})
        users.append(User(ws, welcome["conversation_id"], welcome["resume_token"]))
        open_conns.append(ws)

    job = open_bare if args.kind == "bare" else open_user
    reporter = asyncio.create_task(report_count(lambda: len(open_conns), args.count, "opening"))
    started = time.monotonic()
    await bounded(args.concurrency, [job] * args.count)
    open_seconds = time.monotonic() - started
    reporter.cancel()
    await asyncio.sleep(args.settle)
    held = sample(server)
    result: dict[str, Any] = {
        "kind": args.kind,
        "count": args.count,
        "open_seconds": round(open_seconds, 3),
        "opens_per_s": args.count / open_seconds,
        "open_client_cpu_fraction": (held.own - before.own) / open_seconds,
    }
    if before.server is not None and held.server is not None:
        result["open_server_cpu_fraction"] = (held.server - before.server) / open_seconds
        result["server_rss_before"] = before.server_rss
        result["server_rss_held"] = held.server_rss
        assert held.server_rss is not None and before.server_rss is not None
        result["rss_per_connection"] = (held.server_rss - before.server_rss) / args.count

    await bounded(args.concurrency, [ws.close for ws in open_conns])
    if args.kind == "user":
        await asyncio.sleep(args.settle)
        resumed: list[ClientConnection] = []

        async def resume(user: User) -> None:
            ws = await open_client(args.url)
            await hello(
                ws, {"role": "user", "resume_token": user.resume_token, "last_seq": user.last_seq}
            )
            resumed.append(ws)

        reporter = asyncio.create_task(report_count(lambda: len(resumed), args.count, "resuming"))
        start = sample(server)
        await bounded(args.concurrency, [lambda u=u: resume(u) for u in users])  # type: ignore[misc]
        end = sample(server)
        reporter.cancel()
        seconds = end.wall - start.wall
        result["resume_seconds"] = round(seconds, 3)
        result["resumes_per_s"] = args.count / seconds
        result["resume_client_cpu_fraction"] = (end.own - start.own) / seconds
        if start.server is not None and end.server is not None:
            result["resume_server_cpu_fraction"] = (end.server - start.server) / seconds
        await bounded(args.concurrency, [ws.close for ws in resumed])
    return result


async def report_count(count: Callable[[], int], total: int, label: str) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        done = count()
        elapsed = time.monotonic() - started
        progress(label=label, done=done, of=total, rate=round(done / elapsed))


# --- entry point ------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["echo", "sessions", "idle"])
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT")
    parser.add_argument("--server-pid", type=int, help="read this process's CPU and memory")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=50, help="connections opened at once")
    parser.add_argument("--connections", type=int, default=100, help="echo: connections")
    parser.add_argument("--users", type=int, default=100, help="sessions: live sessions")
    parser.add_argument("--agent-tokens", default="", help="sessions: comma-separated tokens")
    parser.add_argument("--bot-id", default="demo")
    parser.add_argument("--setup-timeout", type=float, default=30.0)
    parser.add_argument("--kind", choices=["bare", "user"], default="bare", help="idle: what")
    parser.add_argument("--count", type=int, default=10_000, help="idle: connections")
    parser.add_argument("--settle", type=float, default=1.0, help="idle: pause before reading")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    raise_fd_limit()
    server = psutil.Process(args.server_pid) if args.server_pid else None
    run = {"echo": run_echo, "sessions": run_sessions, "idle": run_idle}[args.workload]
    result = asyncio.run(run(args, server))
    result["workload"] = args.workload
    result["client_pid"] = os.getpid()
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
