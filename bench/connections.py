"""Idle connections: memory per connected user, and how fast users connect and resume.

Opens ``--count`` (10,000 by default) connections to a bare trio-websocket echo server and
then ``--count`` users to ``switchover serve`` (each says hello and gets a conversation),
holds them idle, and reads the server's resident memory before and after: the difference
over the count is the memory each connected idle user costs. Then every user disconnects
and comes back with its resume token. Handshakes per second (bare) are set against hellos
and resumes per second (ours), measured in the same run with the same client concurrency.

    .venv/bin/python bench/connections.py                 # 10,000 connections
    .venv/bin/python bench/connections.py --count 2000    # when the fd limit is lower
    .venv/bin/python bench/connections.py --count 2000 --idle-for 3

``--idle-for SECONDS``: the users stay silent that long before the server's memory is read,
and the server runs with ``[limits] hibernate_after`` = ``--hibernate-after`` (1 s by
default), so their conversations have left memory by then (without it: 1 s, and the server's
default of 30 s, so they are all still in memory). RSS rarely shrinks when objects are freed
(the allocator keeps its arenas): ``bench/idle_memory.py`` traces the Python heap instead.

Each process lifts its soft RLIMIT_NOFILE to the hard limit; if that still is too low for
the count, the count is scaled down to fit and the table says so.
Writes bench/results/connections.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import sys
from pathlib import Path
from typing import Any

import servers
from live_sessions import machine

RESULTS = servers.BENCH / "results"
KIB = 1024


def fitting_count(wanted: int) -> int:
    """Each side holds one fd per connection plus a few hundred of its own."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = hard - 500
    if wanted > room:
        print(f"fd limit {hard}: scaling down from {wanted} to {room} connections", file=sys.stderr)
        return room
    return wanted


def cpu_us(result: dict[str, Any], phase: str, count: int) -> float:
    """Server CPU microseconds per connection opened (or resumed) in ``phase``."""
    fraction = result[f"{phase}_server_cpu_fraction"]
    seconds = result[f"{phase}_seconds"]
    return float(fraction * seconds / count * 1e6)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50, help="connections opened at once")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument(
        "--listener",
        choices=servers.LISTENERS,
        default=servers.LISTENERS[0],
        help="the server's [listeners] websocket setting (the baseline is always trio-websocket)",
    )
    parser.add_argument(
        "--idle-for",
        type=float,
        default=None,
        help="seconds the users stay silent before the server's memory is read",
    )
    parser.add_argument(
        "--hibernate-after",
        type=float,
        default=1.0,
        help="the server's [limits] hibernate_after with --idle-for, seconds",
    )
    parser.add_argument("--out", default=str(RESULTS / "connections.json"))
    args = parser.parse_args(argv)
    count = fitting_count(args.count)
    started = datetime.datetime.now(datetime.UTC)
    options = ["--count", str(count), "--concurrency", str(args.concurrency)]
    with servers.scratch() as workdir:
        print(f"-- bare trio-websocket, {count} connections", file=sys.stderr)
        with servers.bare_echo(workdir) as echo:
            bare = servers.load("idle", echo.url, echo.pid, "--kind", "bare", *options, timeout=600)
        print(f"-- switchover ({args.store}), {count} users", file=sys.stderr)
        idle = [] if args.idle_for is None else ["--settle", str(args.idle_for)]
        with servers.switchover(
            workdir,
            store=args.store,
            listener=args.listener,
            hibernate_after=None if args.idle_for is None else args.hibernate_after,
        ) as deployment:
            ours = servers.load(
                "idle",
                deployment.server.url,
                deployment.server.pid,
                "--kind",
                "user",
                *options,
                *idle,
                timeout=900,
            )
    handshake = bare["opens_per_s"]
    bare_us = cpu_us(bare, "open", count)
    hello_us, resume_us = cpu_us(ours, "open", count), cpu_us(ours, "resume", count)
    summary = {
        "bare_server_cpu_us_per_handshake": bare_us,
        "ours_server_cpu_us_per_hello": hello_us,
        "ours_server_cpu_us_per_resume": resume_us,
        # What the rates would be with each server saturating a core of its own.
        "hello_cpu_ratio": bare_us / hello_us,
        "resume_cpu_ratio": bare_us / resume_us,
        "bare_kib_per_connection": bare["rss_per_connection"] / KIB,
        "ours_kib_per_user": ours["rss_per_connection"] / KIB,
        "bare_handshakes_per_s": handshake,
        "ours_hellos_per_s": ours["opens_per_s"],
        "ours_resumes_per_s": ours["resumes_per_s"],
        "hello_ratio": ours["opens_per_s"] / handshake,
        "resume_ratio": ours["resumes_per_s"] / handshake,
    }
    silent = "" if args.idle_for is None else f", silent {args.idle_for:g} s"
    print(f"\nIdle connections, {count} each, store {args.store}{silent}, {started:%Y-%m-%d}")
    print(
        "| server | KiB per idle connection | connects/s (vs bare) | server us each "
        "(vs bare) | server CPU | client CPU |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| bare trio-websocket (handshake) | {summary['bare_kib_per_connection']:.1f} "
        f"| {handshake:,.0f} | {bare_us:,.0f} | {bare['open_server_cpu_fraction']:.0%} "
        f"| {bare['open_client_cpu_fraction']:.0%} |"
    )
    print(
        f"| Switchover user (handshake + hello) | {summary['ours_kib_per_user']:.1f} "
        f"| {ours['opens_per_s']:,.0f} ({summary['hello_ratio']:.2f}x) "
        f"| {hello_us:,.0f} ({summary['hello_cpu_ratio']:.2f}x) "
        f"| {ours['open_server_cpu_fraction']:.0%} "
        f"| {ours['open_client_cpu_fraction']:.0%} |"
    )
    print(
        f"| Switchover user (handshake + resume) | - "
        f"| {ours['resumes_per_s']:,.0f} ({summary['resume_ratio']:.2f}x) "
        f"| {resume_us:,.0f} ({summary['resume_cpu_ratio']:.2f}x) "
        f"| {ours['resume_server_cpu_fraction']:.0%} "
        f"| {ours['resume_client_cpu_fraction']:.0%} |"
    )
    for result, key in (
        (bare, "open_client_cpu_fraction"),
        (ours, "open_client_cpu_fraction"),
        (ours, "resume_client_cpu_fraction"),
    ):
        warning = servers.warn_if_client_bound(result, key)
        if warning:
            print(f"{warning} ({result['kind']}, {key})")
    record = {
        "benchmark": "connections",
        "date": started.isoformat(timespec="seconds"),
        "store": args.store,
        "listener": args.listener,
        "count": count,
        "concurrency": args.concurrency,
        "idle_for": args.idle_for,
        "hibernate_after": None if args.idle_for is None else args.hibernate_after,
        "machine": machine(),
        "bare": bare,
        "ours": ours,
        "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
