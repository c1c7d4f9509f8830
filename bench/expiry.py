"""The expiry tail through the whole server: N sessions that expire at the same moment.

For each N (2,000 and 10,000 by default) and each store (SQLite, the default, and memory in the
same run, interleaved) this starts a real ``switchover serve`` pinned to one core, with a
connected bot (``adapter = "connected"``, so the bot's events travel over a WebSocket) and a
short ``session_timeout``, and a load generator pinned to the other core that

1. connects the bot (it acknowledges every event), ``ceil(N / 100)`` agents and one idle
   "pinger" connection;
2. opens N sessions through the wire protocol (user hello, the human button, the automatic
   pickup by an agent), so that N users, their agents and the bot all hold the sessions;
3. waits: nobody writes, and every session expires at its deadline;
4. records, per session, when the user's ``session_expired`` notice and the bot's
   ``LIVECHAT_SESSION_EXPIRED`` event arrive after the deadline, and the round trip of a
   ``ping`` sent every 5 ms on the pinger's connection, before and during the wave.

Opening 10,000 sessions takes tens of seconds, so their deadlines would be spread over that
long. To make them fall at one instant the server is started through this script
(``expiry.py serve``), which runs ``switchover serve`` unchanged except for one thing: between a
first and a second ``SIGUSR1`` the wall clock the lifecycle stamps entries with (``Clock.now``)
stands still at the moment of the first. Every session opened in between has the same last
activity, so the same deadline (its notice's ``at`` + ``session_timeout``). Timers, sockets and
the store run on real time throughout.

    .venv/bin/python bench/expiry.py                     # N = 2,000 and 10,000, 3 runs each
    .venv/bin/python bench/expiry.py --sizes 2000 --runs 1

Writes bench/results/expiry.json (``expiry-<sizes>.json`` for other ``--sizes``). Two variables
help find where the time goes: ``EXPIRY_TICKS=<file>`` writes, for the wave, the CPU time of
trio's thread per task function, the longest scheduler ticks and what ran in them, and the
garbage collector's pauses; ``EXPIRY_PROFILE=<file>`` writes a cProfile of the wave.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# bench/ holds an http.py: looked up last, it cannot hide the standard library's http.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH] + [str(_BENCH)]

import servers  # noqa: E402

RESULTS = servers.BENCH / "results"
BOT_TOKEN = "bench-bot-token-not-for-production"
PER_AGENT = 100
PING_EVERY = 0.005


# --- the server, with a wall clock that can stand still --------------------------------------


def serve(argv: list[str]) -> int:
    """``switchover serve`` with ``Clock.now`` held still between two ``SIGUSR1`` (module doc)."""
    sys.path.insert(0, str(servers.ROOT))
    from actors.trio import clock
    from transport.cli import main

    real_now = clock.Clock.now
    held: list[float | None] = [None]
    phase = [0]

    def now(self: clock.Clock) -> float:
        value = real_now(self)
        if phase[0] == 1:
            if held[0] is None:
                held[0] = value
            return held[0]
        return value

    profile = os.environ.get("EXPIRY_PROFILE")
    profiler: Any = None
    if profile:
        # What the server does after the sessions are open: the wait and the wave.
        import cProfile

        profiler = cProfile.Profile()

    def toggle(signum: int, frame: object) -> None:
        phase[0] += 1
        if profiler is not None and phase[0] == 2:
            profiler.enable()
        if profiler is not None and phase[0] == 3:
            profiler.disable()

    clock.Clock.now = now  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, toggle)
    ticks_path = os.environ.get("EXPIRY_TICKS")
    ticks: Any = None
    if ticks_path:
        ticks = _tick_instrument(lambda: phase[0] == 2)
        import trio

        real_run = trio.run

        def run_with(*args: Any, **kwargs: Any) -> Any:
            kwargs["instruments"] = [*kwargs.get("instruments", ()), ticks]
            return real_run(*args, **kwargs)

        trio.run = run_with
    try:
        return main(argv)
    finally:
        if ticks is not None:
            Path(ticks_path).write_text(json.dumps(ticks.summary(), indent=1))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)


def _tick_instrument(active: Any) -> Any:
    """Where the server's time goes once the sessions are open: per task function, the time
    of its steps and its longest step, and the scheduler's longest run between two looks at
    the sockets (what a ping waits behind)."""
    import trio

    perf = time.thread_time  # CPU time of trio's thread: a busy machine does not inflate it

    import gc

    class Ticks(trio.abc.Instrument):
        def __init__(self) -> None:
            self.gc: list[float] = []  # pause, generation
            self.gc_gens = [0, 0, 0]
            self.gc_started = 0.0
            gc.callbacks.append(self.collecting)
            self.steps: dict[str, list[float]] = {}
            self.tick_started = 0.0
            self.ticks: list[float] = []
            self.step_started = 0.0
            self.current: dict[str, list[float]] = {}
            self.worst: list[tuple[float, dict[str, list[float]]]] = []

        def collecting(self, phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self.gc_started = perf()
            elif active():
                self.gc.append(perf() - self.gc_started)
                self.gc_gens[info["generation"]] += 1

        def before_task_step(self, task: Any) -> None:
            self.step_started = perf()

        def after_task_step(self, task: Any) -> None:
            if not active():
                return
            spent = perf() - self.step_started
            code = getattr(task.coro, "cr_code", None)
            key = code.co_qualname if code is not None else task.name
            entry = self.steps.setdefault(key, [0.0, 0.0, 0.0])
            entry[0] += spent
            entry[1] = max(entry[1], spent)
            entry[2] += 1
            now_tick = self.current.setdefault(key, [0.0, 0])
            now_tick[0] += spent
            now_tick[1] += 1

        def after_io_wait(self, timeout: float) -> None:
            self.tick_started = perf()
            self.current = {}

        def before_io_wait(self, timeout: float) -> None:
            if active() and self.tick_started:
                spent = perf() - self.tick_started
                self.ticks.append(spent)
                if spent > 0.02:
                    self.worst.append((spent, self.current))
                    self.worst.sort(key=lambda w: -w[0])
                    del self.worst[5:]

        def summary(self) -> dict[str, Any]:
            ticks = sorted(self.ticks)
            top = sorted(self.steps.items(), key=lambda kv: -kv[1][0])[:25]
            return {
                "ticks": len(ticks),
                "tick_max_ms": ticks[-1] * 1e3 if ticks else 0,
                "tick_p99_ms": ticks[int(0.99 * (len(ticks) - 1))] * 1e3 if ticks else 0,
                "ticks_over_20ms": sum(1 for t in ticks if t > 0.02),
                "busy_s": sum(ticks),
                "gc_s": sum(self.gc),
                "gc_max_ms": max(self.gc, default=0) * 1e3,
                "gc_by_generation": self.gc_gens,
                "worst_ticks": [
                    {
                        "ms": w * 1e3,
                        "steps": {
                            k: [round(v[0] * 1e3, 1), v[1]]
                            for k, v in sorted(d.items(), key=lambda kv: -kv[1][0])
                        },
                    }
                    for w, d in self.worst
                ],
                "steps": {
                    k: {"total_ms": v[0] * 1e3, "max_ms": v[1] * 1e3, "count": v[2]} for k, v in top
                },
            }

    return Ticks()


def write_config(
    path: Path, *, agents: int, store: str, data_dir: Path, ws: int, http: int, timeout: float
) -> list[str]:
    agent_config, tokens = servers.agent_lines(agents, PER_AGENT, "relay")
    lines = [
        *servers.server_lines(
            default_bot="relay", store=store, data_dir=data_dir, ws=ws, http=http
        ),
        "[bots.relay]",
        'adapter = "connected"',
        f'token = "{BOT_TOKEN}"',
        "[bots.relay.options]",
        "connect_wait = 600",
        "ack_timeout = 600",
        "[bots.relay.settings]",
        f"agent_capacity = {PER_AGENT}",
        f"session_timeout = {timeout}",
        *agent_config,
    ]
    path.write_text("\n".join(lines) + "\n")
    return tokens


@contextlib.contextmanager
def server(
    workdir: Path, *, agents: int, store: str, timeout: float
) -> Iterator[tuple[servers.Server, list[str]]]:
    ws, http = servers.free_port(), servers.free_port()
    data_dir = workdir / f"data-{ws}"
    data_dir.mkdir()
    config = workdir / f"switchover-{ws}.toml"
    tokens = write_config(
        config, agents=agents, store=store, data_dir=data_dir, ws=ws, http=http, timeout=timeout
    )
    command = [
        servers.PYTHON,
        str(Path(__file__).resolve()),
        "serve",
        "serve",
        "--config",
        str(config),
    ]
    with servers.running(command, ws, workdir / f"switchover-{ws}.log") as running:
        yield running, tokens


# --- the load generator (asyncio, its own process and core) ---------------------------------


async def run_client(args: argparse.Namespace) -> dict[str, Any]:
    import loadgen
    import psutil  # type: ignore[import-untyped]

    url, n = args.url, args.sessions
    server_process = psutil.Process(args.server_pid)
    loop_started = time.monotonic()
    bot_ws = await loadgen.open_client(url)
    await loadgen.hello(bot_ws, {"role": "bot", "token": BOT_TOKEN})
    bot_expired: list[float] = []
    user_expired: list[float] = []
    complete = asyncio.Event()  # every notice and every bot event has come

    def check_complete() -> None:
        if len(user_expired) >= n and len(bot_expired) >= n:
            complete.set()

    async def bot() -> None:
        acks = 0
        async for raw in bot_ws:
            frame = json.loads(raw)
            if frame.get("type") != "event":
                continue
            if "LIVECHAT_SESSION_EXPIRED" in raw:
                bot_expired.append(time.time())
                check_complete()
            acks += 1
            await bot_ws.send(
                json.dumps({"type": "event_ack", "id": f"k{acks}", "event_id": frame["event_id"]})
            )

    tasks = [asyncio.create_task(bot())]
    agents = [await loadgen.open_agent(url, token) for token in args.agent_tokens.split(",")]

    async def drain(ws: Any) -> None:
        async for _ in ws:
            pass

    tasks += [asyncio.create_task(drain(agent.ws)) for agent in agents]
    pinger = await loadgen.open_client(url)
    await loadgen.hello(pinger, {"role": "user", "bot_id": "relay"})

    # Freeze the server's wall clock: every session opened from here on has the same stamp.
    os.kill(args.server_pid, signal.SIGUSR1)
    users: list[Any] = []
    stamps: list[float] = []

    async def open_user(index: int) -> None:
        ws = await loadgen.open_client(url)
        await loadgen.hello(
            ws, {"role": "user", "bot_id": "relay", "metadata": {"name": f"u{index}"}}
        )
        await ws.send(
            json.dumps(
                {
                    "type": "message",
                    "content_type": "payload",
                    "content": {"payload": loadgen.SESSION_START},
                }
            )
        )
        started = await loadgen.await_frame(
            ws,
            lambda f: (
                f.get("type") == "entry"
                and (f.get("content") or {}).get("code") == "session_started"
            ),
            args.setup_timeout,
        )
        stamps.append(float(started["at"]))
        await loadgen.await_frame(ws, loadgen.is_agent_joined, args.setup_timeout)
        users.append(ws)
        if len(users) % 500 == 0:
            loadgen.progress(label="opening", sessions=len(users), of=n)

    fill_started = time.time()
    await loadgen.bounded(args.concurrency, [lambda i=i: open_user(i) for i in range(n)])
    fill_seconds = time.time() - fill_started
    os.kill(args.server_pid, signal.SIGUSR1)  # the clock runs again
    if len(set(stamps)) != 1:
        raise RuntimeError(f"sessions were stamped at {len(set(stamps))} different times")
    deadline = stamps[0] + args.timeout
    if time.time() > deadline - 1.0:
        raise RuntimeError(
            f"opening {n} sessions took {fill_seconds:.1f} s: raise --timeout above it"
        )

    async def user(ws: Any) -> None:
        async for raw in ws:
            if "session_expired" in raw:
                user_expired.append(time.time())
                check_complete()
                return

    tasks += [asyncio.create_task(user(ws)) for ws in users]
    pings: list[tuple[float, float]] = []  # (sent, round trip)

    async def ping() -> None:
        count = 0
        while True:
            count += 1
            sent = time.time()
            started = time.perf_counter()
            await pinger.send(json.dumps({"type": "ping", "id": count}))
            while True:
                frame = json.loads(await pinger.recv())
                if frame.get("type") == "pong" and frame.get("id") == count:
                    break
            pings.append((sent, time.perf_counter() - started))
            await asyncio.sleep(PING_EVERY)

    # Ping for a while before the wave (the baseline), then through it.
    await asyncio.sleep(max(0.0, deadline - 3.0 - time.time()))
    tasks.append(asyncio.create_task(ping()))
    before = loadgen.sample(server_process)
    own_before = before.own
    budget = deadline + args.wave_budget
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), budget - time.time())
    # A second after the last one, for pings that fall just behind the wave.
    await asyncio.sleep(1.0)
    after = loadgen.sample(server_process)
    os.kill(args.server_pid, signal.SIGUSR1)  # the wave is over (ends the server's tick trace)
    await loadgen.cancel_all(tasks)
    await asyncio.gather(*(ws.close() for ws in [*users, pinger, bot_ws]), return_exceptions=True)
    await asyncio.gather(*(a.ws.close() for a in agents), return_exceptions=True)
    if len(user_expired) < n or len(bot_expired) < n:
        raise RuntimeError(
            f"only {len(user_expired)} users' notices and {len(bot_expired)} bot events of {n}"
        )

    def lateness(times: list[float]) -> dict[str, float]:
        late = sorted(t - deadline for t in times)
        return {
            "first_ms": late[0] * 1e3,
            "p50_ms": loadgen.percentile(late, 0.50) * 1e3,
            "p99_ms": loadgen.percentile(late, 0.99) * 1e3,
            "max_ms": late[-1] * 1e3,
        }

    wave_end = max(*user_expired, *bot_expired)
    calm = sorted(rtt for sent, rtt in pings if sent < deadline - 0.2)
    wave = sorted(rtt for sent, rtt in pings if deadline <= sent <= wave_end)
    return {
        "sessions": n,
        "fill_seconds": round(fill_seconds, 2),
        "user_notice": lateness(user_expired),
        "bot_event": lateness(bot_expired),
        "ping_calm_ms": {
            "count": len(calm),
            "p50": loadgen.percentile(calm, 0.5) * 1e3,
            "p99": loadgen.percentile(calm, 0.99) * 1e3,
        },
        "ping_wave_ms": {
            "count": len(wave),
            "p50": loadgen.percentile(wave, 0.5) * 1e3,
            "p99": loadgen.percentile(wave, 0.99) * 1e3,
            "max": (wave[-1] if wave else math.nan) * 1e3,
        },
        # From 3 s before the deadline to 1 s after the wave: the wave's share of the server.
        "server_cpu_seconds": after.server - before.server,
        "server_cpu_us_per_expiry": (after.server - before.server) / n * 1e6,
        "client_cpu_fraction": (after.own - own_before) / (after.wall - before.wall),
        "server_rss_bytes": after.server_rss,
        "client_seconds": round(time.monotonic() - loop_started, 1),
    }


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--agent-tokens", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--setup-timeout", type=float, default=60.0)
    parser.add_argument("--wave-budget", type=float, default=60.0)
    args = parser.parse_args(argv)
    import loadgen

    loadgen.raise_fd_limit()
    result = asyncio.run(run_client(args))
    print("result " + json.dumps(result), flush=True)


# --- the orchestrator -------------------------------------------------------------------------


def timeout_for(sessions: int) -> float:
    """Long enough to open every session first (about 50 a second on a heavily loaded
    machine); ``--timeout`` overrides it."""
    return 20.0 + sessions / 50


def one_run(workdir: Path, store: str, sessions: int, timeout: float) -> dict[str, Any]:
    agents = math.ceil(sessions / PER_AGENT)
    with server(workdir, agents=agents, store=store, timeout=timeout) as (running, tokens):
        command = servers.pinned(
            servers.CLIENT_CPU,
            [
                servers.PYTHON,
                str(Path(__file__).resolve()),
                "client",
                "--url",
                running.url,
                "--server-pid",
                str(running.pid),
                "--sessions",
                str(sessions),
                "--agent-tokens",
                ",".join(tokens),
                "--timeout",
                str(timeout),
            ],
        )
        load_before = os.getloadavg()[0]
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=servers.ROOT, timeout=timeout + 300
        )
        load_after = os.getloadavg()[0]
    for line in done.stdout.splitlines():
        if line.startswith("result "):
            result: dict[str, Any] = json.loads(line[len("result ") :])
            result["store"] = store
            result["load_average"] = [round(load_before, 2), round(load_after, 2)]
            return result
    raise RuntimeError(f"the load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def report(sessions: int, by_store: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [f"N = {sessions:,} ({len(by_store['sqlite'])} runs each, medians)"]
    rows = [
        ("user notice p50 late, ms", ("user_notice", "p50_ms")),
        ("user notice p99 late, ms", ("user_notice", "p99_ms")),
        ("user notice last, ms", ("user_notice", "max_ms")),
        ("bot event p50 late, ms", ("bot_event", "p50_ms")),
        ("bot event p99 late, ms", ("bot_event", "p99_ms")),
        ("ping p99 before the wave, ms", ("ping_calm_ms", "p99")),
        ("ping p99 during the wave, ms", ("ping_wave_ms", "p99")),
        ("ping max during the wave, ms", ("ping_wave_ms", "max")),
        ("server CPU per expiry, us", ("server_cpu_us_per_expiry",)),
        ("load generator CPU share", ("client_cpu_fraction",)),
        ("opening the sessions, s", ("fill_seconds",)),
    ]
    lines.append(f"  {'':32} {'sqlite':>10} {'memory':>10} {'ratio':>7}")
    for label, path in rows:
        sqlite = median_of(by_store["sqlite"], *path)
        memory = median_of(by_store["memory"], *path)
        ratio = sqlite / memory if memory else math.nan
        lines.append(f"  {label:32} {sqlite:10.2f} {memory:10.2f} {ratio:7.2f}")
    loads = [run["load_average"] for runs in by_store.values() for run in runs]
    lines.append(f"  machine load average (1 min) before/after each run: {loads}")
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        raise SystemExit(serve(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,10000", help="sessions per wave")
    parser.add_argument("--runs", type=int, default=3, help="runs of each store per size")
    parser.add_argument("--timeout", type=float, help="session_timeout (default from N)")
    parser.add_argument("--stores", default="sqlite,memory")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "pinned": servers.can_pin(),
        "sizes": {},
    }
    lines: list[str] = []
    with servers.scratch() as workdir:
        for sessions in [int(s) for s in args.sizes.split(",")]:
            timeout = args.timeout or timeout_for(sessions)
            by_store: dict[str, list[dict[str, Any]]] = {s: [] for s in args.stores.split(",")}
            for run in range(args.runs):
                for store in by_store:  # interleaved: sqlite, memory, sqlite, ...
                    result = one_run(workdir, store, sessions, timeout)
                    by_store[store].append(result)
                    print(
                        f"N={sessions} {store} run {run + 1}: users p50/p99 "
                        f"{result['user_notice']['p50_ms']:.0f}/"
                        f"{result['user_notice']['p99_ms']:.0f} ms, bot p99 "
                        f"{result['bot_event']['p99_ms']:.0f} ms, ping p99 "
                        f"{result['ping_calm_ms']['p99']:.1f} -> "
                        f"{result['ping_wave_ms']['p99']:.1f} ms, "
                        f"{result['server_cpu_us_per_expiry']:.0f} us/expiry, "
                        f"client {result['client_cpu_fraction']:.0%}, "
                        f"load {result['load_average']}",
                        file=sys.stderr,
                        flush=True,
                    )
            results["sizes"][str(sessions)] = by_store
            if "sqlite" in by_store and "memory" in by_store:
                lines += report(sessions, by_store)
    RESULTS.mkdir(exist_ok=True)
    name = (
        "expiry.json"
        if args.sizes == "2000,10000"
        else f"expiry-{args.sizes.replace(',', '-')}.json"
    )
    (RESULTS / name).write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
