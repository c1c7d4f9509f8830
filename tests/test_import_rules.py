"""The import rules in pyproject.toml fail on a forbidden import.

Each case copies the packages, adds one import that breaks one rule, and runs the same
``lint-imports`` the test command runs: the rule must be reported broken, and only then.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_tree(tmp_path: Path) -> Path:
    for name in ("actors", "transport"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=folder,
        env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_rules_hold_for_the_tree_as_it_is(tmp_path: Path) -> None:
    result = _lint(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "rule"),
    [
        ("actors/trio/desk.py", "import transport.config", "The core never imports the transports"),
        ("actors/trio/switchboard.py", "import sqlite3", "touches no database"),
        ("actors/trio/desk.py", "import starlette.routing", "speaks no HTTP"),
        ("actors/model/state.py", "import trio", "The core's data is only data"),
        ("actors/machines/routing.py", "import actors.trio.clock", "The machines are pure"),
        ("actors/ports.py", "import actors.machines.lifecycle", "The ports depend on data only"),
        ("transport/protocol/frames.py", "import transport.servers.runtime", "sans-I/O"),
        ("transport/store/schema.py", "import transport.config", "The store depends on"),
        ("transport/bots/demo.py", "import transport.protocol.peer", "Bots depend on the core"),
        ("transport/config.py", "import transport.servers.runtime", "Reading the config"),
        ("transport/livechat/desk.py", "import transport.servers.runtime", "point one way"),
        ("transport/validators.py", "import actors.model.settings", "The leaf modules"),
        ("transport/servers/websocket.py", "import transport.servers.http.app", "The servers"),
        ("transport/servers/fastws.py", "import transport.servers.websocket", "The servers"),
        ("transport/servers/http/errors.py", "import transport.servers.http.body", "HTTP app's"),
        ("transport/servers/http/pages.py", "import transport.servers.http.app", "HTTP app's"),
        ("transport/servers/http/serve.py", "import transport.servers.http.app", "HTTP app's"),
    ],
)
def test_a_forbidden_import_breaks_its_rule(
    tmp_path: Path, module: str, forbidden: str, rule: str
) -> None:
    folder = _copy_tree(tmp_path)
    path = folder / module
    path.write_text(path.read_text() + f"\n{forbidden}  # noqa\n")
    result = _lint(folder)
    assert result.returncode != 0
    # The report wraps long contract names: read it as one line.
    report = " ".join(result.stdout.split())
    assert re.search(re.escape(rule) + r"(?:(?!KEPT).)*? BROKEN", report), result.stdout
