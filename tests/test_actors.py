"""The conversation actors, the desk and supervision, on trio's MockClock.

``autojump_clock`` makes an hour pass in milliseconds of real time, so deadlines are checked
to the millisecond against ``trio.current_time()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from actors import (
    IDLE_TIMEOUT,
    QUEUE_TIMEOUT,
    SESSION_EXPIRED,
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotEvent,
    BotSettings,
    Content,
    Delivery,
    Desk,
    Entry,
    Presence,
    Refused,
    RestartPolicy,
    Switchboard,
    Transcript,
    UserSays,
    UserTyping,
    open_switchboard,
)

from .conftest import EchoBot, RecordingSink, notice

HOUR = 3600.0


class ClockedBot(EchoBot):
    """An echo bot that notes when each event arrived, by trio's clock."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        self.times.append(trio.current_time())
        return await super().on_event(event)

    async def expiry(self) -> tuple[BotEvent, float]:
        with trio.fail_after(10 * HOUR):
            while True:
                for event, at in zip(self.events, self.times, strict=True):
                    if event.content.is_payload(SESSION_EXPIRED):
                        return event, at
                await self.wait_for_events(len(self.events) + 1, timeout=10 * HOUR)


@asynccontextmanager
async def running(
    settings: BotSettings, bot: EchoBot | None = None, **options: object
) -> AsyncIterator[tuple[Switchboard, Desk]]:
    desk = Desk(
        {"demo": settings},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=1),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=1),
        ],
    )
    binding = BotBinding(bot or EchoBot(), settings)
    async with open_switchboard({"demo": binding}, {"desk": desk}, **options) as board:
        yield board, desk


async def start_session(board: Switchboard) -> tuple[str, float]:
    state = await board.open_conversation("demo")
    outcome = await board.ask(state.conversation_id, UserSays(Content.payload(SESSION_START)))
    assert isinstance(outcome, Accepted)
    return state.conversation_id, trio.current_time()


async def online(desk: Desk, agent_id: str) -> RecordingSink:
    sink = RecordingSink()
    desk.attach(agent_id, sink)
    desk.set_presence(agent_id, Presence.ONLINE)
    return sink


# -- the idle deadline --------------------------------------------------------------------


async def test_expiry_fires_at_the_deadline_to_the_millisecond(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, _):
        conv, started = await start_session(board)
        event, at = await bot.expiry()
    assert abs(at - (started + HOUR)) < 0.001
    assert event.metadata["reason"] == IDLE_TIMEOUT
    assert event.conversation_id == conv


async def test_a_user_message_at_minute_59_pushes_the_deadline_back(
    autojump_clock: object,
) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, _):
        conv, started = await start_session(board)
        await trio.sleep_until(started + 59 * 60)
        assert await board.ask(conv, UserSays(Content.text("still there?"))) == Accepted(4)
        touched = trio.current_time()
        _, at = await bot.expiry()
    assert abs(at - (touched + HOUR)) < 0.001
    assert at > started + HOUR + 58 * 60


async def test_an_agent_reply_resets_the_deadline(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, desk):
        conv, started = await start_session(board)
        agent = await online(desk, "alice")
        await agent.wait_for(lambda item: isinstance(item, Transcript))
        await trio.sleep_until(started + 30 * 60)
        outcome = await board.ask(conv, AgentSays("alice", Content.text("I am here")))
        assert isinstance(outcome, Accepted)
        replied = trio.current_time()
        _, at = await bot.expiry()
        await agent.wait_for(notice("session_expired"))
    assert abs(at - (replied + HOUR)) < 0.001


async def test_typing_does_not_reset_the_deadline(autojump_clock: object) -> None:
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=HOUR), bot) as (board, _):
        conv, started = await start_session(board)
        await trio.sleep_until(started + 59 * 60)
        assert await board.ask(conv, UserTyping()) == Accepted()
        _, at = await bot.expiry()
    assert abs(at - (started + HOUR)) < 0.001


async def test_the_queue_timeout_ends_a_waiting_session(autojump_clock: object) -> None:
    bot = ClockedBot()
    settings = BotSettings(session_timeout=HOUR, queue_timeout=300.0)
    async with running(settings, bot) as (board, desk):
        conv, started = await start_session(board)
        user = RecordingSink()
        board.subscribe(conv, user, after_seq=0)
        event, at = await bot.expiry()
        await user.wait_for(notice("session_expired"))
        assert desk.status_of("alice").queue == ()
    assert abs(at - (started + 300.0)) < 0.001
    assert event.metadata["reason"] == QUEUE_TIMEOUT


async def test_many_sessions_with_one_deadline_all_expire_on_time(autojump_clock: object) -> None:
    """More simultaneous expiries than one alarm batch: each still fires at its deadline
    (the mock clock does not advance while there is work to do)."""
    bot = ClockedBot()
    async with running(BotSettings(session_timeout=60.0), bot, expiry_batch=8) as (board, _):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(start_session, board)
        started = trio.current_time()
        with trio.fail_after(120):
            while sum(e.content.is_payload(SESSION_EXPIRED) for e in bot.events) < 50:
                await bot.wait_for_events(len(bot.events) + 1, timeout=120)
    expiries = [
        at
        for e, at in zip(bot.events, bot.times, strict=True)
        if e.content.is_payload(SESSION_EXPIRED)
    ]
    assert all(abs(at - (started + 60.0)) < 0.001 for at in expiries)


