#!/usr/bin/env bash
# Create .venv and install Switchover into it (idempotent). Needs only Python 3.11+.
# With --test, also installs the test tools and Debian's Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=""
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
fi
stamp=".venv/.installed${extras}"
if [ -z "$extras" ] && [ -f ".venv/.installed[test]" ]; then
  # Installed with the test tools: that includes everything serving needs.
  stamp=".venv/.installed[test]"
fi
# One line while installing, so a first run's minute of silence is explained; nothing when
# everything is already there.
if [ ! -x .venv/bin/python ]; then
  echo "Setting up Switchover in .venv (first run, about a minute)…" >&2
  "$python" -m venv .venv
elif [ ! -f "$stamp" ]; then
  if [ -n "$extras" ]; then
    echo "Adding the test tools to .venv (first test run, about a minute)…" >&2
  else
    echo "Installing Switchover in .venv (about a minute)…" >&2
  fi
elif [ pyproject.toml -nt "$stamp" ]; then
  echo "Updating .venv: pyproject.toml changed (about a minute)…" >&2
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -qq --upgrade pip >/dev/null
  .venv/bin/python -m pip install -qq -e ".${extras}"
  touch "$stamp"
fi
install_chromium() {
  # A mirror can fail once; try twice before giving up.
  for attempt in 1 2; do
    if $1 apt-get update -qq >/dev/null &&
      $1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
      return 0
    fi
    echo "installing chromium failed (attempt $attempt)" >&2
    sleep 5
  done
  return 1
}
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "installing Debian's chromium for the browser tests" >&2
    install_chromium ""
  elif command -v sudo >/dev/null 2>&1; then
    install_chromium sudo
  else
    echo "warning: /usr/bin/chromium missing and no root: browser tests will be skipped" >&2
  fi
fi
