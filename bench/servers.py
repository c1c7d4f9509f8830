"""Starting the servers under test and the load generator, each in its own pinned process.

The network benchmarks compare ``switchover serve`` with a bare trio-websocket echo server
under the same load in the same run. Both run as subprocesses pinned to CPU 0 and the load
generator runs pinned to CPU 1 (when ``taskset`` exists and there are two CPUs), so the
figures measure one core of server against a client that has a core of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
SERVER_CPU = "0"
CLIENT_CPU = "1"


def can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if can_pin() else command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout} s")


def default_interrupt() -> None:
    """A shell runs background jobs with SIGINT ignored, and children inherit that; give
    the server back its Ctrl-C so that it can be stopped gracefully."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@attrs.frozen
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"


@contextmanager
def running(command: list[str], port: int, log: Path, *, timeout: float = 30.0) -> Iterator[Server]:
    """Run a server pinned to the server CPU; stop it with SIGINT (then SIGKILL) afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            pinned(SERVER_CPU, command),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=default_interrupt,
        )
    try:
        wait_until_listening(port, process, timeout)
        # taskset execs the server, so the pid is the server's own.
        yield Server(process, port, log)
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-3000:])
        raise
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def bare_echo(workdir: Path, impl: str = "trio-websocket") -> Iterator[Server]:
    port = free_port()
    command = [PYTHON, str(BENCH / "baseline_echo.py"), "--host", HOST, "--port", str(port)]
    command += ["--impl", impl]
    with running(command, port, workdir / "baseline.log") as server:
        yield server


@attrs.frozen
class Deployment:
    """What the load generator needs to know about a Switchover it started."""

    server: Server
    agent_tokens: list[str]
    bot_id: str = "demo"


#: What ``--listener`` may name: the server's ``[listeners] websocket`` setting.
LISTENERS = ("fast", "trio-websocket")


def server_lines(
    *,
    default_bot: str,
    store: str,
    data_dir: Path,
    ws: int,
    http: int,
    listener: str | None = None,
    hibernate_after: float | None = None,
) -> list[str]:
    """The config's lines before its bots: listeners on ``HOST``, the store, and limits
    raised so that a load generator is not rate limited as an abusive client would be.
    ``listener``: the ``[listeners] websocket`` setting, ``hibernate_after`` the ``[limits]``
    one (each when given)."""
    return [
        'secret = "bench-secret-not-for-production"',
        f'default_bot = "{default_bot}"',
        "[listeners]",
        f'host = "{HOST}"',
        f"ws_port = {ws}",
        f"http_port = {http}",
        *([] if listener is None else [f'websocket = "{listener}"']),
        "[store]",
        f'kind = "{store}"',
        f"data_dir = {json.dumps(str(data_dir))}",
        "[limits]",
        "rate = 1000000.0",
        "burst = 1000000",
        "max_buffered = 100000",
        "new_conversations_per_minute = 0",
        "auth_failures = 0",
        *([] if hibernate_after is None else [f"hibernate_after = {hibernate_after}"]),
        "[logging]",
        'level = "warning"',
    ]


def agent_lines(agents: int, capacity: int, bot_id: str) -> tuple[list[str], list[str]]:
    """``agents`` agents of ``bot_id`` with ``capacity`` chats each: their config lines and
    their tokens."""
    tokens = [f"bench-agent-token-{i:04d}" for i in range(agents)]
    lines: list[str] = []
    for i, token in enumerate(tokens):
        lines += [
            f'[agents."load-agent-{i:04d}"]',
            f'name = "Load agent {i}"',
            f'token = "{token}"',
            f"capacity = {capacity}",
            f'bots = ["{bot_id}"]',
        ]
    return lines, tokens


def write_config(
    path: Path,
    *,
    agents: int,
    capacity: int,
    store: str,
    data_dir: Path,
    ws: int,
    http: int,
    listener: str = LISTENERS[0],
    hibernate_after: float | None = None,
) -> list[str]:
    """A config with one demo bot, ``agents`` agents of ``capacity`` chats each, the WebSocket
    listener named, and the load generator's limits (:func:`server_lines`)."""
    agent_config, tokens = agent_lines(agents, capacity, "demo")
    lines = [
        *server_lines(
            default_bot="demo",
            store=store,
            data_dir=data_dir,
            ws=ws,
            http=http,
            listener=listener,
            hibernate_after=hibernate_after,
        ),
        "[bots.demo]",
        'adapter = "demo"',
        "[bots.demo.settings]",
        f"agent_capacity = {capacity}",
        "session_timeout = 3600.0",
        *agent_config,
    ]
    path.write_text("\n".join(lines) + "\n")
    return tokens


