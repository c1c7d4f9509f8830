"""The conversation actors, the desk and supervision, on trio's MockClock.

``autojump_clock`` makes an hour pass in milliseconds of real time, so deadlines are checked
to the millisecond against ``trio.current_time()``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

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
    ConversationState,
    Delivery,
    Desk,
    DeskStatus,
    Entry,
    MemoryStore,
    Party,
    Presence,
    Refusal,
    RestartPolicy,
    StoreUnavailable,
    Switchboard,
    Transcript,
    UserSays,
    UserTyping,
    open_switchboard,
)

from .conftest import EchoBot, RecordingSink, StallingBot, notice, open_watched

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
    store = options.pop("store", None)
    assert store is None or isinstance(store, MemoryStore)
    async with open_switchboard({"demo": binding}, {"desk": desk}, store, **options) as board:
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
        assert await board.ask(conv, UserSays(Content.text("still there?"))) == Accepted(3)
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


# -- the roster of colleagues -------------------------------------------------------------


async def test_each_view_lists_the_colleagues_who_could_take_a_transfer() -> None:
    settings = BotSettings(session_timeout=HOUR)
    desk = Desk(
        {"demo": settings, "other": settings},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=1),
            AgentProfile("bob", "Bob", frozenset({"demo", "other"}), capacity=2),
            AgentProfile("carol", "Carol", frozenset({"other"}), capacity=1),
        ],
    )
    binding = BotBinding(EchoBot(), settings)
    async with open_switchboard({"demo": binding}, {"desk": desk}) as board:
        bob = RecordingSink()
        desk.attach("bob", bob)

        def roster(item: Delivery) -> dict[str, tuple[str, int]] | None:
            if not isinstance(item, DeskStatus) or item.agent_id != "bob":
                return None
            return {c.agent_id: (c.presence, c.free_slots) for c in item.colleagues}

        # Bob sees both colleagues, offline until they connect; never himself.
        first = await bob.wait_for(lambda item: roster(item) is not None)
        assert roster(first) == {"alice": ("offline", 1), "carol": ("offline", 1)}
        assert [c.agent_id for c in desk.status_of("alice").colleagues] == ["bob"]

        alice = await online(desk, "alice")
        await bob.wait_for(lambda item: (roster(item) or {}).get("alice") == ("online", 1))
        await start_session(board)
        await alice.wait_for(lambda item: isinstance(item, Transcript))
        await bob.wait_for(lambda item: (roster(item) or {}).get("alice") == ("online", 0))
        desk.detach("alice", alice)
        await bob.wait_for(lambda item: (roster(item) or {}).get("alice") == ("offline", 0))


# -- supervision --------------------------------------------------------------------------


class CrashingStore(MemoryStore):
    """A store whose writes for some conversations raise an unexpected error: ``crashes``
    maps a conversation id to how many more writes fail (``None``: every one)."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes: dict[str, int | None] = {}

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        left = self.crashes.get(state.conversation_id, 0)
        if left is None or left > 0:
            if left is not None:
                self.crashes[state.conversation_id] = left - 1
            raise RuntimeError("the store broke")
        await super().record(state, entries)


async def test_a_crash_restarts_that_conversation_from_its_last_state_while_others_flow(
    autojump_clock: object,
) -> None:
    store = CrashingStore()
    async with running(BotSettings(), store=store) as (board, _):
        broken = (await board.open_conversation("demo")).conversation_id
        user = RecordingSink()
        board.subscribe(broken, user)
        assert await board.ask(broken, UserSays(Content.text("one"))) == Accepted(1)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "echo: one")
        store.crashes[broken] = 1
        others = [(await board.open_conversation("demo")).conversation_id for _ in range(1000)]
        outcomes: list[object] = []

        async def chat(conv: str) -> None:
            for word in ("a", "b"):
                outcomes.append(await board.ask(conv, UserSays(Content.text(word))))

        async with trio.open_nursery() as nursery:
            for conv in others:
                nursery.start_soon(chat, conv)
            crashed = await board.ask(broken, UserSays(Content.text("two")))
        assert isinstance(crashed, Refusal) and crashed.code == "internal_error"
        assert board.stats.restarts == 1
        assert len(outcomes) == 2000 and all(isinstance(o, Accepted) for o in outcomes)
        # Nothing of "two" was stored: the restarted actor resumes from the last commit, so
        # numbering goes on without a gap or a repeat.
        assert await board.ask(broken, UserSays(Content.text("two"))) == Accepted(3)
        entries = await board.store.entries_after(broken, 0)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert [e.content.text_value for e in entries].count("two") == 1
        assert board.stats.escalations == 0


