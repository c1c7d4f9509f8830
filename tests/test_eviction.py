"""When conversations leave memory: on a bounded schedule, whatever the churn, on trio's
MockClock (``autojump_clock`` makes the minutes pass in milliseconds)."""

from __future__ import annotations

import gc

import trio
import trio.testing

from actors import (
    SESSION_START,
    Accepted,
    BotSays,
    BotSettings,
    Content,
    Entry,
    Switchboard,
    UserSays,
)
from actors.model.effects import Outcome
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


async def test_a_connected_silent_client_does_not_keep_it(autojump_clock: object) -> None:
    """A user who keeps the widget open and says nothing costs no actor: the conversation
    leaves memory on the usual schedule, its client is kept, and it comes back with its
    numbering on its next event."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 2)
        await trio.sleep(HIBERNATE_AFTER - 1)
        assert board.is_in_memory(conv)
        await trio.sleep(2)
        assert not board.is_in_memory(conv)
        assert board.dormant_conversations == 1
        assert board.stats.hibernated == 1
        again = RecordingSink()
        board.subscribe(conv, again, after_seq=0)
        assert await board.ask(conv, UserSays(Content.text("back"))) == Accepted(3)
        await again.wait_for(lambda i: isinstance(i, Entry) and i.seq == 4)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 4)
        assert [e.seq for e in user.entries()] == [1, 2, 3, 4]
        assert [e.seq for e in again.entries()] == [1, 2, 3, 4]
        assert board.dormant_conversations == 0


async def _write(board: Switchboard, conv: str, text: str, origin: RecordingSink) -> Outcome:
    """``text`` from the user's client ``origin``: the outcome."""
    done = trio.Event()
    outcome: list[Outcome] = []

    def reply(result: Outcome) -> None:
        outcome.append(result)
        done.set()

    board.submit(conv, UserSays(Content.text(text)), reply, origin=origin)
    await done.wait()
    return outcome[0]


def _seqs(sink: RecordingSink) -> list[int]:
    return [e.seq for e in sink.entries()]


async def test_a_dormant_conversations_clients_get_everything_once_in_order(
    autojump_clock: object,
) -> None:
    """Two connections of a silent user: out of memory, then the user writes from one of
    them. Both hear the bot's answer, the other one also hears what was written, and the
    writer is never sent its own message back; nothing missed, nothing twice."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, phone = await open_watched(board, "demo")
        laptop = RecordingSink()
        board.subscribe(conv, laptop)
        assert await _write(board, conv, "hi", phone) == Accepted(1)
        await laptop.wait_for(lambda i: isinstance(i, Entry) and i.seq == 2)
        for rounds in range(3):
            await trio.sleep(HIBERNATE_AFTER + 1)
            assert not board.is_in_memory(conv)
            first = 3 + 2 * rounds
            assert await _write(board, conv, f"back {rounds}", phone) == Accepted(first)
            await laptop.wait_for(lambda i, s=first + 1: isinstance(i, Entry) and i.seq == s)
            await phone.wait_for(lambda i, s=first + 1: isinstance(i, Entry) and i.seq == s)
        assert _seqs(laptop) == [1, 2, 3, 4, 5, 6, 7, 8]
        assert _seqs(phone) == [2, 4, 6, 8]
        assert board.stats.hibernated == 3


async def test_a_bot_push_reaches_a_dormant_conversations_client(autojump_clock: object) -> None:
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        board.post(conv, BotSays((Content.text("news"),)))
        pushed = await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 3)
        assert isinstance(pushed, Entry) and pushed.content.text_value == "news"
        assert _seqs(user) == [1, 2, 3]


async def test_a_client_leaving_a_dormant_conversation_is_forgotten(
    autojump_clock: object,
) -> None:
    """Leaving does not wake the conversation, and nothing reaches the client after."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, gone = await open_watched(board, "demo")
        stays = RecordingSink()
        board.subscribe(conv, stays)
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await stays.wait_for(lambda i: isinstance(i, Entry) and i.seq == 2)
        await trio.sleep(HIBERNATE_AFTER + 1)
        started = board.stats.started
        board.unsubscribe(conv, gone)
        assert not board.is_in_memory(conv)
        assert board.stats.started == started
        assert board.dormant_conversations == 1
        board.post(conv, BotSays((Content.text("news"),)))
        await stays.wait_for(lambda i: isinstance(i, Entry) and i.seq == 3)
        assert _seqs(gone) == [1, 2]
        # The last one leaving leaves nothing kept.
        await trio.sleep(HIBERNATE_AFTER + 1)
        board.unsubscribe(conv, stays)
        assert board.dormant_conversations == 0
        assert not board.is_in_memory(conv)


async def test_a_session_from_a_dormant_conversation_keeps_its_actor(
    autojump_clock: object,
) -> None:
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        outcome = await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        assert isinstance(outcome, Accepted) and outcome.seq == 3
        # The user hears the session open (its own message excepted: not sent by a client).
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 4)
        await trio.sleep(HIBERNATE_AFTER * 3)
        assert board.is_in_memory(conv)
        assert board.dormant_conversations == 0


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


async def test_a_silent_connected_users_actor_is_freed_at_once(autojump_clock: object) -> None:
    """Its kept clients do not point back at the actor that left."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        gc.collect()
        gc.disable()
        try:
            users = []
            for n in range(50):
                conv, user = await open_watched(board, "demo", user_id=f"u{n}")
                assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
                users.append(user)
            assert _actors(board) == 50
            await trio.sleep(HIBERNATE_AFTER + 1)
            assert board.active_conversations == 0
            assert board.dormant_conversations == 50
            assert _actors(board) <= 1
        finally:
            gc.enable()


def _actors(board: Switchboard) -> int:
    """The actors of ``board`` still allocated (other tests' may linger)."""
    return sum(
        isinstance(o, ConversationActor) and o.context is board.context for o in gc.get_objects()
    )


async def test_a_client_arriving_with_the_wake_up_is_not_lost(autojump_clock: object) -> None:
    """The wake-up that lets a conversation go and a client subscribing come in the same
    tick, the wake-up first: the client is kept and gets what follows."""
    async with running(BotSettings(), hibernate_after=HIBERNATE_AFTER) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 2)
        await trio.testing.wait_all_tasks_blocked()
        # The actor's own wake-up comes due in this same tick; the one posted here is first
        # in its inbox either way, and the client second.
        await trio.sleep(HIBERNATE_AFTER)
        assert board.is_in_memory(conv)
        (actor,) = (
            o
            for o in gc.get_objects()
            if isinstance(o, ConversationActor) and o.context is board.context and not o.retired
        )
        actor.wake()
        late = RecordingSink()
        board.subscribe(conv, late)
        await trio.testing.wait_all_tasks_blocked()
        board.post(conv, BotSays((Content.text("news"),)))
        await user.wait_for(lambda i: isinstance(i, Entry) and i.seq == 3)
        await late.wait_for(lambda i: isinstance(i, Entry) and i.seq == 3)
