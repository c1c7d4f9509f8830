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


ServiceRun = Callable[..., Awaitable[None]]


async def supervise_service(
    name: str,
    run: ServiceRun,
    on_restart: Callable[[], None],
    *,
    first_pause: float = 0.1,
    max_pause: float = 30.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a long-lived service (the alarms, a livechat backend) for as long as its nursery.

    ``run`` is started like ``nursery.start`` starts a task (it takes ``task_status``). A
    service has no one to escalate to, so it is never given up on: after an exception it is
    run again, after a pause that doubles with each failure in a row (up to ``max_pause``),
    and ``on_restart`` is called once it is up again, to reconcile what it lost.
    """
    pause = 0.0
    first = True
    while True:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run)
                if first:
                    first = False
                    task_status.started()
                else:
                    log.info("%s is running again", name)
                    on_restart()
                pause = 0.0
            return
        except Exception as exc:
            pause = min(max(first_pause, pause * 2), max_pause)
            log.error("%s failed; restarting in %.1f s", name, pause, exc_info=exc)
        await trio.sleep(pause)
