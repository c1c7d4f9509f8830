"""Webhook bots over real HTTP on 127.0.0.1: signatures, and bots that fail in every way."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from actors import (
    SESSION_START,
    Accepted,
    BotBinding,
    BotSettings,
    Content,
    Desk,
    Entry,
    Party,
    Switchboard,
    UserSays,
    open_switchboard,
)
from transport.bots import build_bot
from transport.bots.resilience import (
    BreakerState,
    CircuitBreaker,
    Resilience,
    RetryPolicy,
)
from transport.bots.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookBot,
    signed_headers,
    verify_signature,
)
from transport.errors import ConfigError

from .conftest import notice, open_watched
from .fakes.webhook_bot import SECRET, BotServer


def said(text: str) -> object:
    return lambda item: isinstance(item, Entry) and item.content.text_value == text


def unavailable(item: object) -> bool:
    return isinstance(item, Entry) and item.metadata.get("code") == "bot_unavailable"


@asynccontextmanager
async def board_with(bot: WebhookBot) -> AsyncIterator[Switchboard]:
    settings = BotSettings(unavailable_message="The assistant is away.")
    desk = Desk({"hooks": settings}, [])
    async with open_switchboard(
        {"hooks": BotBinding(bot, settings)}, {"desk": desk}, hibernate_after=None
    ) as board:
        yield board
    await bot.aclose()


def webhook_bot(url: str, *, secret: str = SECRET, **extra: Any) -> WebhookBot:
    options = {"url": url, "secret": secret, "timeout": 0.2, "attempts": 3, "backoff": 0.01}
    options.update(extra)
    bot = build_bot("hooks", "webhook", options)
    assert isinstance(bot, WebhookBot)
    return bot


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- signatures ---------------------------------------------------------------------------


def test_a_signature_verifies_only_for_the_same_secret_body_and_recent_time() -> None:
    body = b'{"type":"event"}'
    headers = signed_headers(SECRET, body, now=1_000_000)
    assert verify_signature(SECRET, headers, body, tolerance=300, now=1_000_100)
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify_signature(SECRET, lower, body, now=1_000_000)
    assert not verify_signature("another-secret-entirely", headers, body, now=1_000_000)
    assert not verify_signature(SECRET, headers, body + b" ", now=1_000_000)
    assert not verify_signature(SECRET, headers, body, tolerance=300, now=1_000_301)
    forged = {**headers, TIMESTAMP_HEADER: "1000001"}
    assert not verify_signature(SECRET, forged, body, now=1_000_000)
    assert not verify_signature(SECRET, {}, body, now=1_000_000)
    # Several signatures (a rotated secret): any match is enough.
    rotated = {**headers, SIGNATURE_HEADER: "v1=00ff," + headers[SIGNATURE_HEADER]}
    assert verify_signature(SECRET, rotated, body, now=1_000_000)


async def test_the_bot_gets_a_signed_event_and_its_answer_reaches_the_user() -> None:
    server = BotServer()
    async with serving_bot(server) as url, board_with(webhook_bot(url)) as board:
        conv, user = await open_watched(board, "hooks", user_id="uma", metadata={"lang": "en"})
        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(said("echo: hi"))
        assert server.events == [
            {
                "type": "event",
                "event_id": f"{conv}:1",
                "conversation_id": conv,
                "bot_id": "hooks",
                "user_id": "uma",
                "sender": "user",
                "content": {"content_type": "text", "content": {"text": "hi"}},
                "metadata": {"lang": "en"},
            }
        ]
        assert server.rejected == 0


async def test_a_bot_rejects_a_bad_signature_and_the_user_is_told() -> None:
    server = BotServer()
    async with (
        serving_bot(server) as url,
        board_with(webhook_bot(url, secret="not-the-bots-secret-at-all")) as board,
    ):
        conv, user = await open_watched(board, "hooks")
        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(unavailable)
        # 401 is final: not retried.
        assert (server.rejected, server.events) == (1, [])


def test_webhook_options_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        build_bot("hooks", "webhook", {"url": "nowhere", "secret": "short", "retries": 2})
    problems = caught.value.problems
    assert any(p.startswith("bots.hooks.options.url:") for p in problems)
    assert any(p.startswith("bots.hooks.options.secret:") for p in problems)
    assert any(p.startswith("bots.hooks.options.retries: unknown option") for p in problems)


# -- failures -----------------------------------------------------------------------------


@asynccontextmanager
async def serving_bot(server: BotServer, port: int = 0) -> AsyncIterator[str]:
    from .fakes.asgi_server import serving

    async with serving(server, port) as url:
        yield url


@pytest.mark.parametrize(
    ("mode", "attempts_seen"), [("slow", 3), ("5xx", 3), ("garbage", 1), ("refused", 0)]
)
async def test_a_failing_bot_never_sticks_the_conversation(
    mode: str, attempts_seen: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Bounded retries, then the unavailable message; the user's words are kept, the next
    message tries again and succeeds once the bot is back, and a human is still reachable."""
    caplog.set_level(logging.WARNING, logger="switchover")
    server = BotServer(mode="ok" if mode == "refused" else mode)
    port = free_port() if mode == "refused" else 0
    async with trio.open_nursery() as nursery:
        if mode == "refused":
            url = f"http://127.0.0.1:{port}/hook"
        else:
            url = await nursery.start(_serve_in_background, server, port)
        async with board_with(webhook_bot(url, breaker_threshold=100)) as board:
            conv, user = await open_watched(board, "hooks")
            with trio.fail_after(5):
                await board.ask(conv, UserSays(Content.text("are you there?")))
                await user.wait_for(unavailable)
            assert server.calls == attempts_seen
            if attempts_seen > 1:
                ids = {event["event_id"] for event in server.events}
                assert ids == {f"{conv}:1"}, "retries carry the same event id"
            logged = [r for r in caplog.records if getattr(r, "conversation_id", None) == conv]
            assert logged, "the failure is logged with the conversation id"

            # The bot recovers; the conversation is not stuck.
            server.mode = "ok"
            if mode == "refused":
                await nursery.start(_serve_in_background, server, port)
            await board.ask(conv, UserSays(Content.text("hello?")))
            await user.wait_for(said("echo: hello?"))

            # A human is always reachable.
            await board.ask(conv, UserSays(Content.payload(SESSION_START)))
            await user.wait_for(notice("session_started"))

            # Nothing the user sent was lost.
            kept = await board.store.entries_after(conv, 0)
            from_user = [e.content for e in kept if e.sender is Party.USER]
            assert from_user == [
                Content.text("are you there?"),
                Content.text("hello?"),
                Content.payload(SESSION_START),
            ]
        nursery.cancel_scope.cancel()


