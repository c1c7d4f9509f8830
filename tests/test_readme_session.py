"""The README's session script, run as the README says (``python session.py TOKEN [URL]``)
against a real server: it takes the server's URL, and says plainly when the server refuses
the agent token."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from transport.config import from_mapping
from transport.servers.runtime import RunningServer, run_server

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "agent-token-for-the-readme-script"


def readme_script() -> tuple[str, str]:
    """The script and what the README says it prints."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A full session with the Python client", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("It prints:\n\n```text\n", 1)[1].split("```", 1)[0]
    return code, printed


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    config = from_mapping(
        {
            "listeners": {"ws_port": 0, "http_port": 0, "shutdown_timeout": 2.0},
            "bots": {"demo": {"adapter": "demo"}},
            "agents": {"alice": {"name": "Alice", "token": TOKEN}},
        }
    )
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(
            lambda task_status: run_server(config, handle_signals=False, task_status=task_status)
        )
        yield running
        running.stop()


async def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code, _ = readme_script()
    script = tmp_path / "session.py"
    script.write_text(code)
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, str(script), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )


async def test_the_script_talks_to_the_server_at_the_url_it_is_given(
    server: RunningServer, tmp_path: Path
) -> None:
    result = await run_script(tmp_path, TOKEN, server.ws_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == readme_script()[1]


async def test_a_refused_token_is_explained_not_a_traceback(
    server: RunningServer, tmp_path: Path
) -> None:
    result = await run_script(tmp_path, "not-a-token-this-server-knows", server.ws_url)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{server.ws_url} refused the agent token (unknown agent token): use the one it printed\n"
    )
    # It stopped before opening a conversation for the user.
    assert server.app.services.board.active_conversations == 0


async def test_without_a_token_it_says_how_to_run_it(tmp_path: Path) -> None:
    result = await run_script(tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("usage: ")
    assert "AGENT_TOKEN [SERVER_URL (default ws://127.0.0.1:8765/)]" in result.stderr
