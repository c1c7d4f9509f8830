"""When conversations leave memory: on a bounded schedule, whatever the churn, on trio's
MockClock (``autojump_clock`` makes the minutes pass in milliseconds)."""

from __future__ import annotations

import gc

import trio

from actors import Accepted, BotSettings, Content, Entry, Switchboard, UserSays
from actors.trio.conversation import ConversationActor
from transport.config import from_mapping

from .conftest import RecordingSink, StallingBot, open_watched
from .test_actors import running

HIBERNATE_AFTER = 30.0


async def test_under_churn_only_the_last_window_of_conversations_stays_in_memory(
    autojump_clock: object,
) -> None:
    """One new conversation a second for ten minutes: each leaves memory once quiet for
    ``hibernate_after``, so memory holds about one window's worth, never the ten minutes."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        counts = []
        for n in range(600):
            conv = (await board.open_conversation("demo", user_id=f"u{n}")).conversation_id
            assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
            counts.append(board.active_conversations)
            await trio.sleep(1.0)
        # Each stays for the whole delay (30 of them in a window), and no longer.
        assert 30 <= max(counts[60:]) <= 32
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert board.active_conversations == 0
        assert board.stats.hibernated == 600


async def test_a_connected_client_keeps_it_and_leaving_starts_the_delay(
    autojump_clock: object,
) -> None:
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await trio.sleep(10 * 60)
        assert board.is_in_memory(conv)
        board.unsubscribe(conv, user)
        await trio.sleep(HIBERNATE_AFTER - 1)
        assert board.is_in_memory(conv)
        await trio.sleep(2)
        assert not board.is_in_memory(conv)
        assert board.stats.hibernated == 1
        # It comes back with its numbering on its next event.
        again = RecordingSink()
        board.subscribe(conv, again, after_seq=0)
        assert await board.ask(conv, UserSays(Content.text("back"))) == Accepted(3)
        await again.wait_for(lambda i: isinstance(i, Entry) and i.seq == 4)


async def test_a_conversation_owing_its_bot_an_event_stays_until_answered(
    autojump_clock: object,
) -> None:
    bot = StallingBot()
    async with running(BotSettings(), bot, hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, UserSays(Content.text("hang"))) == Accepted(1)
        await bot.wait_for_events(1)
        await trio.sleep(10 * 60)
        assert board.is_in_memory(conv)


def test_the_delay_is_a_limit_of_the_server() -> None:
    assert from_mapping({}).limits.hibernate_after == HIBERNATE_AFTER
    assert from_mapping({"limits": {"hibernate_after": 5}}).limits.hibernate_after == 5.0


async def test_a_conversation_that_leaves_memory_is_freed_at_once(autojump_clock: object) -> None:
    """No full collection needed: nothing it leaves behind points back at it (the server
    makes full collections rare, so a cycle would keep every hibernated one for long)."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        gc.collect()
        gc.disable()
        try:
            for n in range(50):
                conv = (await board.open_conversation("demo", user_id=f"u{n}")).conversation_id
                assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
            assert _actors(board) == 50
            await trio.sleep(HIBERNATE_AFTER + 1)
            assert board.active_conversations == 0
            # At most the one the alarms' task last armed, which it holds until the next.
            assert _actors(board) <= 1
        finally:
            gc.enable()


def _actors(board: Switchboard) -> int:
    """The actors of ``board`` still allocated (other tests' may linger)."""
    return sum(
        isinstance(o, ConversationActor) and o.context is board.context for o in gc.get_objects()
    )
