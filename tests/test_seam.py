"""The seam between a conversation and its backend and bot, under failures.

Each test injects one fault at the seam (a client that raises, a backend that raises, a
store that refuses, a bot that cannot be reached, a desk or alarms task that dies) and checks
the promise that must survive it: committed means accepted, the desk follows the
conversation, every session ends exactly once and its ending reaches the bot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from actors import (
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentRequest,
    AgentSays,
    BotBinding,
    BotEvent,
    BotSettings,
    Clock,
    Content,
    ConversationState,
    Delivery,
    Desk,
    Entry,
    MemoryStore,
    Party,
    Presence,
    Refusal,
    RestartPolicy,
    StoreUnavailable,
    Switchboard,
    UserSays,
    open_switchboard,
)
from actors.model.events import AgentAssigned

from .conftest import EchoBot, RecordingSink, notice, open_watched

SETTINGS = BotSettings(session_timeout=3600.0, grace_period=30.0)


class AbandonableSink(RecordingSink):
    """A client that raises on its first ``failures`` deliveries and records being closed."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures = failures
        self.abandoned = False

    def deliver(self, item: Delivery) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("the client broke")
        super().deliver(item)

    def abandon(self) -> None:
        self.abandoned = True


class SwitchableStore(MemoryStore):
    """A memory store that refuses writes (``StoreUnavailable``) or breaks (``RuntimeError``)
    for one conversation on command, and counts the attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing: str | None = None
        self.breaking: str | None = None
        self.attempts = 0

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        if state.conversation_id in (self.refusing, self.breaking):
            self.attempts += 1
            if state.conversation_id == self.refusing:
                raise StoreUnavailable("the disk is full")
            raise RuntimeError("the store broke")
        await super().record(state, entries)


class FlakyDesk(Desk):
    """The built-in desk whose ``request_agent`` raises ``failures`` times first."""

    failures = 0

    def request_agent(self, request: AgentRequest) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the backend is down")
        super().request_agent(request)


class UnreachableBot(EchoBot):
    """A bot that cannot be reached while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.attempts = 0

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        self.attempts += 1
        if self.down:
            raise ConnectionError("the bot is not connected")
        return await super().on_event(event)


def make_desk(kind: type[Desk] = Desk) -> Desk:
    return kind(
        {"demo": SETTINGS},
        [
            AgentProfile("alice", "Alice", frozenset({"demo"}), capacity=1),
            AgentProfile("bob", "Bob", frozenset({"demo"}), capacity=1),
        ],
    )


@asynccontextmanager
async def running(
    *,
    desk: Desk | None = None,
    bot: EchoBot | None = None,
    store: MemoryStore | None = None,
    **options: object,
) -> AsyncIterator[tuple[Switchboard, Desk]]:
    desk = desk or make_desk()
    bots = {"demo": BotBinding(bot or EchoBot(), SETTINGS)}
    async with open_switchboard(bots, {"desk": desk}, store, **options) as board:  # type: ignore[arg-type]
        yield board, desk


async def online(desk: Desk, agent_id: str) -> RecordingSink:
    sink = RecordingSink()
    desk.attach(agent_id, sink)
    desk.set_presence(agent_id, Presence.ONLINE)
    return sink


async def open_session(board: Switchboard, user: RecordingSink | None = None) -> str:
    conv = (await board.open_conversation("demo")).conversation_id
    if user is not None:
        board.subscribe(conv, user)
    assert isinstance(await board.ask(conv, UserSays(Content.payload(SESSION_START))), Accepted)
    return conv


def joined(item: Delivery) -> bool:
    return isinstance(item, Entry) and item.content.content.get("code") == "agent_joined"


