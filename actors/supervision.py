"""Restart a failing task from its last good state, and give up past a limit.

Trio has no supervisor of its own. :func:`supervise` runs one child in a loop: an exception
(never a ``BaseException``: cancellation and KeyboardInterrupt must pass) is logged and
counted, and the child runs again; it holds its own last committed state, so it resumes where
it was. More than ``max_restarts`` failures within ``window`` seconds means a restart will not
help: the failure escalates to whoever started the child.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import attrs
import trio

log = logging.getLogger("switchover.supervision")


@attrs.frozen
class RestartPolicy:
    max_restarts: int = 5
    window: float = 60.0


class Escalated(Exception):
    """A child failed more often than its :class:`RestartPolicy` allows."""

    def __init__(self, name: str, cause: BaseException) -> None:
        super().__init__(f"{name} failed too often; last error: {cause!r}")
        self.name = name


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    policy: RestartPolicy,
    on_restart: Callable[[BaseException], None] | None = None,
) -> None:
    """Run ``run()`` until it returns, restarting it after each exception.

    Raises :class:`Escalated` when failures come faster than ``policy`` allows.
    """
    failures: deque[float] | None = None  # created on the first failure: most never fail
    while True:
        try:
            await run()
            return
        except Exception as exc:
            now = trio.current_time()
            if failures is None:
                failures = deque()
            failures.append(now)
            while failures and failures[0] < now - policy.window:
                failures.popleft()
            if len(failures) > policy.max_restarts:
                log.error("%s: giving up after %d failures", name, len(failures), exc_info=exc)
                raise Escalated(name, exc) from exc
            log.warning("%s: restarting after an error", name, exc_info=exc)
            if on_restart is not None:
                on_restart(exc)
