"""The server as it ships against bare echo servers, with the compiled load generator.

In one run, for each number of sessions (100 and 1,000 by default) and each repeat, four
servers are started in turn pinned to CPU 0, each loaded by ``bench/loadgen`` (Go) pinned to
CPU 1:

* the bare trio-websocket echo (``baseline_echo.py``): N connections, back-to-back round trips;
  every ratio is read against it;
* the bare ``websockets`` asyncio echo (``baseline_echo.py --impl websockets``), same load;
* ``switchover serve`` with the memory store, N users and ceil(N/100) agents in ping-pong;
* ``switchover serve`` with SQLite (the default: an ack means durable), same load.

A routed message (one frame in, one frame out to its recipient) is read against one echo
round trip. Prints the table (medians of the repeats: routed msg/s, server CPU µs/msg from
/proc, ratio to the trio-websocket echo, the load generator's CPU share) and the machine's
load average, and writes ``bench/results/e2e.json``.

    .venv/bin/python bench/e2e.py                      # 100 and 1,000 sessions, 3 repeats
    .venv/bin/python bench/e2e.py --sizes 100 --repeat 1 --duration 3   # a quick look

The load generator is built here with Debian's Go and gorilla/websocket (installed with
apt-get when missing and running as root), into a temporary directory, with no module
download.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import servers

RESULTS = servers.BENCH / "results"
GOPATH = "/usr/share/gocode"
GORILLA = Path(GOPATH) / "src/github.com/gorilla/websocket"
PACKAGES = ["golang-go", "golang-github-gorilla-websocket-dev"]

#: The servers of the table, in the order they run and print.
KINDS = ("trio-websocket echo", "websockets echo", "switchover memory", "switchover sqlite")


def ensure_go() -> None:
    """Install Debian's Go and gorilla/websocket when either is missing (as root only)."""
    if shutil.which("go") and GORILLA.is_dir():
        return
    if os.geteuid() != 0:
        raise SystemExit(f"the load generator needs: apt-get install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, env=env)


def build_loadgen(workdir: Path) -> Path:
    """Build bench/loadgen into ``workdir`` from Debian's GOPATH: nothing is downloaded."""
    ensure_go()
    binary = workdir / "loadgen"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": GOPATH,
        "GOFLAGS": "",
        "GOCACHE": str(workdir / "gocache"),
        "CGO_ENABLED": "0",
    }
    subprocess.run(
        ["go", "build", "-o", str(binary), "./bench/loadgen"], check=True, env=env, cwd=servers.ROOT
    )
    return binary


def run_loadgen(
    binary: Path, workload: str, url: str, pid: int, *options: str, timeout: float
) -> dict[str, Any]:
    """Run the Go load generator pinned to the client CPU; relay progress, return its result."""
    # One core of its own: one OS thread running Go code is all it can use.
    env = {**os.environ, "GOMAXPROCS": "1"}
    command = servers.pinned(
        servers.CLIENT_CPU,
        [str(binary), workload, "-url", url, "-server-pid", str(pid), *options],
    )
    return servers.run_load_generator(command, timeout=timeout, env=env)


def per_message(result: dict[str, Any]) -> dict[str, Any]:
    seconds = result.get("server_cpu_seconds")
    handled = result["messages_per_s"] * result["seconds"]
    result["server_cpu_us_per_message"] = seconds / handled * 1e6 if seconds and handled else None
    main_thread = result.get("server_main_thread_cpu_seconds")
    if seconds and handled and main_thread is not None:
        # Worker threads: for Switchover with SQLite, the writer (and readers).
        result["server_threads_us_per_message"] = (seconds - main_thread) / handled * 1e6
    return result