async def until(predicate: object, *, timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, looking again every 10 ms of trio's clock. Every
    test here runs on the autojump MockClock, so this is virtual time: no wall-clock wait,
    and what it waits for (the desk's own task) has no event of its own to wait on."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


# -- 1. the ghost in the queue -------------------------------------------------------------


async def test_a_session_sent_back_to_the_queue_as_it_ends_leaves_no_ghost(
    autojump_clock: object,
) -> None:
    async with running() as (board, desk):
        user = RecordingSink()
        conv = await open_session(board, user)
        alice = await online(desk, "alice")
        await alice.wait_for(joined)
        session_id = f"{conv}/1"
        # The agent sends the chat back to the queue while the user ends the session: the
        # desk requeues it before it hears of the end, and the conversation hears of the
        # requeue only after the end.
        board.submit(conv, UserSays(Content.payload(SESSION_END)))
        desk.transfer(conv, session_id, "alice", None)
        await user.wait_for(notice("session_ended"))
        await until(lambda: desk.queue_length == 0)
        # The next session is routed at once, to the agent who is free.
        assert isinstance(await board.ask(conv, UserSays(Content.payload(SESSION_START))), Accepted)
        bob = await online(desk, "bob")
        await until(lambda: desk.holds("alice", conv) or desk.holds("bob", conv), timeout=1.0)
        assert bob is not None


async def test_a_grace_period_that_ends_as_the_session_expires_leaves_no_ghost(
    autojump_clock: object,
) -> None:
    settings = BotSettings(session_timeout=60.0, grace_period=60.0)
    desk = Desk({"demo": settings}, [AgentProfile("alice", "Alice", frozenset({"demo"}), 1)])
    async with open_switchboard({"demo": BotBinding(EchoBot(), settings)}, {"desk": desk}) as board:
        user = RecordingSink()
        await open_session(board, user)
        alice = await online(desk, "alice")
        await alice.wait_for(joined)
        desk.detach("alice", alice)  # the grace period ends when the session expires
        await user.wait_for(notice("session_expired"), timeout=120)
        await until(lambda: desk.queue_length == 0, timeout=120)


# -- 2. effects after a commit ---------------------------------------------------------------


async def test_a_client_that_raises_as_a_session_opens_loses_nothing(
    autojump_clock: object,
) -> None:
    async with running() as (board, desk):
        conv = (await board.open_conversation("demo")).conversation_id
        broken = AbandonableSink(failures=1)
        healthy = RecordingSink()
        board.subscribe(conv, broken)
        board.subscribe(conv, healthy)
        outcome = await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        # Stored, so accepted: the broken client is closed (it resumes by seq), the others
        # and the desk hear everything.
        assert outcome == Accepted(1)
        assert broken.abandoned
        await healthy.wait_for(notice("session_started"))
        alice = await online(desk, "alice")
        await alice.wait_for(joined)
        await healthy.wait_for(notice("agent_joined"))
        assert broken.items == []


async def test_a_backend_that_raises_is_asked_again_with_backoff(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    desk = make_desk(FlakyDesk)
    assert isinstance(desk, FlakyDesk)
    desk.failures = 3
    async with running(desk=desk) as (board, _):
        alice = await online(desk, "alice")
        user = RecordingSink()
        with caplog.at_level(logging.WARNING, "switchover.conversation"):
            conv = await open_session(board, user)
            await alice.wait_for(joined, timeout=60)
        assert desk.holds("alice", conv)
        # Logged once when it started failing, not once per attempt.
        assert sum("retrying with backoff" in r.message for r in caplog.records) == 1
        # A second START is not refused as if a session were stuck half-open.
        reply = await board.ask(conv, AgentSays("alice", Content.text("hi")))
        assert isinstance(reply, Accepted)


# -- 3. escalation keeps healthy clients ------------------------------------------------------


async def test_a_rebuilt_conversation_keeps_its_healthy_clients(autojump_clock: object) -> None:
    store = SwitchableStore()
    policy = RestartPolicy(max_restarts=1, window=60.0)
    async with running(store=store, restart_policy=policy) as (board, _):
        conv, client = await open_watched(board, "demo")
        store.breaking = conv
        for _ in range(2):
            outcome = await board.ask(conv, UserSays(Content.text("boom")))
            assert isinstance(outcome, Refusal) and outcome.code == "internal_error"
        assert board.stats.escalations == 1
        store.breaking = None
        assert await board.ask(conv, UserSays(Content.text("hello"))) == Accepted(1)
        # The client still hears the conversation: the bot's answer reaches it.
        await client.wait_for(
            lambda i: isinstance(i, Entry) and i.content.text_value == "echo: hello"
        )


# -- 4. stored means accepted, once ---------------------------------------------------------


async def test_a_resent_message_id_is_answered_with_its_first_ack_and_stored_once(
    autojump_clock: object,
) -> None:
    async with running() as (board, _):
        conv = (await board.open_conversation("demo")).conversation_id
        first = await board.ask(conv, UserSays(Content.text("once")), message_id="user:m1")
        again = await board.ask(conv, UserSays(Content.text("once")), message_id="user:m1")
        assert first == again == Accepted(1)
        # Twice in one group: still one entry.
        outcomes: list[object] = []
        for _ in range(2):
            board.submit(conv, UserSays(Content.text("twice")), outcomes.append, message_id="m2")
        await until(lambda: len(outcomes) == 2)
        assert outcomes[0] == outcomes[1]
        # The same id with another message is a client that reused an id: taken as new.
        reused = await board.ask(conv, UserSays(Content.text("other")), message_id="user:m1")
        assert isinstance(reused, Accepted) and reused != first
        texts = [e.content.text_value for e in await board.store.entries_after(conv, 0)]
        assert texts.count("once") == 1 and texts.count("twice") == 1
        assert texts.count("other") == 1


# -- 5. a refused expiry backs off -----------------------------------------------------------


async def test_a_refused_expiry_is_retried_with_backoff_then_expires(
    autojump_clock: object, caplog: pytest.LogCaptureFixture
) -> None:
    store = SwitchableStore()
    bot = EchoBot()
    async with running(store=store, bot=bot) as (board, _):
        conv = await open_session(board)
        store.refusing = conv
        with caplog.at_level(logging.ERROR, "switchover.conversation"):
            await trio.sleep(3600.0 + 120.0)
        # Two minutes past the deadline: a handful of tries, not thousands.
        assert 3 <= store.attempts <= 15
        assert sum("refused a write" in r.message for r in caplog.records) == 1
        store.refusing = None
        await trio.sleep(31.0)
        expired = [e for e in bot.events if e.content.is_payload(SESSION_EXPIRED)]
        assert len(expired) == 1 and expired[0].sender is Party.SYSTEM


# -- 7. endings reach a bot that was away ---------------------------------------------------


async def test_an_expiry_while_the_bot_is_away_reaches_it_once_it_is_back(
    autojump_clock: object,
) -> None:
    """The deadline passes while the server is down, and the bot cannot be reached when it
    starts again: the EXPIRED is not dropped, it reaches the bot when it is back."""
    store = MemoryStore()
    async with running(store=store) as (board, _):
        conv = await open_session(board)
        stopped_at = board.clock.now()
    # The server is down past the deadline.
    restarted = Clock(wall_at_start=stopped_at + 2 * 3600.0)
    bot = UnreachableBot()
    bot.down = True
    async with running(store=store, bot=bot, clock=restarted):
        await until(lambda: bot.attempts >= 3, timeout=600)
        assert bot.events == []
        bot.down = False
        (event,) = await bot.wait_for_events(1, timeout=120)
        assert event.content.is_payload(SESSION_EXPIRED) and event.sender is Party.SYSTEM
        assert event.conversation_id == conv
        assert await store.bot_backlog() == []


async def test_a_user_message_the_bot_cannot_take_is_answered_unavailable(
    autojump_clock: object,
) -> None:
    bot = UnreachableBot()
    bot.down = True
    async with running(bot=bot) as (board, _):
        conv, user = await open_watched(board, "demo")
        await board.ask(conv, UserSays(Content.text("anyone?")))
        await user.wait_for(
            lambda i: isinstance(i, Entry) and i.metadata.get("code") == "bot_unavailable"
        )
        assert bot.attempts == 1


# -- 9. the desk and the alarms are supervised ------------------------------------------------


class CrashOnceDesk(Desk):
    """A desk whose task dies once, on the first claim it is asked to make."""

    crashed = False

    def claim(self, agent_id: str, conversation_id: str) -> None:
        if not self.crashed:
            self.crashed = True
            self._send.send_nowait(object())  # type: ignore[arg-type]
        else:
            super().claim(agent_id, conversation_id)


async def test_a_desk_that_dies_is_restarted_and_rebuilt_from_the_conversations(
    autojump_clock: object,
) -> None:
    desk = make_desk(CrashOnceDesk)
    async with running(desk=desk) as (board, _):
        waiting = await open_session(board)
        alice = await online(desk, "alice")
        held = (await alice.wait_for(joined)).conversation_id  # type: ignore[union-attr]
        queued = await open_session(board)
        desk.claim("bob", queued)  # kills the desk task once
        await until(lambda: desk.queue_length == 1 and desk.holds("alice", held))
        assert held == waiting
        bob = await online(desk, "bob")
        await bob.wait_for(joined)
        assert desk.holds("bob", queued)


class BrokenSleeper:
    def wake(self) -> None:
        raise RuntimeError("a broken wake-up")


async def test_the_alarms_restart_and_every_deadline_still_fires(autojump_clock: object) -> None:
    bot = EchoBot()
    async with running(bot=bot) as (board, _):
        await open_session(board)
        start = trio.current_time()
        board.alarms.wake_at(trio.current_time() + 10.0, BrokenSleeper())
        await trio.sleep(20.0)
        (event,) = await bot.wait_for_events(1, timeout=2 * 3600.0)
        assert event.content.is_payload(SESSION_EXPIRED)
        assert trio.current_time() - start == pytest.approx(3600.0, abs=1.0)


async def test_an_assignment_for_an_ended_session_is_released(autojump_clock: object) -> None:
    async with running() as (board, desk):
        conv = await open_session(board)
        assert isinstance(await board.ask(conv, UserSays(Content.payload(SESSION_END))), Accepted)
        board.post(conv, AgentAssigned(f"{conv}/1", "alice", "Alice"))
        await until(lambda: desk.queue_length == 0)
        await trio.testing.wait_all_tasks_blocked()
        assert not desk.holds("alice", conv) and desk.queue_length == 0


class GatedBot(EchoBot):
    """An echo bot that answers only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = trio.Event()

    async def on_event(self, event: BotEvent) -> Sequence[Content]:
        await self.release.wait()
        return await super().on_event(event)


async def test_a_bot_answer_lost_to_a_crash_is_asked_for_again(autojump_clock: object) -> None:
    store = SwitchableStore()
    bot = GatedBot()
    policy = RestartPolicy(max_restarts=0, window=60.0)
    async with running(store=store, bot=bot, restart_policy=policy) as (board, _):
        conv, user = await open_watched(board, "demo")
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        store.breaking = conv  # the answer's write fails: the conversation is rebuilt
        bot.release.set()
        await until(lambda: board.stats.escalations == 1)
        store.breaking = None
        # The bot is asked again (same event id) and its answer reaches the user once.
        await user.wait_for(lambda i: isinstance(i, Entry) and i.content.text_value == "echo: hi")
        assert [e.event_id for e in bot.events] == [f"{conv}:1", f"{conv}:1"]
        texts = [e.content.text_value for e in await store.entries_after(conv, 0)]
        assert texts == ["hi", "echo: hi"]
        assert await store.bot_backlog() == []
