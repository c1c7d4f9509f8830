"""``switchover serve`` with its WebSocket listener on :mod:`transport.fastws`.

The listener in transport/ws_server.py is written against trio-websocket's interface;
fastws offers the same interface, so this launcher swaps the one function the listener
calls and then runs the normal command line. It lets the benchmarks measure what the
framing layer is worth before the listener is switched for good::

    .venv/bin/python bench/serve_fastws.py serve --config my.toml
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transport import cli, fastws, ws_server

ws_server.serve_websocket = fastws.serve_websocket  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli.main())
