"""The retry policy and circuit breaker on their own, with time moved by hand; the bots' HTTP
client's pool."""

from __future__ import annotations

import httpx
import pytest
import trio
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from transport.bots.resilience import (
    BotCircuitOpen,
    BotRefused,
    BreakerState,
    CircuitBreaker,
    PoolOnFirstUse,
    Resilience,
    RetryableFailure,
    RetryPolicy,
    make_http_client,
)
from transport.bots.webhook import signed_headers, verify_signature

from .fakes.asgi_server import serving


class HandClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(attempts=6, backoff=0.5, max_backoff=3.0)
    assert [policy.delay_before(n) for n in range(1, 7)] == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_the_breaker_opens_half_opens_and_admits_one_trial() -> None:
    clock = HandClock()
    breaker = CircuitBreaker(threshold=2, cool_down=10.0, now=clock)
    breaker.admit()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(BotCircuitOpen, match=r"next try in 10\.0s"):
        breaker.admit()
    clock.now = 10.0
    breaker.admit()  # the trial
    with pytest.raises(BotCircuitOpen):
        breaker.admit()  # a second caller while the trial runs
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED


async def test_retries_stop_at_the_limit_and_refusals_are_not_retried(
    autojump_clock: object,
) -> None:
    resilience = Resilience("b", RetryPolicy(attempts=3, backoff=1.0), CircuitBreaker(99))
    calls: list[float] = []

    async def flaky(number: int) -> str:
        calls.append(trio.current_time())
        raise RetryableFailure("HTTP 503")

    start = trio.current_time()
    with pytest.raises(RetryableFailure):
        await resilience.call("c1", "test", flaky)
    assert [round(t - start, 3) for t in calls] == [0.0, 1.0, 3.0]

    refused: list[int] = []

    async def forbidden(number: int) -> str:
        refused.append(number)
        raise BotRefused("HTTP 403")

    with pytest.raises(BotRefused):
        await resilience.call("c1", "test", forbidden)
    assert refused == [1]


async def test_a_slow_attempt_is_cut_at_the_timeout(autojump_clock: object) -> None:
    resilience = Resilience("b", RetryPolicy(attempts=2, backoff=0.1, timeout=2.0))

    async def slow(number: int) -> str:
        await trio.sleep(60)
        return "late"

    start = trio.current_time()
    with pytest.raises(RetryableFailure, match=r"no answer within 2\.0s"):
        await resilience.call("c1", "test", slow)
    assert trio.current_time() - start == pytest.approx(4.1)


async def test_a_cancelled_trial_does_not_leave_the_breaker_stuck(autojump_clock: object) -> None:
    clock = HandClock()
    breaker = CircuitBreaker(threshold=1, cool_down=5.0, now=clock)
    breaker.failed()
    clock.now = 5.0
    resilience = Resilience("b", RetryPolicy(attempts=1), breaker)

    async def hangs(number: int) -> str:
        await trio.sleep_forever()
        raise AssertionError

    with trio.move_on_after(1):
        await resilience.call("c1", "test", hangs)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.admit()  # a new trial is allowed


def test_odd_signature_headers_are_refused_not_crashed_on() -> None:
    body = b"{}"
    good = signed_headers("a-secret-of-enough-length", body, now=100)
    odd = [
        {**good, "X-Switchover-Timestamp": "\uff11\uff10\uff10"},
        {**good, "X-Switchover-Signature": "v1=é" + good["X-Switchover-Signature"][4:]},
        {**good, "X-Switchover-Signature": "v2=" + good["X-Switchover-Signature"][3:]},
    ]
    for headers in odd:
        assert not verify_signature("a-secret-of-enough-length", headers, body, now=100)


async def test_the_http_pool_is_built_on_the_first_request_only() -> None:
    async def hello(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("hello")(scope, receive, send)

    pool = PoolOnFirstUse(httpx.Limits(max_connections=2))
    async with httpx.AsyncClient(transport=pool) as client:
        assert pool.pool is None  # nothing built, no CA bundle read
        async with serving(hello) as url:
            response = await client.get(f"{url}/")
        assert response.text == "hello"
        assert pool.pool is not None


def test_a_proxy_in_the_environment_is_still_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_http_client()
    assert isinstance(client._transport, PoolOnFirstUse)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    proxied = make_http_client()
    # httpx builds the pools itself, one per proxy in the environment, as without the lazy pool.
    assert not isinstance(proxied._transport, PoolOnFirstUse)
    assert any(mount is not None for mount in proxied._mounts.values())
