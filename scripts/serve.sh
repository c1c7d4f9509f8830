#!/usr/bin/env bash
# Set up (first run) and start Switchover with its embedded defaults on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/switchover serve "$@"