async def test_failures_past_the_limit_escalate_and_the_store_has_the_last_word(
    autojump_clock: object,
) -> None:
    policy = RestartPolicy(max_restarts=2, window=60.0)
    store = CrashingStore()
    async with running(BotSettings(), restart_policy=policy, store=store) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        healthy = (await board.open_conversation("demo")).conversation_id
        store.crashes[conv] = None
        for attempt in range(3):
            outcome = await board.ask(conv, UserSays(Content.text(f"try {attempt}")))
            assert isinstance(outcome, Refusal) and outcome.code == "internal_error"
        # The third failure was one too many: the actor gave up as it answered.
        assert board.stats.escalations == 1
        assert board.stats.restarts == 2
        assert await board.ask(healthy, UserSays(Content.text("fine"))) == Accepted(1)
        # It is rebuilt from the store, which has the last word.
        store.crashes[conv] = 0
        assert await board.ask(conv, UserSays(Content.text("again"))) == Accepted(1)
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


# -- one store write per group of waiting events ------------------------------------------


class CountingStore(MemoryStore):
    """A memory store that counts writes and can be told to refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.records = 0
        self.refuse = False

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        await trio.lowlevel.checkpoint()  # a real store waits for its commit
        if self.refuse:
            raise StoreUnavailable("the disk is full")
        self.records += 1
        await super().record(state, entries)


async def test_events_waiting_together_share_one_store_write_and_keep_their_order() -> None:
    store = CountingStore()
    async with running(BotSettings(), store=store) as (board, _):
        conv, user = await open_watched(board, "demo")
        await board.ask(conv, UserSays(Content.text("warm up")))
        outcomes: list[object] = []
        done = trio.Event()

        def reply(outcome: object) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 5:
                done.set()

        for n in range(5):  # all waiting before the actor runs again
            board.submit(conv, UserSays(Content.text(f"m{n}")), reply)
        with trio.fail_after(5):
            await done.wait()
        seqs = [getattr(o, "seq", None) for o in outcomes]
        assert all(isinstance(o, Accepted) for o in outcomes) and seqs == sorted(set(seqs))  # type: ignore[type-var]
        stored = {e.seq: e.content.text_value for e in await store.entries_after(conv, 0)}
        assert [stored[seq] for seq in seqs] == [f"m{n}" for n in range(5)]  # type: ignore[index]
        user_texts = [e.content.text_value for e in user.entries() if e.sender.value == "user"]
        assert user_texts == ["warm up"] + [f"m{n}" for n in range(5)]


async def test_a_group_is_written_once() -> None:
    store = CountingStore()
    async with running(BotSettings(), store=store) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        before = store.records
        done = trio.Event()
        outcomes: list[object] = []

        def reply(outcome: object) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 4:
                done.set()

        for n in range(4):  # queued session: nothing goes to the bot, nothing else writes
            board.submit(conv, UserSays(Content.text(f"q{n}")), reply)
        with trio.fail_after(5):
            await done.wait()
        assert all(isinstance(o, Accepted) for o in outcomes)
        assert store.records - before == 1


async def test_a_refused_write_refuses_the_whole_group_and_nothing_is_delivered() -> None:
    store = CountingStore()
    async with running(BotSettings(), store=store) as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        user = RecordingSink()
        board.subscribe(conv, user)
        seen = len(user.items)
        store.refuse = True
        outcomes: list[object] = []
        done = trio.Event()

        def reply(outcome: object) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 3:
                done.set()

        for n in range(3):
            board.submit(conv, UserSays(Content.text(f"lost {n}")), reply)
        with trio.fail_after(5):
            await done.wait()
        assert [getattr(o, "code", None) for o in outcomes] == ["store_unavailable"] * 3
        # Nothing numbered reached the user (a queue position, which is not stored, may).
        assert [i for i in user.items[seen:] if isinstance(i, Entry)] == []
        store.refuse = False
        # The state is the last stored one: numbering goes on without a gap.
        last = await board.ask(conv, UserSays(Content.text("kept")))
        stored = await store.entries_after(conv, 0)
        assert last == Accepted(stored[-1].seq) and [e.seq for e in stored] == list(
            range(1, len(stored) + 1)
        )


async def test_a_pickup_in_a_group_shows_the_transcript_up_to_it_and_the_rest_live() -> None:
    async with running(BotSettings()) as (board, desk):
        conv, _ = await start_session(board)
        alice = RecordingSink()
        desk.attach("alice", alice)
        board.submit(conv, UserSays(Content.text("before")))
        desk.set_presence("alice", Presence.ONLINE)
        # The assignment and this message may wait in the inbox together.
        board.submit(conv, UserSays(Content.text("after")))
        transcript = await alice.wait_for(lambda item: isinstance(item, Transcript))
        assert isinstance(transcript, Transcript)
        assert isinstance(await board.ask(conv, UserSays(Content.text("third"))), Accepted)
        await alice.wait_for(
            lambda item: isinstance(item, Entry) and item.content.text_value == "third"
        )
        in_transcript = [e.content.text_value for e in transcript.entries]
        live = [e.content.text_value for e in alice.entries()]
        for text in ("before", "after"):
            assert (in_transcript + live).count(text) == 1, (text, in_transcript, live)


async def test_an_event_the_bot_never_answered_is_handed_over_again_after_a_restart() -> None:
    """A second switchboard on the same store is a restarted server: the event whose answer
    never came is delivered again, with the same id; answered and failed ones are not."""
    store = MemoryStore()
    stalling = StallingBot()
    bots = {"demo": BotBinding(stalling, BotSettings())}
    async with open_switchboard(bots, None, store) as board:
        hung, answered, failed = [
            (await board.open_conversation("demo")).conversation_id for _ in range(3)
        ]
        for conv, text in ((hung, "hang"), (answered, "hi"), (failed, "fail")):
            user = RecordingSink()
            board.subscribe(conv, user)
            assert isinstance(await board.ask(conv, UserSays(Content.text(text))), Accepted)
            if conv != hung:
                # The bot's answer (or the notice that it is unavailable) is stored.
                await user.wait_for(lambda i: isinstance(i, Entry) and i.sender is not Party.USER)
        await stalling.wait_for_events(3)
        owed = [f"{e.conversation_id}:{e.seq}" for e in await store.bot_backlog()]
        assert owed == [stalling.events[0].event_id]

    bot = EchoBot()
    async with open_switchboard({"demo": BotBinding(bot, BotSettings())}, None, store) as board:
        (again,) = await bot.wait_for_events(1)
        assert again.event_id == stalling.events[0].event_id
        assert again.conversation_id == hung and again.content.text_value == "hang"
        user = RecordingSink()
        board.subscribe(hung, user, after_seq=0)
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "echo: hang")
        assert await store.bot_backlog() == []
        # Nothing else was owed: the next event the bot sees is a new one.
        await board.ask(answered, UserSays(Content.text("next")))
        events = await bot.wait_for_events(2)
        assert [e.content.text_value for e in events] == ["hang", "next"]


async def test_a_backend_that_acts_at_start_up_shares_the_restored_conversation() -> None:
    """A livechat backend may speak to a conversation as soon as it runs (a platform reading
    what its agents did while the server was down), before the switchboard has restored the
    open sessions: the conversation still has one actor, so nothing is numbered twice."""
    from actors.model.events import LivechatUnreachable

    store = MemoryStore()
    async with open_switchboard(
        {"demo": BotBinding(EchoBot(), BotSettings())}, None, store
    ) as board:
        conversation_id, user = await open_watched(board, "demo")
        await board.ask(conversation_id, UserSays(Content.payload(SESSION_START)))
        await user.wait_for(notice("session_started"))
    state = await store.load(conversation_id)
    assert state is not None and state.session is not None
    session_id = state.session.session_id

    class EagerDesk(Desk):
        async def run(self, core: Any, *, task_status: trio.TaskStatus[None]) -> None:
            core.post(conversation_id, LivechatUnreachable(session_id))
            await super().run(core, task_status=task_status)

    desk = EagerDesk({"demo": BotSettings()}, [])
    bots = {"demo": BotBinding(EchoBot(), BotSettings())}
    async with open_switchboard(bots, {"desk": desk}, store) as board:
        user = RecordingSink()
        board.subscribe(conversation_id, user, after_seq=0)
        await user.wait_for(notice("livechat_unreachable"))
        for text in ("one", "two"):
            assert isinstance(
                await board.ask(conversation_id, UserSays(Content.text(text))), Accepted
            )
        assert board.stats.started == 1
    seqs = [e.seq for e in await store.entries_after(conversation_id, 0)]
    assert seqs == list(range(1, len(seqs) + 1))
