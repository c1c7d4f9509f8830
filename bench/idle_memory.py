"""The Python memory of each connected idle user, traced (run by hand:
``python bench/idle_memory.py``).

Runs the whole server in this process (memory store, the demo bot), connects ``--count``
users from a client subprocess (websockets; each says hello and gets a conversation, then
says nothing), waits ``--idle-for`` seconds (past ``--hibernate-after``, the server's
``[limits] hibernate_after``, so silent users' conversations have left memory), and compares
two tracemalloc snapshots: before the users and once they are idle. Prints the KiB per user,
the conversations still in memory, the tasks running by name, and the files (and lines of the
servers and the peer) that hold the most.

    .venv/bin/python bench/idle_memory.py --count 2000
    .venv/bin/python bench/idle_memory.py --count 2000 --idle-for 0   # before they leave

tracemalloc counts Python allocations only (not the interpreter's own arenas or the kernel's
socket buffers): ``bench/connections.py`` reads the server's RSS instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would stand in for the standard library's http module.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]

import argparse  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
import linecache  # noqa: E402
import subprocess  # noqa: E402
import tracemalloc  # noqa: E402

import trio  # noqa: E402

KIB = 1024


async def _clients(url: str, count: int) -> None:
    """The client side (asyncio, in its own process): ``count`` users say hello, then wait
    for a line on stdin."""
    import asyncio
    import json

    from websockets.asyncio.client import ClientConnection, connect

    held: list[ClientConnection] = []
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            ws = await connect(url, max_size=2**20, compression=None)
            await ws.send(json.dumps({"type": "hello", "v": 1, "role": "user", "bot_id": "demo"}))
            await ws.recv()
            held.append(ws)

    await asyncio.gather(*(one() for _ in range(count)))
    print("held", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _connect(url: str, count: int) -> trio.Process:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-P", __file__, "--client", url, "--count", str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    with trio.fail_after(600):
        line = await proc.stdout.receive_some(100)
    assert line.startswith(b"held"), line
    return proc


def _tasks() -> collections.Counter[str]:
    names: collections.Counter[str] = collections.Counter()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        names[task.name] += 1
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return names


async def _measure(args: argparse.Namespace) -> None:
    from transport.config import from_mapping
    from transport.servers.runtime import run_server

    config = from_mapping(
        {
            "listeners": {"ws_port": 0, "http_port": 0},
            "bots": {"demo": {"adapter": "demo"}},
            "limits": {
                "new_conversations_per_minute": 0,
                "hibernate_after": args.hibernate_after,
            },
        }
    )
    count = args.count
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        board = server.services.board
        warm = await _connect(server.ws_url, 50)  # the first users' one-off costs
        await trio.sleep(args.idle_for)
        gc.collect()
        tracemalloc.start(12)
        before = tracemalloc.take_snapshot()
        users = await _connect(server.ws_url, count)
        await trio.sleep(args.idle_for)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print(
            f"{count} idle users, hibernate_after {args.hibernate_after} s, "
            f"measured {args.idle_for} s after they connected"
        )
        print(
            f"conversations in memory {board.active_conversations}, "
            f"out of memory with clients {board.dormant_conversations}"
        )
        for name, n in _tasks().most_common(6):
            print(f"{n:7d} tasks {name}")
        diff = after.compare_to(before, "lineno")
        total = sum(d.size_diff for d in diff)
        print(f"total {total / count / KIB:.2f} KiB per user")
        by_file: collections.Counter[str] = collections.Counter()
        for d in diff:
            by_file[d.traceback[0].filename] += d.size_diff
        for name, size in by_file.most_common(args.top):
            print(f"{size / count:8.0f} B/user {_short(name)}")
        ours = [d for d in diff if "/transport/" in d.traceback[0].filename]
        for d in ours[: args.top]:
            frame = d.traceback[0]
            line = linecache.getline(frame.filename, frame.lineno).strip()[:70]
            print(
                f"{d.size_diff / count:8.0f} B/user {d.count_diff / count:6.2f} obj/user "
                f"{_short(frame.filename)}:{frame.lineno} {line}"
            )
        for proc in (warm, users):
            assert proc.stdin is not None
            await proc.stdin.send_all(b"\n")
        server.stop()


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    root = str(_BENCH.parent) + "/"
    return filename.removeprefix(root)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument(
        "--hibernate-after",
        type=float,
        default=1.0,
        help="the server's [limits] hibernate_after, seconds",
    )
    parser.add_argument(
        "--idle-for",
        type=float,
        default=2.0,
        help="seconds the users stay silent before the snapshot (past --hibernate-after)",
    )
    parser.add_argument("--top", type=int, default=15, help="lines of each breakdown")
    parser.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        import asyncio

        asyncio.run(_clients(args.client, args.count))
    else:
        trio.run(_measure, args)


if __name__ == "__main__":
    main()
