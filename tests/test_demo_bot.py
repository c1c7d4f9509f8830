"""The demo bot: CSML Studio's livechat example flow, served by the real core."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors import (
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    AgentProfile,
    AgentSignsOff,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    Desk,
    Entry,
    Party,
    Presence,
    Switchboard,
    UserSays,
    open_switchboard,
)
from transport.bots import build_bot
from transport.bots.demo import (
    APOLOGY,
    GREETING,
    HOURS,
    HUMAN_BUTTON,
    LEFT_QUEUE,
    NOBODY_CAME,
    THANKS,
    WELCOME,
    WELCOME_PAYLOAD,
    DemoBot,
    reply_to,
)
from transport.errors import ConfigError

from .conftest import RecordingSink, notice, open_watched


def buttons(content: Content) -> dict[str, str]:
    """A question's buttons as {title: payload}."""
    assert content.content_type == "question"
    return {b["content"]["title"]: b["content"]["payload"] for b in content.content["buttons"]}


def test_a_greeting_gets_a_greeting_and_the_human_button() -> None:
    greeting, question = reply_to(Content.text("Hello there"))
    assert greeting.text_value == GREETING
    assert buttons(question)[HUMAN_BUTTON] == SESSION_START


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        (Content.text("what are your opening hours?"), HOURS),
        (Content.payload("DEMO_HOURS"), HOURS),
        (Content.payload(SESSION_END), THANKS),
        (Content.payload(SESSION_EXPIRED), APOLOGY),
    ],
)
def test_plain_questions_and_session_ends_get_their_answer(said: Content, expected: str) -> None:
    replies = reply_to(said)
    assert replies[0].text_value == expected
    # Every such answer ends with the way back to a human.
    assert buttons(replies[-1])[HUMAN_BUTTON] == SESSION_START


def test_the_chat_opening_gets_the_welcome_and_the_human_button_at_once() -> None:
    welcome, question = reply_to(Content.payload(WELCOME_PAYLOAD))
    assert welcome.text_value == WELCOME
    assert buttons(question)[HUMAN_BUTTON] == SESSION_START


@pytest.mark.parametrize(
    ("payload", "agent_id", "expected"),
    [
        (SESSION_END, "alice", THANKS),
        (SESSION_END, None, LEFT_QUEUE),
        (SESSION_EXPIRED, "alice", APOLOGY),
        (SESSION_EXPIRED, None, NOBODY_CAME),
    ],
)
def test_an_ending_names_an_agent_only_when_one_held_the_session(
    payload: str, agent_id: str | None, expected: str
) -> None:
    metadata = {"reason": "x", "session_id": "c1/1", "agent_id": agent_id}
    replies = reply_to(Content.payload(payload), metadata)
    assert replies[0].text_value == expected
    assert ("our agent" in expected) is (payload == SESSION_EXPIRED and agent_id is not None)


def test_asking_for_a_human_offers_the_button_since_only_the_user_can_press_it() -> None:
    (question,) = reply_to(Content.text("can I talk to a human please"))
    assert buttons(question)[HUMAN_BUTTON] == SESSION_START


def test_anything_else_gets_help_and_attachments_get_a_polite_no() -> None:
    replies = reply_to(Content.text("qwertyuiop"))
    assert "demo bot" in (replies[0].text_value or "")
    assert "help" in (replies[1].text_value or "")
    image = reply_to(Content("image", {"url": "https://example.com/cat.png"}))
    assert "only read text" in (image[0].text_value or "")


async def test_the_bot_answers_events_through_the_bot_interface() -> None:
    event = BotEvent("e1", "c1", "demo", "u1", Content.text("help"))
    replies = await DemoBot().on_event(event)
    assert "hours" in (replies[0].text_value or "")


def test_build_bot_knows_the_demo_adapter_and_names_bad_keys() -> None:
    assert isinstance(build_bot("demo", "demo", {}), DemoBot)
    with pytest.raises(ConfigError, match=r"bots\.x\.options: "):
        build_bot("x", "demo", {"url": "http://example.com"})
    with pytest.raises(ConfigError, match=r"bots\.x\.adapter: unknown adapter 'carrier-pigeon'"):
        build_bot("x", "carrier-pigeon", {})


@pytest.fixture
async def demo_board() -> AsyncIterator[Switchboard]:
    settings = BotSettings(session_timeout=60)
    desk = Desk({"demo": settings}, [AgentProfile("alice", "Alice", frozenset({"demo"}))])
    async with open_switchboard({"demo": BotBinding(DemoBot(), settings)}, {"desk": desk}) as b:
        yield b


def bot_said(text: str) -> object:
    def check(item: object) -> bool:
        return (
            isinstance(item, Entry) and item.sender is Party.BOT and item.content.text_value == text
        )

    return check


async def test_in_the_core_the_bot_thanks_after_an_ended_session(
    demo_board: Switchboard, autojump_clock: object
) -> None:
    conv, user = await open_watched(demo_board, "demo")
    await demo_board.ask(conv, UserSays(Content.text("hi")))
    await user.wait_for(bot_said(GREETING))
    await demo_board.ask(conv, UserSays(Content.payload(SESSION_START)))
    await user.wait_for(notice("session_started"))

    desk = demo_board.backends["desk"]
    assert isinstance(desk, Desk)
    agent = RecordingSink()
    desk.attach("alice", agent)
    desk.set_presence("alice", Presence.ONLINE)
    await user.wait_for(notice("agent_joined"))
    await demo_board.ask(conv, AgentSignsOff("alice"))
    await demo_board.ask(conv, UserSays(Content.payload(SESSION_END)))
    await user.wait_for(bot_said(THANKS))


async def test_in_the_core_the_bot_apologises_after_an_expired_session(
    demo_board: Switchboard, autojump_clock: object
) -> None:
    conv, user = await open_watched(demo_board, "demo")
    await demo_board.ask(conv, UserSays(Content.payload(SESSION_START)))
    await user.wait_for(notice("session_started"))
    # Nobody picks up and nobody writes: the session expires after session_timeout. No
    # agent ever joined, so the bot blames none.
    await user.wait_for(notice("session_expired"), timeout=120)
    await user.wait_for(bot_said(NOBODY_CAME))
