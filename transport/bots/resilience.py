"""Calling a remote bot without letting it hurt the conversations that depend on it.

A remote bot can be slow, time out, answer 5xx, answer garbage or refuse connections. Each
adapter sends its HTTP request through :class:`Resilience`, which gives every attempt a hard
time limit, retries the failures that may pass (timeouts, connection errors, 5xx, 429) a
bounded number of times with exponential backoff, and keeps a per-bot
:class:`CircuitBreaker`, so a dead bot is asked once per cool-down instead of once per user
message. Whatever still fails is raised as a :class:`BotDeliveryError`: the core then shows
the user the bot's "unavailable" message and the conversation stays usable.

Retrying is safe because each event carries an id that is stable across retries
(``BotEvent.event_id``), which the bot can de-duplicate on.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.request import getproxies

import attrs
import httpx
import trio

from transport.validators import at_least_one, positive

log = logging.getLogger("switchover.bots")

T = TypeVar("T")


class BotDeliveryError(Exception):
    """An event could not be delivered to the bot, or its answer could not be used."""


class BotCircuitOpen(BotDeliveryError):
    """The bot failed too often lately; it is not called until its cool-down is over."""


class BotReplyInvalid(BotDeliveryError):
    """The bot answered, but not with anything Switchover can show. Not retried: the bot
    did receive the event."""


class BotRefused(BotDeliveryError):
    """The bot answered with a status that retrying will not change (4xx other than 429)."""


class RetryableFailure(BotDeliveryError):
    """A failure that may pass on the next attempt (timeouts, connection errors, 5xx, 429)."""


# -- settings -----------------------------------------------------------------------------


@attrs.frozen
class RetryPolicy:
    """``attempts`` calls at most per event (the first one included); before attempt *n*
    the caller waits ``min(backoff * 2 ** (n - 2), max_backoff)`` seconds. ``timeout`` bounds
    each attempt as a whole, from connecting to the last byte of the answer."""

    attempts: int = attrs.field(default=3, validator=at_least_one)
    backoff: float = attrs.field(default=0.2, validator=positive)
    max_backoff: float = attrs.field(default=2.0, validator=positive)
    timeout: float = attrs.field(default=10.0, validator=positive)

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (numbered from 1)."""
        if attempt <= 1:
            return 0.0
        return float(min(self.backoff * 2 ** (attempt - 2), self.max_backoff))


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a bot that keeps failing.

    Closed: calls go through; ``threshold`` consecutive failed calls (each attempt counts)
    open it. Open: every call is refused at once with :class:`BotCircuitOpen` until
    ``cool_down`` seconds have passed. Half-open: one trial call goes through (others are
    still refused while it runs); its success closes the breaker, its failure opens it for
    another cool-down. ``now`` reads the time (trio's clock by default), so a test can move
    it by hand.
    """

    def __init__(
        self,
        threshold: int = 5,
        cool_down: float = 30.0,
        *,
        now: Callable[[], float] = trio.current_time,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"breaker threshold must be at least 1, got {threshold!r}")
        if not cool_down > 0:
            raise ValueError(f"breaker cool-down must be positive, got {cool_down!r}")
        self.threshold = threshold
        self.cool_down = cool_down
        self._now = now
        self._failures = 0
        self._opened_at = -math.inf
        self._open = False
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        if self._now() - self._opened_at >= self.cool_down:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def admit(self) -> None:
        """Called before each attempt: raises :class:`BotCircuitOpen` when the call must
        not be made."""
        state = self.state
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return
        remaining = max(0.0, self._opened_at + self.cool_down - self._now())
        raise BotCircuitOpen(
            f"circuit open after {self._failures} consecutive failures; "
            f"next try in {remaining:.1f}s"
        )

    def succeeded(self) -> None:
        self._failures = 0
        self._open = False
        self._trial_running = False

    def abandoned(self) -> None:
        """The call was given up before it had a result (cancelled)."""
        self._trial_running = False

    def failed(self) -> None:
        self._failures += 1
        if self._trial_running or self._failures >= self.threshold:
            self._open = True
            self._opened_at = self._now()
        self._trial_running = False


# -- the HTTP client ----------------------------------------------------------------------


class PoolOnFirstUse(httpx.AsyncBaseTransport):
    """httpx's connection pool, built when the first request goes out. Building one imports
    httpcore and loads the CA bundle into an SSL context: about 0.04 s of CPU and 2 MiB at
    every start (bench/README.md, 2026-12-03 (evening): restart; more on a loaded machine),
    for a server whose bots and platforms may never call out over HTTP."""

    def __init__(self, limits: httpx.Limits) -> None:
        self.limits = limits
        self.pool: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.pool is None:
            self.pool = httpx.AsyncHTTPTransport(limits=self.limits)
        return await self.pool.handle_async_request(request)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


def make_http_client(
    *, timeout: float = 10.0, max_connections: int = 100, keepalive: int = 20
) -> httpx.AsyncClient:
    """One pooled client for all the bots of a server: connections to a bot are reused
    between events instead of being opened per message. Its pool is built on first use
    (:class:`PoolOnFirstUse`), unless the environment names a proxy: httpx then builds a
    pool per proxy, as it always did."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive)
    proxied = any(scheme in getproxies() for scheme in ("http", "https", "all"))
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=limits,
        follow_redirects=False,
        transport=None if proxied else PoolOnFirstUse(limits),
    )


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def check_status(response: httpx.Response) -> None:
    """Raise the right :class:`BotDeliveryError` for a status that is not a success."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if is_retryable_status(status):
        raise RetryableFailure(f"bot answered HTTP {status}")
    raise BotRefused(f"bot answered HTTP {status}")


# -- putting it together ------------------------------------------------------------------


@attrs.define
class Resilience:
    """Retries, timeouts and the circuit breaker of one bot."""

    bot_id: str
    policy: RetryPolicy = RetryPolicy()
    breaker: CircuitBreaker = attrs.field(factory=CircuitBreaker)

    async def call(
        self,
        conversation_id: str,
        what: str,
        attempt: Callable[[int], Awaitable[T]],
    ) -> T:
        """Run ``attempt(n)`` until it succeeds, fails for good, or attempts run out.

        ``attempt`` does one HTTP exchange and raises :class:`RetryableFailure` (or an
        ``httpx.TransportError``) for failures worth another try. ``what`` names the
        delivery in logs, with the conversation id.
        """
        policy = self.policy
        last: BotDeliveryError | None = None
        for number in range(1, policy.attempts + 1):
            delay = policy.delay_before(number)
            if delay:
                await trio.sleep(delay)
            self.breaker.admit()
            try:
                with trio.fail_after(policy.timeout):
                    result = await attempt(number)
            except trio.TooSlowError:
                last = RetryableFailure(f"no answer within {policy.timeout}s")
            except httpx.TimeoutException as exc:
                last = RetryableFailure(f"timed out ({type(exc).__name__})")
            except httpx.TransportError as exc:
                last = RetryableFailure(f"cannot reach the bot ({type(exc).__name__}: {exc})")
            except RetryableFailure as exc:
                last = exc
            except Exception as exc:
                self.breaker.failed()
                self._log_failure(conversation_id, what, number, exc, final=True)
                raise
            except BaseException:
                # Cancelled (the server is stopping): neither a success nor a failure, but a
                # half-open breaker must not wait for this trial forever.
                self.breaker.abandoned()
                raise
            else:
                self.breaker.succeeded()
                return result
            self.breaker.failed()
            final = number == policy.attempts
            self._log_failure(conversation_id, what, number, last, final=final)
        assert last is not None
        raise last

    def _log_failure(
        self, conversation_id: str, what: str, number: int, exc: Exception, *, final: bool
    ) -> None:
        log.warning(
            "bot %s: %s failed (attempt %d of %d%s): %s",
            self.bot_id,
            what,
            number,
            self.policy.attempts,
            ", giving up" if final else ", will retry",
            exc,
            extra={
                "conversation_id": conversation_id,
                "bot_id": self.bot_id,
                "attempt": number,
                "breaker": self.breaker.state.value,
            },
        )
