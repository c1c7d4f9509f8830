"""The installed version, for ``--version``, ``/healthz`` and the logs."""

from __future__ import annotations

from functools import cache
from importlib import metadata


@cache
def version() -> str:
    """Read from the package's metadata once (a scan of the installed distributions), then
    remembered: the code running does not change version while the process lives."""
    try:
        return metadata.version("switchover")
    except metadata.PackageNotFoundError:
        return "0+unknown"
