"""The baseline: a bare trio-websocket echo server with nothing behind it.

Every figure the network benchmarks print is read against this server measured under the
same load in the same run: it is the most our stack (trio + trio-websocket + wsproto) can
do when the handler does no work at all, so our rate divided by its rate says how much the
router itself costs.

Run it by hand::

    .venv/bin/python bench/baseline_echo.py --port 8800

It takes the same ``--host``/``--port`` as ``switchover serve`` (port 0: pick a free one) and
prints ``listening on ws://HOST:PORT`` once it accepts connections. ``--impl fastws`` runs
the same echo on ``transport.servers.fastws`` instead, to see what the framing layer alone is worth.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--impl", choices=["trio-websocket", "fastws"], default="trio-websocket")
    args = parser.parse_args(argv)
    raise_fd_limit()
    try:
        trio.run(main, args.host, args.port, args.impl)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    cli()