def one_run(
    args: argparse.Namespace, binary: Path, workdir: Path, sessions: int
) -> dict[str, dict[str, Any]]:
    """The four servers in turn under the same load; the machine's load average beside each."""
    timing = ["-duration", f"{args.duration}s", "-warmup", f"{args.warmup}s"]
    budget = args.duration + args.warmup + 180
    agents = max(1, math.ceil(sessions / 100))
    results: dict[str, dict[str, Any]] = {}
    starts: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "trio-websocket echo": lambda: servers.bare_echo(workdir, "trio-websocket"),
        "websockets echo": lambda: servers.bare_echo(workdir, "websockets"),
        "switchover memory": lambda: servers.switchover(
            workdir, agents=agents, capacity=100, store="memory"
        ),
        "switchover sqlite": lambda: servers.switchover(
            workdir, agents=agents, capacity=100, store="sqlite"
        ),
    }
    for kind in args.kinds:
        with starts[kind]() as started:
            if kind.endswith("echo"):
                server = started
                options = ["-connections", str(sessions)]
                workload = "echo"
            else:
                server = started.server
                options = ["-users", str(sessions), "-agent-tokens", ",".join(started.agent_tokens)]
                workload = "sessions"
            result = run_loadgen(
                binary, workload, server.url, server.pid, *options, *timing, timeout=budget
            )
        result["load_average_1m"] = os.getloadavg()[0]
        results[kind] = per_message(result)
    base = results.get(KINDS[0])
    for result in results.values():
        if base is not None:
            result["ratio"] = result["messages_per_s"] / base["messages_per_s"]
            ours_us, base_us = (
                result["server_cpu_us_per_message"],
                base["server_cpu_us_per_message"],
            )
            result["cpu_ratio"] = base_us / ours_us if ours_us and base_us else None
    sqlite, memory = results.get("switchover sqlite"), results.get("switchover memory")
    if sqlite and memory:
        sqlite["vs_memory"] = sqlite["messages_per_s"] / memory["messages_per_s"]
        sqlite["vs_memory_by_cpu"] = (
            memory["server_cpu_us_per_message"] / sqlite["server_cpu_us_per_message"]
        )
    return results


def hello_run(args: argparse.Namespace, binary: Path, workdir: Path) -> dict[str, dict[str, Any]]:
    """Connect-close against the bare trio-websocket echo, connect-hello-close against
    Switchover (each hello opens a conversation), then connect-resume-close (a returning
    user's hello with its resume token, for conversations opened beforehand, untimed), the
    same count and concurrency."""
    options = ["-count", str(args.hellos), "-concurrency", str(args.hello_concurrency)]
    budget = 600.0
    results: dict[str, dict[str, Any]] = {}
    with servers.bare_echo(workdir, "trio-websocket") as echo:
        results["trio-websocket handshakes"] = run_loadgen(
            binary, "connect", echo.url, echo.pid, *options, timeout=budget
        )
        results["trio-websocket handshakes"]["load_average_1m"] = os.getloadavg()[0]
    for store in ("memory", "sqlite"):
        with servers.switchover(workdir, store=store) as deployment:
            server = deployment.server
            results[f"switchover {store} hellos"] = run_loadgen(
                binary, "connect", server.url, server.pid, "-hello", *options, timeout=budget
            )
            results[f"switchover {store} hellos"]["load_average_1m"] = os.getloadavg()[0]
            results[f"switchover {store} resumes"] = run_loadgen(
                binary, "connect", server.url, server.pid, "-resume", *options, timeout=budget
            )
            results[f"switchover {store} resumes"]["load_average_1m"] = os.getloadavg()[0]
    base = results["trio-websocket handshakes"]
    for result in results.values():
        result["ratio"] = result["per_s"] / base["per_s"]
        ours, bare = (
            result.get("server_cpu_us_per_connection"),
            base.get("server_cpu_us_per_connection"),
        )
        result["cpu_ratio"] = bare / ours if ours and bare else None
    return results