async def _serve_in_background(
    server: BotServer, port: int, *, task_status: trio.TaskStatus[str]
) -> None:
    async with serving_bot(server, port) as url:
        task_status.started(url + "/hook")
        await trio.sleep_forever()


class HandClock:
    """A clock a test moves by hand, for the breaker's cool-down."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_circuit_breaker_stops_calls_then_half_opens() -> None:
    server = BotServer(mode="5xx")
    clock = HandClock()
    breaker = CircuitBreaker(threshold=3, cool_down=30.0, now=clock)
    resilience = Resilience("hooks", RetryPolicy(attempts=3, backoff=0.01, timeout=1), breaker)
    async with serving_bot(server) as url:
        bot = WebhookBot("hooks", url, SECRET, resilience=resilience)
        async with board_with(bot) as board:
            conv, user = await open_watched(board, "hooks")

            async def say_and_wait_unavailable(text: str) -> None:
                outcome = await board.ask(conv, UserSays(Content.text(text)))
                assert isinstance(outcome, Accepted) and outcome.seq is not None
                seq = outcome.seq
                await user.wait_for(
                    lambda i: unavailable(i) and isinstance(i, Entry) and i.seq > seq
                )

            await say_and_wait_unavailable("one")
            assert server.calls == 3
            assert breaker.state is BreakerState.OPEN

            # Open: the bot is not called at all.
            await say_and_wait_unavailable("two")
            assert server.calls == 3

            # After the cool-down one trial goes through; it fails, so the breaker re-opens.
            clock.now += 30
            assert breaker.state is BreakerState.HALF_OPEN
            await say_and_wait_unavailable("three")
            assert server.calls == 4
            assert breaker.state is BreakerState.OPEN

            # The next trial succeeds and closes it.
            clock.now += 30
            server.mode = "ok"
            await board.ask(conv, UserSays(Content.text("four")))
            await user.wait_for(said("echo: four"))
            assert server.calls == 5
            assert breaker.state is BreakerState.CLOSED

            # Open or not, LIVECHAT_SESSION_START never needs the bot.
            server.mode = "5xx"
            await say_and_wait_unavailable("five")
            assert breaker.state is BreakerState.OPEN
            calls = server.calls
            await board.ask(conv, UserSays(Content.payload(SESSION_START)))
            await user.wait_for(notice("session_started"))
            assert server.calls == calls
