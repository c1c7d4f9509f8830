"""``scripts/setup.sh`` says one line while it installs on a first run, and nothing once
everything is installed. Run on a copy of the script with a stand-in Python whose venv and
pip do nothing, so the test needs no network and takes milliseconds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Stands in for python3: ``-m venv DIR`` makes DIR/bin/python, itself a stand-in whose
# ``-m pip ...`` notes its arguments and succeeds.
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  exit 0
fi
echo "$*" >> "$(dirname "$0")/../pip-calls"
"""


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", project / "scripts" / "setup.sh")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return project


def _setup(project: Path, python: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/setup.sh"],
        cwd=project,
        env={**os.environ, "PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_first_run_says_one_line_and_later_runs_nothing(tmp_path: Path) -> None:
    project = _project(tmp_path)
    python = tmp_path / "python3"

    first = _setup(project, python)
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert first.stderr == "Setting up Switchover in .venv (first run, about a minute)…\n"
    calls = (project / ".venv" / "pip-calls").read_text().splitlines()
    assert calls[-1] == "-m pip install -qq -e ."

    again = _setup(project, python)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert (project / ".venv" / "pip-calls").read_text().splitlines() == calls

    # A changed pyproject.toml is installed again, and that says so too.
    stamp = project / ".venv" / ".installed"
    os.utime(stamp, (stamp.stat().st_atime - 60, stamp.stat().st_mtime - 60))
    updated = _setup(project, python)
    assert updated.returncode == 0, updated.stderr
    assert updated.stderr == "Updating .venv: pyproject.toml changed (about a minute)…\n"
    assert len((project / ".venv" / "pip-calls").read_text().splitlines()) == len(calls) + 2
