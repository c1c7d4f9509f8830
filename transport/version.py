"""The installed version, for ``--version``, ``/healthz`` and the logs."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("switchover")
    except metadata.PackageNotFoundError:
        return "0+unknown"
