"""What an uncontended ``send_message`` costs on the fast listener: the connection's state
machine against the flags it replaced, in the same run.

The flag version of the send path (``send_message`` and ``_flush`` as they were before the
state machine, one writer kept by a ``_writing`` flag) is kept below as :class:`FlagSends`.
One connection alternates between the two: its class is switched between rounds (the flag
version only overrides the send path), and which goes first alternates too, so both meet the
same socket, the same client and the same moment of a shared machine.

Two measures:

* **socket**: ``fastws.serve_websocket`` on 127.0.0.1 (this process, pinned to CPU 0) sends
  ``--messages`` text messages of ``--size`` characters back to back per round to a load
  generator (a subprocess pinned to CPU 1 that only reads and discards). Before each round
  the bench waits until the client has taken everything, so no send waits for the kernel
  (waits are counted and reported: they should be 0). Reported per send: wall and CPU time
  of this thread, and the load generator's CPU use during the rounds (from psutil).
* **no socket**: the same sends on a connection whose socket accepts everything at once (no
  system call), which shows the bookkeeping around the syscall magnified.

Run::

    .venv/bin/python bench/fastws_send.py                 # 20 rounds of 2,000 sends each
    .venv/bin/python bench/fastws_send.py --rounds 40 --size 1000

Writes bench/results/fastws_send.json.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import servers
import trio
from trio_websocket import CloseReason, ConnectionClosed
from websockets.exceptions import InvalidState
from websockets.http11 import Request
from websockets.server import ServerProtocol

from transport.servers import fastws

RESULTS = servers.BENCH / "results" / "fastws_send.json"
ABNORMAL = fastws.ABNORMAL


class FlagSends(fastws.WebSocketConnection):
    """The send path as it was before the state machine: one writer kept by a flag. Only
    for this bench; ``_writing`` and ``_writer_done`` are set by :func:`as_flags`."""

    _writing: bool

    async def send_message(self, message: str | bytes) -> None:
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason)
        try:
            if isinstance(message, str):
                self._protocol.send_text(message.encode())
            else:
                self._protocol.send_binary(message)
        except InvalidState:
            raise ConnectionClosed(self._closing_reason()) from None
        await self._flush()

    async def _flush(self) -> None:
        while self._writing:
            assert self._writer_done is not None
            await self._writer_done.wait()
        chunks = self._protocol.data_to_send()
        if not chunks and not self._backlog:
            return
        eof = bool(chunks) and chunks[-1] == b""
        data = self._backlog + b"".join(chunks)
        self._backlog = b""
        self._writing = True
        try:
            view = memoryview(data)
            while view:
                try:
                    sent = self._sock.send(view)
                except BlockingIOError:
                    if self._writer_done is None:
                        self._writer_done = trio.Event()
                    try:
                        await trio.lowlevel.wait_writable(self._sock)
                    except trio.ClosedResourceError:
                        raise ConnectionClosed(self._closing_reason()) from None
                    continue
                except OSError:
                    self._close_reason = self._close_reason or CloseReason(ABNORMAL, None)
                    raise ConnectionClosed(self._close_reason) from None
                view = view[sent:]
        finally:
            self._writing = False
            if self._writer_done is not None:
                self._writer_done.set()
                self._writer_done = None
        if eof:
            self._close_socket()


def as_flags(connection: fastws.WebSocketConnection) -> None:
    connection.__class__ = FlagSends
    connection._writing = False  # type: ignore[attr-defined]


def as_machine(connection: fastws.WebSocketConnection) -> None:
    connection.__class__ = fastws.WebSocketConnection


VARIANTS: dict[str, Callable[[fastws.WebSocketConnection], None]] = {
    "flags": as_flags,
    "machine": as_machine,
}

#: Times a send had to wait for the kernel buffer (wait_writable), counted for both.
WAITS = [0]
_wait_writable = trio.lowlevel.wait_writable


async def counting_wait_writable(sock: Any) -> None:
    WAITS[0] += 1
    await _wait_writable(sock)


async def timed_round(
    connection: fastws.WebSocketConnection, message: str, count: int
) -> tuple[int, int]:
    """Send ``message`` ``count`` times; (wall ns, this thread's CPU ns)."""
    send: Callable[[str], Awaitable[None]] = connection.send_message
    wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(count):
        await send(message)
    return time.perf_counter_ns() - wall, time.thread_time_ns() - cpu


def unsent_bytes(sock: socket.socket) -> int:
    """Bytes this socket's kernel still holds for the peer (Linux SIOCOUTQ)."""
    import fcntl
    import termios

    out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return int.from_bytes(out, sys.byteorder)


async def drained(sock: socket.socket) -> None:
    while unsent_bytes(sock):  # noqa: ASYNC110 (no event tells of it)
        await trio.sleep(0.001)


def summary(rounds: list[dict[str, Any]], count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in VARIANTS:
        mine = [r[name] for r in rounds]
        out[name] = {
            "wall_ns_per_send": statistics.median(r["wall_ns"] / count for r in mine),
            "cpu_ns_per_send": statistics.median(r["cpu_ns"] / count for r in mine),
            "wall_ns_range": [
                min(r["wall_ns"] / count for r in mine),
                max(r["wall_ns"] / count for r in mine),
            ],
        }
        if "client_cpu_s" in mine[0]:
            # psutil reads CPU time in clock ticks (10 ms): summed over every round.
            wall_s = sum(r["wall_ns"] for r in mine) / 1e9
            client_s = sum(r["client_cpu_s"] for r in mine)
            out[name]["client_cpu_percent"] = 100 * client_s / wall_s
    ratios = [r["machine"]["cpu_ns"] / r["flags"]["cpu_ns"] for r in rounds]
    wall_ratios = [r["machine"]["wall_ns"] / r["flags"]["wall_ns"] for r in rounds]
    out["machine_over_flags_cpu"] = {
        "median": statistics.median(ratios),
        "range": [min(ratios), max(ratios)],
    }
    out["machine_over_flags_wall"] = {
        "median": statistics.median(wall_ratios),
        "range": [min(wall_ratios), max(wall_ratios)],
    }
    return out


# -- over a socket ----------------------------------------------------------------------------


async def over_socket(args: argparse.Namespace) -> dict[str, Any]:
    message = "m" * args.size
    results: dict[str, Any] = {}
    finished = trio.Event()

    async def handler(request: fastws.WebSocketRequest) -> None:
        connection = await request.accept()
        raw: socket.socket = connection._sock
        client = psutil.Process(client_process.pid)
        rounds: list[dict[str, Any]] = []
        waits_before = WAITS[0]
        for number in range(args.warmup + args.rounds):
            order = list(VARIANTS) if number % 2 == 0 else list(reversed(VARIANTS))
            row: dict[str, Any] = {}
            for name in order:
                VARIANTS[name](connection)
                await drained(raw)
                client_before = sum(client.cpu_times()[:2])
                wall_ns, cpu_ns = await timed_round(connection, message, args.messages)
                client_cpu = sum(client.cpu_times()[:2]) - client_before
                row[name] = {
                    "wall_ns": wall_ns,
                    "cpu_ns": cpu_ns,
                    "client_cpu_s": client_cpu,
                }
            if number >= args.warmup:
                rounds.append(row)
        as_machine(connection)
        results.update(summary(rounds, args.messages))
        results["kernel_buffer_waits"] = WAITS[0] - waits_before
        results["rounds"] = rounds
        finished.set()

    async with trio.open_nursery() as nursery:
        serve = partial(
            fastws.serve_websocket, handler, servers.HOST, 0, None, disconnect_timeout=0.5
        )
        server: fastws.WebSocketServer = await nursery.start(serve)
        command = [servers.PYTHON, __file__, "--drain", str(server.port)]
        client_process = await trio.lowlevel.open_process(
            servers.pinned(servers.CLIENT_CPU, command)
        )
        await finished.wait()
        nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        await client_process.wait()
    return results


def drain(port: int) -> None:
    """The load generator: a plain socket that completes the handshake, then reads and
    discards everything until the server goes away."""
    sock = socket.create_connection((servers.HOST, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {servers.HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    buffer = bytearray(1 << 18)
    try:
        while sock.recv_into(buffer):
            pass
    except ConnectionResetError:
        pass


# -- without a socket -------------------------------------------------------------------------


class Swallow:
    """A socket that takes everything at once: the send path without its system call."""

    def send(self, data: memoryview) -> int:
        return len(data)

    def fileno(self) -> int:
        return 1_000_000

    def getpeername(self) -> Any:
        raise OSError

    getsockname = getpeername


def opened_without_socket() -> fastws.WebSocketConnection:
    protocol = ServerProtocol()
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.receive_data(
        (
            "GET / HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    [request] = protocol.events_received()
    assert isinstance(request, Request)
    protocol.send_response(protocol.accept(request))
    protocol.data_to_send()
    return fastws.WebSocketConnection(
        Swallow(),  # type: ignore[arg-type]
        protocol,
        request,
        disconnect_timeout=1.0,
    )


async def without_socket(args: argparse.Namespace) -> dict[str, Any]:
    connection = opened_without_socket()
    message = "m" * args.size
    rounds: list[dict[str, Any]] = []
    for number in range(args.warmup + args.rounds):
        order = list(VARIANTS) if number % 2 == 0 else list(reversed(VARIANTS))
        row: dict[str, Any] = {}
        for name in order:
            VARIANTS[name](connection)
            wall_ns, cpu_ns = await timed_round(connection, message, args.messages)
            row[name] = {"wall_ns": wall_ns, "cpu_ns": cpu_ns}
        if number >= args.warmup:
            rounds.append(row)
    return {**summary(rounds, args.messages), "rounds": rounds}


# -- the run ----------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> dict[str, Any]:
    trio.lowlevel.wait_writable = counting_wait_writable
    return {
        "socket": await over_socket(args),
        "no_socket": await without_socket(args),
    }


def print_table(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"\nfastws send_message, {args.rounds} rounds of {args.messages:,} sends of "
        f"{args.size} characters, {results['date']}"
    )
    print("| measure | variant | wall ns/send | CPU ns/send | load generator CPU |")
    print("|---|---|---|---|---|")
    for measure in ("socket", "no_socket"):
        part = results[measure]
        for name in VARIANTS:
            row = part[name]
            client = row.get("client_cpu_percent")
            print(
                f"| {measure} | {name} | {row['wall_ns_per_send']:,.0f} "
                f"({row['wall_ns_range'][0]:,.0f}-{row['wall_ns_range'][1]:,.0f}) "
                f"| {row['cpu_ns_per_send']:,.0f} | "
                f"{'-' if client is None else f'{client:.0f} %'} |"
            )
        cpu, wall = part["machine_over_flags_cpu"], part["machine_over_flags_wall"]
        print(
            f"| {measure} | machine / flags | {wall['median']:.3f} "
            f"({wall['range'][0]:.3f}-{wall['range'][1]:.3f}) | {cpu['median']:.3f} "
            f"({cpu['range'][0]:.3f}-{cpu['range'][1]:.3f}) | |"
        )
    print(f"sends that waited for the kernel buffer: {results['socket']['kernel_buffer_waits']}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--drain", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drain is not None:
        drain(args.drain)
        return
    if servers.can_pin():
        os.sched_setaffinity(0, {int(servers.SERVER_CPU)})
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "nproc": os.cpu_count(),
        "pinned": servers.can_pin(),
        "load_average": os.getloadavg()[0],
        "rounds": args.rounds,
        "messages": args.messages,
        "size": args.size,
    }
    results.update(trio.run(main, args))
    print_table(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    cli()
