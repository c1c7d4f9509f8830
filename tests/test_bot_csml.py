"""The CSML engine adapter against a fake engine served over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from actors import (
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotSettings,
    Content,
    Desk,
    Entry,
    Presence,
    Switchboard,
    Transcript,
    UserSays,
    open_switchboard,
)
from transport.bots import build_bot
from transport.bots.csml import CsmlBot
from transport.errors import ConfigError

from .conftest import RecordingSink, notice, open_watched
from .fakes.asgi_server import serving
from .fakes.csml_engine import EVERYTHING, EXPIRY, GREETING, THANKS, FakeCsmlEngine

API_KEY = "engine-key-1"


def said(text: str) -> object:
    return lambda item: isinstance(item, Entry) and item.content.text_value == text


def unavailable(item: object) -> bool:
    return isinstance(item, Entry) and item.metadata.get("code") == "bot_unavailable"


@asynccontextmanager
async def switchboard_with(
    bot: CsmlBot, settings: BotSettings = BotSettings()
) -> AsyncIterator[tuple[Switchboard, Desk]]:
    desk = Desk({"support": settings}, [AgentProfile("alice", "Alice", frozenset({"support"}))])
    async with open_switchboard(
        {"support": BotBinding(bot, settings)}, {"desk": desk}, hibernate_after=None
    ) as board:
        yield board, desk
    await bot.aclose()


def csml_bot(url: str, **extra: Any) -> CsmlBot:
    options: dict[str, Any] = {
        "engine_url": url,
        "api_key": API_KEY,
        "version_id": "v2",
        "timeout": 2,
        "attempts": 2,
        "backoff": 0.01,
        **extra,
    }
    bot = build_bot("support", "csml", options)
    assert isinstance(bot, CsmlBot)
    return bot


@pytest.mark.parametrize("ending", [SESSION_END, SESSION_EXPIRED])
async def test_a_full_session_through_the_engine(ending: str) -> None:
    engine = FakeCsmlEngine(api_keys=frozenset({API_KEY}))
    settings = BotSettings(session_timeout=0.5 if ending == SESSION_EXPIRED else 60.0)
    async with serving(engine) as url, switchboard_with(csml_bot(url), settings) as (board, desk):
        conv, user = await open_watched(board, "support", user_id="uma", metadata={"plan": "pro"})

        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(said(GREETING))
        question = await user.wait_for(
            lambda i: isinstance(i, Entry) and i.content.content_type == "question"
        )
        assert isinstance(question, Entry)
        button = question.content.content["buttons"][0]["content"]
        assert button["payload"] == SESSION_START

        (first,) = engine.runs
        assert first == {
            "bot_id": "support",
            "version_id": "v2",
            "event": {
                "request_id": f"{conv}:1",
                "client": {"user_id": "uma", "channel_id": conv, "bot_id": "support"},
                "payload": {"content_type": "text", "content": {"text": "hi"}},
                "metadata": {"plan": "pro", "sender": "user"},
            },
        }
        assert engine.requests[0].headers["x-api-key"] == API_KEY

        # The user clicks the button: a session opens and the engine hears nothing of it.
        await board.ask(conv, UserSays(Content.payload(button["payload"])))
        await user.wait_for(notice("session_started"))
        await board.ask(conv, UserSays(Content.text("is anyone there?")))
        agent = RecordingSink()
        desk.attach("alice", agent)
        desk.set_presence("alice", Presence.ONLINE)
        await agent.wait_for(lambda i: isinstance(i, Transcript))
        await user.wait_for(notice("agent_joined"))
        await board.ask(conv, AgentSays("alice", Content.text("Alice here, how can I help?")))
        await board.ask(conv, UserSays(Content.text("my invoice is wrong")))
        await agent.wait_for(said("my invoice is wrong"))

        if ending == SESSION_END:
            await board.ask(conv, UserSays(Content.payload(SESSION_END)))
            await user.wait_for(said(THANKS))
            reason = "user_ended"
        else:
            await user.wait_for(said(EXPIRY))
            reason = "idle_timeout"

        runs = await engine.wait_for_runs(2)
        assert len(runs) == 2
        event = runs[1]["event"]
        assert event["payload"] == {"content_type": "payload", "content": {"payload": ending}}
        assert event["request_id"].startswith(f"{conv}:")
        assert event["client"] == first["event"]["client"]
        assert event["metadata"]["reason"] == reason
        assert event["metadata"]["plan"] == "pro"
        assert event["metadata"]["session_id"].startswith(conv)
        assert event["metadata"]["sender"] == "system"
        # The flow went `goto end` after the session's end: nothing is left held.
        assert engine.open == {}
        # The hand-off closed nothing: the held step was still there for the end event.
        assert engine.closed == []


async def test_every_kind_of_reply_reaches_the_user_untouched() -> None:
    engine = FakeCsmlEngine(api_keys=frozenset({API_KEY}))
    async with serving(engine) as url, switchboard_with(csml_bot(url)) as (board, _):
        conv, user = await open_watched(board, "support")
        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(said(GREETING))
        await board.ask(conv, UserSays(Content.text("show me everything")))
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.content_type == "carousel")
        shown = [e.content.to_json() for e in user.entries() if e.content.content_type != "text"]
        assert shown[-4:] == EVERYTHING
        # An attachment from the user goes to the engine in the same shape.
        image = Content("image", {"url": "https://example.com/me.png"})
        await board.ask(conv, UserSays(image))
        await user.wait_for(said("I got a image"))
        assert engine.runs[-1]["event"]["payload"] == image.to_json()


async def test_a_wrong_api_key_is_refused_once_and_the_user_is_told() -> None:
    engine = FakeCsmlEngine(api_keys=frozenset({API_KEY}))
    async with (
        serving(engine) as url,
        switchboard_with(csml_bot(url, api_key="wrong")) as (board, _),
    ):
        conv, user = await open_watched(board, "support")
        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(unavailable)
        # A 403 is not retried: retrying cannot fix a key.
        assert [r.status for r in engine.requests] == [403]
        assert engine.runs == []


async def test_a_session_end_the_engine_missed_reaches_it_once_it_is_back() -> None:
    """A session's ending is never dropped: while the engine fails, it is retried with
    backoff, and the user's next message waits behind it, so the engine hears both in
    order and no step is left holding a flow."""
    engine = FakeCsmlEngine()
    async with (
        serving(engine) as url,
        switchboard_with(csml_bot(url, api_key=None)) as (board, _),
    ):
        conv, user = await open_watched(board, "support", user_id="uma")
        await board.ask(conv, UserSays(Content.text("hi")))
        await user.wait_for(said(GREETING))

        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await user.wait_for(notice("session_started"))
        engine.failing = True
        runs_before = len(engine.runs)
        await board.ask(conv, UserSays(Content.payload(SESSION_END)))
        await board.ask(conv, UserSays(Content.text("hello again")))
        # Refused once at least (the adapter's own retries included), then the engine is back.
        await engine.wait_for_requests(len(engine.requests) + 1)
        engine.failing = False
        await user.wait_for(lambda i: said(GREETING)(i) and i.seq > 4, timeout=10)
        payloads = [r["event"]["payload"] for r in engine.runs[runs_before:]]
        assert payloads[0]["content"] == {"payload": SESSION_END}
        assert payloads[-1]["content"] == {"text": "hello again"}
        assert not any(e.metadata.get("code") == "bot_unavailable" for e in user.entries())


async def test_the_fake_engine_keeps_the_documented_error_contract() -> None:
    engine = FakeCsmlEngine(api_keys=frozenset({API_KEY}))
    good_event = {
        "request_id": "r1",
        "client": {"user_id": "u", "channel_id": "c", "bot_id": "support"},
        "payload": {"content_type": "text", "content": {"text": "hi"}},
        "metadata": {},
    }
    async with serving(engine) as url, httpx.AsyncClient(base_url=url) as http:
        keyed = {"X-Api-Key": API_KEY}
        ok = await http.post("/run", json={"bot_id": "support", "event": good_event}, headers=keyed)
        assert ok.status_code == 200
        assert ok.json()["request_id"] == "r1"
        assert set(ok.json()) == {
            "messages",
            "conversation_end",
            "request_id",
            "received_at",
            "client",
        }
        no_id = {k: v for k, v in good_event.items() if k != "request_id"}
        cases: list[tuple[Mapping[str, str], Any, int]] = [
            ({}, {"bot_id": "support", "event": good_event}, 403),
            ({"X-Api-Key": "nope"}, {"bot_id": "support", "event": good_event}, 403),
            (keyed, {"bot_id": "support", "event": no_id}, 400),
            (keyed, {"bot_id": "nobody", "event": good_event}, 400),
            (keyed, {"bot_id": "support", "version_id": "v9", "event": good_event}, 400),
            (keyed, "not an object", 400),
        ]
        for headers, body, status in cases:
            response = await http.post("/run", json=body, headers=headers)
            assert (response.status_code, response.content) == (status, b"")
        closed = await http.post("/conversations/close", json=good_event["client"], headers=keyed)
        assert (closed.status_code, closed.content) == (200, b"")


@pytest.mark.parametrize(
    ("options", "bad_key"),
    [
        ({}, "engine_url"),
        ({"engine_url": "ftp://engine"}, "engine_url"),
        ({"engine_url": "http://engine", "attempts": 0}, "attempts"),
        ({"engine_url": "http://engine", "timeout": "soon"}, "timeout"),
        ({"engine_url": "http://engine", "api_kee": "k"}, "api_kee"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], bad_key: str) -> None:
    with pytest.raises(ConfigError, match=rf"bots\.support\.options\.{bad_key}"):
        build_bot("support", "csml", options)


def test_an_unknown_adapter_is_named() -> None:
    with pytest.raises(ConfigError, match=r"bots\.x\.adapter.*'carrier-pigeon'"):
        build_bot("x", "carrier-pigeon", {})
