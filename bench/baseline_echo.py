"""The baseline: a bare trio-websocket echo server with nothing behind it.

Every figure the network benchmarks print is read against this server measured under the
same load in the same run: it is the most our stack (trio + trio-websocket + wsproto) can
do when the handler does no work at all, so our rate divided by its rate says how much the
router itself costs.

Run it by hand::

    .venv/bin/python bench/baseline_echo.py --port 8800

It takes the same ``--host``/``--port`` as ``switchover serve`` (port 0: pick a free one) and
prints ``listening on ws://HOST:PORT`` once it accepts connections. ``--impl fastws`` runs
the same echo on ``transport.servers.fastws`` instead, to see what the framing layer alone is worth;
``--impl websockets`` the same echo on the ``websockets`` library's asyncio server, the
fastest pure-Python stack at hand, as a second yardstick.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from typing import Any

import trio
import trio_websocket
from trio_websocket import ConnectionClosed


async def echo(request: trio_websocket.WebSocketRequest) -> None:
    """Send every message straight back, until the client goes away."""
    ws = await request.accept()
    try:
        while True:
            message = await ws.get_message()
            await ws.send_message(message)
    except ConnectionClosed:
        pass


def serve_websockets(host: str, port: int) -> None:
    """The same echo on asyncio and the ``websockets`` server (no compression, no pings)."""
    import asyncio

    # bench/http.py would stand in for the standard library's http, which websockets needs.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def run() -> None:
        async with serve(
            handler, host, port, compression=None, ping_interval=None, max_size=2**22
        ) as server:
            bound = next(iter(server.sockets)).getsockname()[1]
            print(f"listening on ws://{host}:{bound}", flush=True)
            await server.serve_forever()

    asyncio.run(run())


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: 10,000 idle clients need 10,000 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def main(host: str, port: int, impl: str) -> None:
    serve: Any
    if impl == "fastws":
        from transport.servers import fastws

        serve = fastws.serve_websocket
    else:
        serve = trio_websocket.serve_websocket
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, echo, host, port, None)
        bound = server.port
        print(f"listening on ws://{host}:{bound}", flush=True)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument(
        "--impl", choices=["trio-websocket", "fastws", "websockets"], default="trio-websocket"
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        if args.impl == "websockets":
            serve_websockets(args.host, args.port)
        else:
            trio.run(main, args.host, args.port, args.impl)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    cli()
