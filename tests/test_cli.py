"""The ``switchover`` command, run as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from transport.store.sqlite import database_path

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "switchover.toml"
SCRIPT = Path(sys.executable).parent / "switchover"


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHOVER_")}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transport.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environment(),
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "check"):
        assert command in result.stdout
    serve = run("serve", "--help")
    assert serve.returncode == 0
    for flag in ("--host", "--ws-port", "--http-port", "--data-dir", "--config", "--log-format"):
        assert flag in serve.stdout


def test_the_console_script_reports_its_version() -> None:
    result = subprocess.run(
        [str(SCRIPT), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0
    assert re.fullmatch(r"switchover \d+\.\d+\.\d+\S*\n", result.stdout)


def test_check_accepts_the_example_config() -> None:
    result = run("check", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("OK (1 bot, 2 agents)")


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[listeners]\nws_port = -1\n[bots.demo]\nadapter = "fax"\n'
        '[bots.demo.settings]\nsession_timeout = "soon"\n[agents.a]\nname = "A"\n'
    )
    result = run("check", "--config", str(bad))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{bad}: 4 problems:"
    assert (
        "  - bots.demo.settings.session_timeout: must be a number, got a string ('soon')" in lines
    )
    assert "  - agents.a.token: is required (the secret this agent signs in with)" in lines
    assert "  - listeners.ws_port: must be between 0 and 65535, got -1" in lines
    # The bot adapters are checked too, along with the rest.
    assert any(line.startswith("  - bots.demo.adapter: unknown adapter 'fax'") for line in lines)


def test_check_refuses_a_short_token_and_takes_a_hashed_one(tmp_path: Path) -> None:
    config = tmp_path / "tokens.toml"
    config.write_text('[agents.a]\nname = "A"\ntoken = "abc123"\n')
    result = run("check", "--config", str(config))
    assert result.returncode == 1
    assert "agents.a.token: is shorter than 16 characters" in result.stderr
    hashed = "sha256:" + hashlib.sha256(b"a-long-random-agent-token").hexdigest()
    config.write_text(f'[agents.a]\nname = "A"\ntoken = "{hashed}"\n')
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr


def test_check_reports_unreadable_files(tmp_path: Path) -> None:
    result = run("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 1
    assert "cannot read the config file" in result.stderr
    (tmp_path / "broken.toml").write_text("[bots\n")
    result = run("check", "--config", str(tmp_path / "broken.toml"))
    assert result.returncode == 1 and "not valid TOML" in result.stderr


def test_serve_refuses_a_bad_flag_value_clearly() -> None:
    result = run("serve", "--ws-port", "70000")
    assert result.returncode == 1
    assert "--ws-port: must be between 0 and 65535, got 70000" in result.stderr


@pytest.mark.parametrize(
    ("listener", "flag"), [("HTTP", "--http-port"), ("WebSocket", "--ws-port")]
)
def test_serve_says_which_listener_cannot_bind(listener: str, flag: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        other = "--ws-port" if flag == "--http-port" else "--http-port"
        result = run("serve", other, "0", flag, str(port))
    assert result.returncode == 1
    assert f"cannot use 127.0.0.1:{port}: Address already in use" in result.stderr
    assert listener in result.stderr


@attrs.define
class ServerProcess:
    process: trio.Process
    ws_url: str
    http_url: str
    agent_token: str
    data_dir: Path
    stdout: list[str]
    stderr: trio.abc.ReceiveStream


async def read_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line.decode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with serving(tmp_path) as running:
        yield running


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    command = [
        sys.executable,
        *("-m", "transport.cli", "serve", "--ws-port", "0", "--http-port", "0"),
        *("--data-dir", str(tmp_path / "data"), "--log-format", "json"),
    ]
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environment(),
        cwd=tmp_path,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    token = ws_url = http_url = ""
    try:
        with trio.fail_after(20):
            async for line in read_lines(process.stdout):
                lines.append(line)
                if line.startswith("Demo agent token"):
                    token = line.rsplit(": ", 1)[1]
                found = re.search(r"WebSocket (\S+)\s+HTTP (\S+)", line)
                if found:
                    ws_url, http_url = found.groups()
                    break
        assert ws_url and http_url, lines
        yield ServerProcess(
            process, ws_url, http_url, token, tmp_path / "data", lines, process.stderr
        )
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


async def test_serve_answers_then_stops_cleanly_on_sigterm(server: ServerProcess) -> None:
    assert len(server.agent_token) >= 20  # printed at start-up
    async with httpx.AsyncClient(base_url=server.http_url, timeout=5) as http:
        health = (await http.get("/healthz")).json()
        assert health["status"] == "ok"
        assert (await http.get("/config.json")).json()["ws_url"] == server.ws_url

    with trio.fail_after(15):
        async with open_websocket_url(server.ws_url) as user:
            await user.send_message(json.dumps({"type": "hello", "v": 1, "role": "user"}))
            welcome = json.loads(await user.get_message())
            assert welcome["type"] == "welcome" and welcome["bot_id"] == "demo"
            async with open_websocket_url(server.ws_url) as agent:
                hello = {"type": "hello", "v": 1, "role": "agent", "token": server.agent_token}
                await agent.send_message(json.dumps(hello))
                assert json.loads(await agent.get_message())["type"] == "welcome"

                server.process.send_signal(signal.SIGTERM)
                for connection in (user, agent):
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:
                            await connection.get_message()
                    assert closed.value.reason.code == 1001
            assert await server.process.wait() == 0

    # The logs were one JSON object per line, and said the server stopped.
    logs = [json.loads(line) async for line in read_lines(server.stderr) if line.strip()]
    assert logs, "no logs"
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in logs)
    assert any(entry["message"] == "stopped" for entry in logs)
    assert any(entry.get("ws_port") for entry in logs)
    # SQLite was used: the data directory now holds the database and the signing key.
    assert (server.data_dir / "secret").is_file()
    assert database_path(server.data_dir).is_file()


async def test_a_restart_prints_the_same_demo_token(tmp_path: Path) -> None:
    tokens = []
    for _ in range(2):
        async with serving(tmp_path) as running:
            tokens.append(running.agent_token)
            running.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await running.process.wait()
    assert tokens[0] and tokens[0] == tokens[1]


async def test_sigint_also_stops_cleanly(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGINT)
    with trio.fail_after(15):
        assert await server.process.wait() == 0