# -- agents leaving -----------------------------------------------------------------------


async def test_disconnected_agent_grace_period_then_back_to_the_head_of_the_queue(
    autojump_clock: object,
) -> None:
    settings = BotSettings(session_timeout=HOUR, grace_period=30.0)
    async with running(settings) as (board, desk):
        alice = await online(desk, "alice")
        first, _ = await start_session(board)
        await alice.wait_for(lambda item: isinstance(item, Transcript))
        second, _ = await start_session(board)  # alice is full: it waits
        user = RecordingSink()
        board.subscribe(first, user)
        desk.detach("alice", alice)
        left_at = trio.current_time()
        await user.wait_for(notice("agent_left"), timeout=60)
        assert trio.current_time() - left_at >= 30.0
        status = desk.status_of("bob")
        assert [w.conversation_id for w in status.queue] == [first, second]
        bob = await online(desk, "bob")
        transcript = await bob.wait_for(lambda item: isinstance(item, Transcript))
        assert isinstance(transcript, Transcript) and transcript.conversation_id == first


# -- supervision --------------------------------------------------------------------------


class FaultySink(RecordingSink):
    """A client whose delivery raises: ``failures`` times, or forever when ``None``."""

    def __init__(self, failures: int | None) -> None:
        super().__init__()
        self.failures = failures

    def deliver(self, item: Delivery) -> None:
        if self.failures is None or self.failures > 0:
            if self.failures is not None:
                self.failures -= 1
            raise RuntimeError("the client broke")
        super().deliver(item)


async def test_a_crash_restarts_that_conversation_from_its_last_state_while_others_flow(
    autojump_clock: object,
) -> None:
    async with running(BotSettings()) as (board, _):
        broken = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(broken, UserSays(Content.text("one"))) == Accepted(1)
        board.subscribe(broken, FaultySink(failures=1))
        others = [(await board.open_conversation("demo")).conversation_id for _ in range(1000)]
        outcomes: list[object] = []

        async def chat(conv: str) -> None:
            for word in ("a", "b"):
                outcomes.append(await board.ask(conv, UserSays(Content.text(word))))

        async with trio.open_nursery() as nursery:
            for conv in others:
                nursery.start_soon(chat, conv)
            crashed = await board.ask(broken, UserSays(Content.text("two")))
        assert isinstance(crashed, Refused) and crashed.code == "internal_error"
        assert board.stats.restarts == 1
        assert len(outcomes) == 2000 and all(isinstance(o, Accepted) for o in outcomes)
        # The crash came after "two" was recorded: the restarted actor resumes from that
        # state, so numbering goes on without a gap or a repeat.
        assert await board.ask(broken, UserSays(Content.text("three"))) == Accepted(4)
        entries = await board.store.entries_after(broken, 0)
        texts = [e.content.text_value for e in entries]
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert texts.count("two") == 1 and "three" in texts
        assert board.stats.escalations == 0


async def test_failures_past_the_limit_escalate_and_the_store_has_the_last_word(
    autojump_clock: object,
) -> None:
    policy = RestartPolicy(max_restarts=2, window=60.0)
    async with running(BotSettings(), restart_policy=policy) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        healthy = (await board.open_conversation("demo")).conversation_id
        board.subscribe(conv, FaultySink(failures=None))
        for attempt in range(3):
            outcome = await board.ask(conv, UserSays(Content.text(f"try {attempt}")))
            assert isinstance(outcome, Refused) and outcome.code == "internal_error"
        # The third failure was one too many: the actor gave up as it answered.
        assert board.stats.escalations == 1
        assert board.stats.restarts == 2
        assert not board.is_in_memory(conv)
        assert await board.ask(healthy, UserSays(Content.text("fine"))) == Accepted(1)
        # The next event rebuilds the conversation from the store, without the broken client.
        assert await board.ask(conv, UserSays(Content.text("again"))) == Accepted(4)
        assert board.is_in_memory(conv)


# -- hibernation --------------------------------------------------------------------------


async def test_an_idle_conversation_hibernates_and_comes_back_from_the_store(
    autojump_clock: object,
) -> None:
    bot = ClockedBot()
    async with running(BotSettings(), bot, hibernate_after=600.0) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, UserSays(Content.text("hello"))) == Accepted(1)
        await bot.wait_for_events(1)
        await trio.sleep(300)
        assert board.is_in_memory(conv)
        await trio.sleep(301)
        assert not board.is_in_memory(conv)
        assert board.stats.hibernated == 1
        user = RecordingSink()
        board.subscribe(conv, user, after_seq=0)
        assert await board.ask(conv, UserSays(Content.text("back"))) == Accepted(3)
        assert board.is_in_memory(conv)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "echo: back")
        assert [e.seq for e in user.entries()][:3] == [1, 2, 3]


async def test_a_conversation_with_a_session_never_hibernates(autojump_clock: object) -> None:
    async with running(BotSettings(session_timeout=HOUR), hibernate_after=60.0) as (board, _):
        conv, _ = await start_session(board)
        await trio.sleep(30 * 60)
        assert board.is_in_memory(conv)
