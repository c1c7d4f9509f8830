#!/usr/bin/env bash
# Set up (first run) and run every check: formatting, lint, types, import rules, then the
# whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff format --check actors transport tests bench
.venv/bin/ruff check actors transport tests bench
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/pytest "$@"