@contextmanager
def switchover(
    workdir: Path,
    *,
    agents: int = 1,
    capacity: int = 10,
    store: str = "memory",
    listener: str = LISTENERS[0],
    hibernate_after: float | None = None,
) -> Iterator[Deployment]:
    """``switchover serve`` with a fresh config and data dir; ``listener`` is its
    ``[listeners] websocket`` setting, ``hibernate_after`` its ``[limits]`` one (when given)."""
    ws, http = free_port(), free_port()
    data_dir = workdir / f"data-{ws}"
    data_dir.mkdir()
    config = workdir / f"switchover-{ws}.toml"
    tokens = write_config(
        config,
        agents=agents,
        capacity=capacity,
        store=store,
        data_dir=data_dir,
        ws=ws,
        http=http,
        listener=listener,
        hibernate_after=hibernate_after,
    )
    command = [
        PYTHON,
        "-m",
        "transport.cli",
        "serve",
        "--config",
        str(config),
        "--ws-port",
        str(ws),
        "--http-port",
        str(http),
        "--data-dir",
        str(data_dir),
    ]
    with running(command, ws, workdir / f"switchover-{ws}.log") as server:
        yield Deployment(server, tokens)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="switchover-bench-") as path:
        yield Path(path)


class ProgressLine:
    """One line on the terminal rewritten in place while a long run goes on."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def show(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()
        elif time.monotonic() - self.last >= 2.0:
            self.last = time.monotonic()
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def describe(fields: dict[str, Any]) -> str:
    label = str(fields.pop("label", ""))
    return label + ": " + ", ".join(f"{k} {v}" for k, v in fields.items())


def load(workload: str, url: str, server_pid: int, *options: str, timeout: float) -> dict[str, Any]:
    """Run the load generator pinned to the client CPU; relay its progress, return its result."""
    command = pinned(
        CLIENT_CPU,
        [
            PYTHON,
            # -P: not bench/ first on the path, where http.py would stand in for the
            # standard library's http module that websockets imports.
            "-P",
            str(BENCH / "loadgen.py"),
            workload,
            "--url",
            url,
            "--server-pid",
            str(server_pid),
            *options,
        ],
    )
    return run_load_generator(command, timeout=timeout)


def run_load_generator(
    command: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run a load generator (``command``, already pinned); relay its ``progress`` lines and
    return its ``result`` line. Both generators (loadgen.py, loadgen/main.go) speak so."""
    line = ProgressLine()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
    )
    assert process.stderr is not None and process.stdout is not None
    deadline = time.monotonic() + timeout
    errors: list[str] = []
    try:
        for raw in process.stderr:
            if raw.startswith("progress "):
                line.show(describe(json.loads(raw[len("progress ") :])))
            else:
                errors.append(raw)
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator still running after {timeout} s")
        output = process.stdout.read()
        process.wait(timeout=30)
    finally:
        line.clear()
        if process.poll() is None:
            process.kill()
            process.wait()
    for text in output.splitlines():
        if text.startswith("result "):
            result: dict[str, Any] = json.loads(text[len("result ") :])
            return result
    raise RuntimeError(f"load generator failed ({process.returncode}):\n{''.join(errors)[-3000:]}")


def warn_if_client_bound(result: dict[str, Any], key: str = "client_cpu_fraction") -> str:
    """A client near a full core measures itself, not the server."""
    client = result.get(key)
    if client is not None and client > 0.85:
        return f"  WARNING: load generator at {client:.0%} of its core; this figure is client-bound"
    return ""
