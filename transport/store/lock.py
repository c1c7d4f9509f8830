"""The lock that keeps a second Switchover off the database while the store runs: it would
restore the same sessions twice. The kernel drops it if the process dies, so ``kill -9``
never leaves it stale."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from actors import StoreUnavailable


def take_lock(path: Path) -> int:
    """Lock the database ``path`` for this process: an exclusive ``flock`` on
    ``<file>.lock``. Returns the lock file's descriptor (closing it lets go of the lock);
    raises :class:`StoreUnavailable` when another process holds it."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreUnavailable(
            f"the database {path} cannot be opened for writing: {lock_path}: "
            f"{exc.strerror or exc}; check that the data directory is writable"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreUnavailable(
            f"the database {path} is in use by another Switchover process; stop it "
            "or use another data directory"
        ) from exc
    return fd
