"""Live sessions over WebSocket: users and agents in ping-pong through ``switchover serve``.

For each concurrency N (1, 100 and 1,000 live sessions by default) this starts a real
``switchover serve`` (memory or SQLite store, a fresh data dir), connects M agents and N
users with the load generator in its own process, opens every session through the wire
protocol (hello, the human button, the desk's pickup), then measures ping-pong for a fixed
time: each user writes, its agent answers, the user writes again as soon as the answer
arrives. In the same run a bare trio-websocket echo server takes the same load (N
connections, back-to-back round trips), and our rate is printed over its rate.

A routed message is one frame in and one frame out of the server, the same work as one echo
round trip, so "routed messages per second" is read against the echo server's "round trips
per second". Latency is the user's round trip: user -> server -> agent -> server -> user.

    .venv/bin/python bench/live_sessions.py            # 10 s per point
    .venv/bin/python bench/live_sessions.py --quick    # 3 s per point
    .venv/bin/python bench/live_sessions.py --store sqlite --sizes 100

Writes bench/results/live_sessions.json and bench/results/live_sessions.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import servers

RESULTS = servers.BENCH / "results"


def agents_for(sessions: int, per_agent: int) -> int:
    return max(1, math.ceil(sessions / per_agent))


def measure_point(args: argparse.Namespace, workdir: Path, sessions: int) -> dict[str, Any]:
    timing = ["--duration", str(args.duration), "--warmup", str(args.warmup)]
    budget = args.duration + args.warmup + 120
    with servers.bare_echo(workdir) as echo:
        bare = servers.load(
            "echo",
            echo.url,
            echo.pid,
            "--connections",
            str(sessions),
            *timing,
            timeout=budget,
        )
    agents = agents_for(sessions, args.per_agent)
    with servers.switchover(
        workdir, agents=agents, capacity=args.per_agent, store=args.store, listener=args.listener
    ) as deployment:
        ours = servers.load(
            "sessions",
            deployment.server.url,
            deployment.server.pid,
            "--users",
            str(sessions),
            "--agent-tokens",
            ",".join(deployment.agent_tokens),
            *timing,
            timeout=budget + 120,
        )
    for result in (bare, ours):
        seconds = result.get("server_cpu_seconds")
        handled = result["messages_per_s"] * result["seconds"]
        result["server_cpu_us_per_message"] = seconds / handled * 1e6 if seconds else None
    ours_us, bare_us = ours["server_cpu_us_per_message"], bare["server_cpu_us_per_message"]
    return {
        "sessions": sessions,
        "agents": agents,
        "bare": bare,
        "ours": ours,
        "ratio": ours["messages_per_s"] / bare["messages_per_s"],
        # On a shared machine the server may not get its whole core; CPU time per message
        # does not depend on that, so this ratio is what the throughput ratio would be with
        # both servers saturating a core of their own.
        "cpu_ratio": bare_us / ours_us if ours_us and bare_us else None,
    }


def median_point(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose ratio is the median: its figures are kept together, not mixed."""
    ordered = sorted(runs, key=lambda r: r["ratio"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["ratios_of_all_runs"] = [round(r["ratio"], 3) for r in runs]
    return chosen


def row(point: dict[str, Any]) -> str:
    ours, bare = point["ours"], point["bare"]
    lat = ours["latency_ms"]
    blat = bare["latency_ms"]
    return (
        f"| {point['sessions']:>5} | {point['agents']:>3} | {ours['messages_per_s']:>9,.0f} "
        f"| {lat['p50']:6.2f} | {lat['p99']:7.2f} | {lat['max']:7.1f} "
        f"| {ours['server_cpu_us_per_message'] or 0:6.0f} | {ours['server_cpu_fraction']:4.0%} "
        f"| {ours['client_cpu_fraction']:4.0%} "
        f"| {bare['messages_per_s']:>9,.0f} | {blat['p99']:7.2f} "
        f"| {bare['server_cpu_us_per_message'] or 0:6.0f} | {bare['client_cpu_fraction']:4.0%} "
        f"| **{point['ratio']:.2f}x** | {point['cpu_ratio'] or 0:.2f}x |"
    )


HEADER = (
    "| sessions | agents | routed msg/s | p50 ms | p99 ms | max ms | server us/msg | server CPU "
    "| client CPU | bare echo rt/s | bare p99 ms | bare us/rt | bare client CPU | ours / bare "
    "| by CPU per msg |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def chart(points: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p["sessions"] for p in points]
    fig, (left, right, cpu) = plt.subplots(1, 3, figsize=(15, 4.2))
    left.plot(sizes, [p["ours"]["messages_per_s"] for p in points], "o-", label="Switchover")
    left.plot(
        sizes, [p["bare"]["messages_per_s"] for p in points], "s--", label="bare trio-websocket"
    )
    left.set_xscale("log")
    left.set_xlabel("live sessions (connections for the bare server)")
    left.set_ylabel("routed messages/s (bare: echo round trips/s)")
    left.set_ylim(bottom=0)
    left.set_title("Throughput")
    left.grid(True, alpha=0.3)
    left.legend()
    right.plot(sizes, [p["ours"]["latency_ms"]["p99"] for p in points], "o-", label="Switchover")
    right.plot(
        sizes, [p["bare"]["latency_ms"]["p99"] for p in points], "s--", label="bare trio-websocket"
    )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("live sessions (connections for the bare server)")
    right.set_ylabel("p99 round-trip latency (ms)")
    right.set_title("p99 latency")
    right.grid(True, alpha=0.3)
    right.legend()
    cpu.plot(
        sizes, [p["ours"]["server_cpu_us_per_message"] for p in points], "o-", label="Switchover"
    )
    cpu.plot(
        sizes,
        [p["bare"]["server_cpu_us_per_message"] for p in points],
        "s--",
        label="bare trio-websocket",
    )
    cpu.set_xscale("log")
    cpu.set_xlabel("live sessions (connections for the bare server)")
    cpu.set_ylabel("server CPU us per message (bare: per echo)")
    cpu.set_ylim(bottom=0)
    cpu.set_title("Server CPU per message (lower is better)")
    cpu.grid(True, alpha=0.3)
    cpu.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "pinned": servers.can_pin(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000", help="live sessions, comma-separated")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument(
        "--listener",
        choices=servers.LISTENERS,
        default=servers.LISTENERS[0],
        help="the server's [listeners] websocket setting (the baseline is always trio-websocket)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="3 s per point")
    parser.add_argument("--repeat", type=int, default=1, help="runs per point; median kept")
    parser.add_argument("--per-agent", type=int, default=100, help="chats each agent holds")
    parser.add_argument("--out", default=str(RESULTS / "live_sessions"), help="path stem")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the chart of a result file")
    args = parser.parse_args(argv)
    if args.replot:
        record = json.loads(Path(args.replot).read_text())
        chart(
            record["points"],
            Path(args.replot).with_suffix(".png"),
            f"Switchover ({record.get('listener', 'trio-websocket')} listener) vs bare "
            f"trio-websocket echo, store {record['store']}, {record['date'][:10]}, "
            "server on 1 core",
        )
        return
    if args.quick:
        args.duration = 3.0
    sizes = [int(s) for s in args.sizes.split(",")]
    started = datetime.datetime.now(datetime.UTC)
    points = []
    with servers.scratch() as workdir:
        for sessions in sizes:
            runs = []
            for attempt in range(args.repeat):
                print(f"-- {sessions} sessions, run {attempt + 1}/{args.repeat}", file=sys.stderr)
                runs.append(measure_point(args, workdir, sessions))
                print(row(runs[-1]), file=sys.stderr)
            points.append(median_point(runs))
    print(f"\nLive sessions, store {args.store}, {args.duration:g} s per point, {started:%Y-%m-%d}")
    print(HEADER)
    for point in points:
        print(row(point))
        for side in ("ours", "bare"):
            warning = servers.warn_if_client_bound(point[side])
            if warning:
                print(f"{warning} ({side}, {point['sessions']} sessions)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "live_sessions",
        "date": started.isoformat(timespec="seconds"),
        "store": args.store,
        "listener": args.listener,
        "duration": args.duration,
        "repeat": args.repeat,
        "machine": machine(),
        "points": points,
        "ratio_at_100": next((p["ratio"] for p in points if p["sessions"] == 100), None),
        "cpu_ratio_at_100": next((p["cpu_ratio"] for p in points if p["sessions"] == 100), None),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    chart(
        points,
        out.with_suffix(".png"),
        f"Switchover ({args.listener} listener) vs bare trio-websocket echo, "
        f"store {args.store}, {started:%Y-%m-%d}, server on 1 core",
    )
    ratios = [f"{p['sessions']}: {p['ratio']:.2f}x ({p['cpu_ratio'] or 0:.2f}x)" for p in points]
    middle = statistics.median(p["ratio"] for p in points)
    print(f"\nours / bare (by CPU per message): {', '.join(ratios)}  (median {middle:.2f}x)")
    busy = [p for p in points if p["ours"]["server_cpu_fraction"] < 0.85]
    if busy:
        print(
            "note: the server used less than 85 % of its core at "
            + ", ".join(str(p["sessions"]) for p in busy)
            + " sessions: something else shares the machine, or the load is latency-bound;"
            " read the CPU-per-message ratio."
        )
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