def hello_table(runs: list[dict[str, dict[str, Any]]]) -> str:
    lines = [
        "\nConnections: connect-close (bare) against connect-hello-close and"
        f" connect-resume-close (ours), medians of {len(runs)}",
        "| server | per s | server CPU µs/connection | vs bare handshakes | by CPU "
        "| load generator CPU | load avg 1m |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in runs[0]:
        of_kind = [run[kind] for run in runs]
        lines.append(
            f"| {kind} | {median_of(of_kind, 'per_s') or 0:,.0f} "
            f"| {median_of(of_kind, 'server_cpu_us_per_connection') or 0:.0f} "
            f"| **{median_of(of_kind, 'ratio') or 0:.2f}x** "
            f"| {median_of(of_kind, 'cpu_ratio') or 0:.2f}x "
            f"| {median_of(of_kind, 'client_cpu_fraction') or 0:.0%} "
            f"| {median_of(of_kind, 'load_average_1m') or 0:.2f} |"
        )
    return "\n".join(lines)


def fsync_latency(directory: Path, rounds: int = 100) -> dict[str, float]:
    """What one fsync of a small append costs on this disk now: at low concurrency a durable
    acknowledgement waits for one, whatever the CPU does."""
    path = directory / "fsync-probe"
    took = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(rounds):
            os.write(fd, b"\0" * 16384)
            start = time.perf_counter()
            os.fsync(fd)
            took.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return {
        "p50_ms": took[len(took) // 2] * 1e3,
        "p90_ms": took[int(len(took) * 0.9)] * 1e3,
        "max_ms": took[-1] * 1e3,
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, dict[str, Any]]], kinds: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind in kinds:
        of_kind = [run[kind] for run in runs if kind in run]
        summary[kind] = {
            key: median_of(of_kind, key)
            for key in (
                "messages_per_s",
                "server_cpu_us_per_message",
                "server_threads_us_per_message",
                "ratio",
                "cpu_ratio",
                "client_cpu_fraction",
                "server_cpu_fraction",
                "vs_memory",
                "vs_memory_by_cpu",
                "load_average_1m",
            )
        }
        summary[kind]["ratios_of_all_runs"] = [round(r.get("ratio") or 0, 3) for r in of_kind]
        summary[kind]["p99_ms"] = median_of([r["latency_ms"] for r in of_kind], "p99")
    return summary


def ratio(value: float | None) -> str:
    """A ratio as printed: "-" where the trio-websocket echo was not run."""
    return "-" if value is None else f"{value:.2f}x"


def table(sessions: int, summary: dict[str, Any]) -> str:
    lines = [
        f"\n{sessions} live sessions (echo: {sessions} connections), medians",
        "| server | routed msg/s | server CPU µs/msg | vs bare trio-websocket echo "
        "| by CPU per msg | of it in worker threads | server CPU | load generator CPU | p99 ms "
        "| load avg 1m |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in summary.items():
        lines.append(
            f"| {kind} | {s['messages_per_s'] or 0:,.0f} "
            f"| {s['server_cpu_us_per_message'] or 0:.0f} "
            f"| **{ratio(s['ratio'])}** | {ratio(s['cpu_ratio'])} "
            f"| {s['server_threads_us_per_message'] or 0:.0f} µs "
            f"| {s['server_cpu_fraction'] or 0:.0%} | {s['client_cpu_fraction'] or 0:.0%} "
            f"| {s['p99_ms'] or 0:.2f} | {s['load_average_1m'] or 0:.2f} |"
        )
    sqlite = summary.get("switchover sqlite", {})
    if sqlite.get("vs_memory") is not None:
        lines.append(
            f"\nSQLite / memory: {sqlite['vs_memory']:.2f}x by rate, "
            f"{sqlite['vs_memory_by_cpu']:.2f}x by CPU per message"
        )
    return "\n".join(lines)


def sizes_of(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=sizes_of, default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--kinds",
        type=lambda text: text.split(","),
        default=list(KINDS),
        help="comma-separated subset of: " + ", ".join(KINDS),
    )
    parser.add_argument(
        "--hellos", type=int, default=2000, help="connections per hello run (0: no hello runs)"
    )
    parser.add_argument("--hello-concurrency", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    args.kinds = [kind for kind in KINDS if kind in args.kinds]
    points: list[dict[str, Any]] = []
    hellos: list[dict[str, dict[str, Any]]] = []
    load_before = os.getloadavg()
    with servers.scratch() as workdir:
        binary = build_loadgen(workdir)
        fsync = fsync_latency(workdir)
        print(
            "fsync of a 16 KiB append here: p50 {p50_ms:.2f} ms, p90 {p90_ms:.2f} ms, "
            "max {max_ms:.1f} ms".format(**fsync),
            flush=True,
        )
        for sessions in args.sizes:
            runs = []
            for repeat in range(args.repeat):
                print(f"{sessions} sessions, run {repeat + 1} of {args.repeat}", file=sys.stderr)
                runs.append(one_run(args, binary, workdir, sessions))
            summary = summarise(runs, args.kinds)
            print(table(sessions, summary), flush=True)
            points.append({"sessions": sessions, "summary": summary, "runs": runs})
        if args.hellos > 0:
            for repeat in range(args.repeat):
                print(f"hellos, run {repeat + 1} of {args.repeat}", file=sys.stderr)
                hellos.append(hello_run(args, binary, workdir))
            print(hello_table(hellos), flush=True)
    load_after = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}; "
        f"{os.cpu_count()} CPUs; server on CPU {servers.SERVER_CPU}, load generator on "
        f"CPU {servers.CLIENT_CPU}" + ("" if servers.can_pin() else " (NOT pinned)")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv),
                "load_average_before": load_before,
                "load_average_after": load_after,
                "duration": args.duration,
                "repeat": args.repeat,
                "fsync": fsync,
                "points": points,
                "hellos": hellos,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
