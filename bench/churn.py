"""Memory under churn: many short conversations through the whole server (run by hand:
``python bench/churn.py``).

``switchover serve`` (SQLite by default) takes ``--conversations`` new users spread evenly
over ``--minutes``: each connects, says hello (a new conversation), sends one message to the
demo bot, waits for its ``ack`` and the bot's answer, and leaves. A conversation is then
idle, with no client and nothing owed, and leaves memory after ``[limits] hibernate_after``.
The server's RSS (``/proc/<pid>/status``) and its conversations in memory (``/metrics``) are
sampled every few seconds; at the end, a graceful stop (SIGINT to exit) is timed.

The baseline, in the same run with ``--baseline``, is the same server keeping conversations
for 600 s, the delay it had before ``hibernate_after`` was a limit. The client runs in this
process, pinned to CPU 1 (the server to CPU 0) where possible; its CPU share is reported.
Writes ``bench/results/churn.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the standard library's ``http``: import from the repository.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from websockets.asyncio.client import connect  # noqa: E402

from bench.restart import compile_bytecode, cpu_seconds, rss_kib  # noqa: E402
from bench.servers import (  # noqa: E402
    CLIENT_CPU,
    HOST,
    PYTHON,
    ROOT,
    SERVER_CPU,
    can_pin,
    default_interrupt,
    free_port,
    pinned,
    scratch,
    write_config,
)

RESULTS = _BENCH / "results" / "churn.json"
SAMPLE_EVERY = 5.0


def active_conversations(port: int) -> int | None:
    """``switchover_conversations_active`` from ``/metrics`` (a raw request)."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as conn:
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    found = re.search(rb"^switchover_conversations_active (\d+)", b"".join(chunks), re.M)
    return int(found.group(1)) if found else None


async def one_user(url: str, n: int, timeout: float) -> None:
    async with asyncio.timeout(timeout), connect(url) as ws:
        hello = {"type": "hello", "v": 1, "role": "user", "bot_id": "demo"}
        await ws.send(json.dumps({**hello, "metadata": {"name": f"Churn {n}"}}))
        welcome = json.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"refused: {welcome}")
        message = {"type": "message", "id": "m1", "content_type": "text"}
        await ws.send(json.dumps({**message, "content": {"text": f"hello {n}"}}))
        acked = answered = False
        while not (acked and answered):
            frame = json.loads(await ws.recv())
            acked = acked or frame.get("type") == "ack"
            answered = answered or (frame.get("type") == "entry" and frame.get("sender") == "bot")


async def drive(url: str, http_port: int, pid: int, count: int, seconds: float) -> dict[str, Any]:
    """Start users on schedule (at most 200 at once); sample the server meanwhile."""
    interval = seconds / count
    started = time.monotonic()
    client_cpu = time.process_time()
    limit = asyncio.Semaphore(200)
    failures = 0
    samples: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    next_sample = started

    async def run_one(n: int) -> None:
        nonlocal failures
        try:
            await one_user(url, n, 30.0)
        except Exception:
            failures += 1
        finally:
            limit.release()

    for n in range(count):
        due = started + n * interval
        now = time.monotonic()
        if now >= next_sample:
            active = await asyncio.to_thread(active_conversations, http_port)
            samples.append(
                {"t": now - started, "users": n, "rss_mib": rss_kib(pid) / 1024, "active": active}
            )
            next_sample += SAMPLE_EVERY
        if due > now:
            await asyncio.sleep(due - now)
        await limit.acquire()
        task = asyncio.create_task(run_one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    return {
        "seconds": elapsed,
        "users_per_second": count / elapsed,
        "failures": failures,
        "samples": samples,
        "client_cpu_share": (time.process_time() - client_cpu) / elapsed,
    }


def one_server(
    work: Path, label: str, hibernate_after: float, count: int, seconds: float
) -> dict[str, Any]:
    data_dir = work / f"data-{label}"
    data_dir.mkdir()
    ws, http = free_port(), free_port()
    config = work / f"switchover-{label}.toml"
    write_config(config, agents=1, capacity=10, store="sqlite", data_dir=data_dir, ws=ws, http=http)
    text = config.read_text().replace(
        "[limits]\n", f"[limits]\nhibernate_after = {hibernate_after}\n"
    )
    config.write_text(text)
    log = work / f"switchover-{label}.log"
    command = [PYTHON, "-m", "transport.cli", "serve", "--config", str(config)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(SERVER_CPU, command),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=default_interrupt,
        )
    try:
        deadline = time.monotonic() + 60
        while active_conversations(http) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        rss_before = rss_kib(process.pid) / 1024
        cpu_before = cpu_seconds(process.pid)
        loads = [os.getloadavg()[0]]
        result = asyncio.run(drive(f"ws://{HOST}:{ws}", http, process.pid, count, seconds))
        loads.append(os.getloadavg()[0])
        rss_end = rss_kib(process.pid) / 1024
        active_end = active_conversations(http)
        cpu = cpu_seconds(process.pid) - cpu_before
        quiet: dict[str, Any] = {}
        if hibernate_after <= 120:
            # Once quiet for the delay (and one wake-up), every conversation has left.
            time.sleep(hibernate_after + 5)
            quiet = {
                "active_after_quiet": active_conversations(http),
                "rss_mib_after_quiet": rss_kib(process.pid) / 1024,
            }
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
        stop = time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    rss = [s["rss_mib"] for s in result["samples"]]
    return {
        "hibernate_after_s": hibernate_after,
        "conversations": count,
        "rss_mib_idle_server": rss_before,
        "rss_mib_max": max([*rss, rss_end]),
        "rss_mib_end": rss_end,
        "active_max": max((s["active"] or 0 for s in result["samples"]), default=0),
        "active_end": active_end,
        "graceful_stop_s": stop,
        "server_cpu_ms_per_conversation": cpu / count * 1000,
        **quiet,
        "load_average_1m": loads,
        **result,
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{report['conversations']:,} conversations over {report['minutes']} min "
        f"(one message each, then the user leaves), SQLite"
    )
    print(
        f"{'hibernate_after':>16}{'users/s':>9}{'failed':>8}{'max RSS MiB':>13}"
        f"{'end RSS MiB':>13}{'max in memory':>15}{'stop s':>8}{'client CPU':>12}{'load':>11}"
    )
    for run in report["runs"]:
        load = "-".join(f"{x:.1f}" for x in run["load_average_1m"])
        print(
            f"{run['hibernate_after_s']:>14.0f} s{run['users_per_second']:>9.0f}"
            f"{run['failures']:>8}{run['rss_mib_max']:>13.1f}{run['rss_mib_end']:>13.1f}"
            f"{run['active_max']:>15,}{run['graceful_stop_s']:>8.2f}"
            f"{run['client_cpu_share']:>11.0%}{load:>11}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--hibernate-after", type=float, default=30.0)
    parser.add_argument("--baseline", action="store_true", help="also with 600 s, same run")
    parser.add_argument("--quick", action="store_true", help="10,000 in one minute")
    args = parser.parse_args(argv)
    if args.quick:
        args.conversations, args.minutes = 10_000, 1.0
    compile_bytecode()
    if can_pin():
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    delays = [args.hibernate_after, *([600.0] if args.baseline else [])]
    runs = []
    with scratch() as work:
        for n, delay in enumerate(delays):
            run = one_server(work, f"run{n}", delay, args.conversations, args.minutes * 60)
            print(json.dumps({k: v for k, v in run.items() if k != "samples"}), file=sys.stderr)
            runs.append(run)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "conversations": args.conversations,
        "minutes": args.minutes,
        "runs": runs,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print_table(report)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
