"""``switchover serve`` as a real process on 127.0.0.1, for tests that kill it with SIGKILL.

:func:`serving_process` writes the config, starts the server on a data directory under
``tmp_path``, waits for the line that says where it listens, and on leaving kills it
(SIGKILL: nothing is flushed or closed), so the next run of the same directory finds what
``kill -9`` leaves behind. Its stderr goes to ``server-<run>.log`` beside the config.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

ROOT = Path(__file__).resolve().parent.parent.parent
SWITCHOVER = [sys.executable, "-m", "transport.cli"]
_READY = re.compile(r"WebSocket (ws://\S+)\s+HTTP (http://\S+)")


@attrs.frozen
class ServerProcess:
    process: subprocess.Popen[str]
    ws_url: str
    http_url: str


@asynccontextmanager
async def serving_process(tmp_path: Path, run: int, text: str) -> AsyncIterator[ServerProcess]:
    config = tmp_path / "switchover.toml"
    config.write_text(text)
    log_path = tmp_path / f"server-{run}.log"
    log = log_path.open("w")
    command = [*SWITCHOVER, "serve", "--config", str(config)]
    process = subprocess.Popen(  # noqa: ASYNC220 (its output is read in a thread below)
        [*command, "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(20):
            while True:
                line = await trio.to_thread.run_sync(process.stdout.readline)
                if not line:
                    raise AssertionError(f"the server exited: {log_path.read_text()}")
                found = _READY.search(line)
                if found:
                    break
        yield ServerProcess(process, found.group(1), found.group(2))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()
