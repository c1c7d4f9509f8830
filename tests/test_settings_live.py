"""A bot's settings replaced while the core runs (Switchboard.replace_settings), on trio's
MockClock: open sessions follow the new timeouts from their next deadline on, never moving
the one already armed; the desk's grace periods and default capacity follow too."""

from __future__ import annotations

import trio

from actors import (
    IDLE_TIMEOUT,
    AgentProfile,
    AgentSignsOff,
    BotSettings,
    Content,
    DeskStatus,
    Entry,
    Presence,
    Transcript,
    UserSays,
)

from .conftest import RecordingSink
from .test_actors import HOUR, ClockedBot, online, running, start_session


async def test_a_shorter_timeout_applies_from_the_next_deadline(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, _):
        conv, started = await start_session(board)
        await trio.sleep_until(started + 60)
        board.replace_settings("demo", BotSettings(session_timeout=120.0))
        # The deadline armed under the old hour stays: nothing expires at started + 120.
        await trio.sleep_until(started + 30 * 60)
        assert not [e for e in bot.events if e.metadata.get("reason") == IDLE_TIMEOUT]
        await board.ask(conv, UserSays(Content.text("still there?")))
        touched = trio.current_time()
        event, at = await bot.expiry()
    assert event.metadata["reason"] == IDLE_TIMEOUT
    assert abs(at - (touched + 120.0)) < 0.001


async def test_a_longer_timeout_does_not_move_the_armed_deadline(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=600.0), bot) as (board, _):
        _, started = await start_session(board)
        await trio.sleep_until(started + 60)
        board.replace_settings("demo", BotSettings(session_timeout=HOUR))
        _, at = await bot.expiry()
    assert abs(at - (started + 600.0)) < 0.001


async def test_the_next_session_is_armed_with_the_new_timeout(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, _):
        board.replace_settings("demo", BotSettings(session_timeout=90.0))
        _, started = await start_session(board)
        _, at = await bot.expiry()
    assert abs(at - (started + 90.0)) < 0.001


async def test_the_sign_off_wording_applies_at_once(autojump_clock: object) -> None:
    async with running(BotSettings(session_timeout=HOUR)) as (board, desk):
        conv, _ = await start_session(board)
        agent = await online(desk, "alice")
        await agent.wait_for(lambda item: isinstance(item, Transcript))
        user = RecordingSink()
        board.subscribe(conv, user, after_seq=0)
        board.replace_settings(
            "demo",
            BotSettings(session_timeout=HOUR, end_message="All done?", end_button_label="Yes"),
        )
        await board.ask(conv, AgentSignsOff("alice"))
        question = await user.wait_for(
            lambda item: isinstance(item, Entry) and item.content.content_type == "question"
        )
    assert isinstance(question, Entry)
    assert question.content.content["title"] == "All done?"
    assert question.content.content["buttons"][0]["content"]["title"] == "Yes"


def holding(count: int) -> object:
    return lambda item: isinstance(item, DeskStatus) and len(item.chats) == count


async def test_a_larger_default_capacity_hands_out_waiting_chats(autojump_clock: object) -> None:
    settings = BotSettings(session_timeout=10 * HOUR, agent_capacity=1)
    async with running(settings) as (board, desk):
        # Carol sets no capacity of her own: she follows the bot's agent_capacity.
        desk.add_agent(AgentProfile("carol", "Carol", frozenset({"demo"})))
        await start_session(board)
        await start_session(board)
        carol = await online(desk, "carol")
        await carol.wait_for(holding(1))
        board.replace_settings("demo", BotSettings(session_timeout=10 * HOUR, agent_capacity=2))
        status = await carol.wait_for(holding(2))
    assert isinstance(status, DeskStatus)
    assert status.capacity == 2
    assert status.queue == ()


async def test_a_grace_period_started_after_a_change_lasts_the_new_length(
    autojump_clock: object,
) -> None:
    settings = BotSettings(session_timeout=10 * HOUR, grace_period=600.0)
    async with running(settings) as (board, desk):
        conv, _ = await start_session(board)
        alice = await online(desk, "alice")
        await alice.wait_for(lambda item: isinstance(item, Transcript))
        bob = await online(desk, "bob")
        board.replace_settings("demo", BotSettings(session_timeout=10 * HOUR, grace_period=60.0))
        await trio.sleep(1)
        desk.set_presence("alice", Presence.OFFLINE)
        left = trio.current_time()
        transcript = await bob.wait_for(lambda item: isinstance(item, Transcript), timeout=HOUR)
        waited = trio.current_time() - left
    assert isinstance(transcript, Transcript)
    assert transcript.conversation_id == conv
    assert 60.0 <= waited < 61.0
