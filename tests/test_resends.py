"""A client's resend is answered once, from the conversation's log, whatever happened in
between: a server restart (a real SQLite file), a conversation that left memory and came
back (MockClock), any mix of sends, resends and restarts (hypothesis).

A message with an id is stored with it; an actor that did not write the log itself reads
its last ``message_ids`` entries once, when a message carries an id it does not know."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import (
    SESSION_START,
    Accepted,
    AgentProfile,
    AgentSays,
    BotBinding,
    BotSays,
    BotSettings,
    Content,
    Desk,
    Entry,
    MemoryStore,
    Party,
    Presence,
    Switchboard,
    UserSays,
    open_switchboard,
)
from actors.model.effects import Refusal
from actors.ports import StoreUnavailable
from transport.store.sqlite import open_sqlite_store

from .conftest import EchoBot, RecordingSink, notice

SETTINGS = BotSettings(session_timeout=3600.0)
HIBERNATE_AFTER = 30.0


class CountingStore(MemoryStore):
    """The memory store, counting the reads of a conversation's ids (``message_ids``) and
    of its entries (``entries_after``)."""

    def __init__(self) -> None:
        super().__init__()
        self.id_reads = 0
        self.log_reads = 0
        self.refuse_reads = False

    async def message_ids(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        self.id_reads += 1
        if self.refuse_reads:
            raise StoreUnavailable("the disk is gone")
        return await super().message_ids(conversation_id, after_seq)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        self.log_reads += 1
        if self.refuse_reads:
            raise StoreUnavailable("the disk is gone")
        return await super().entries_after(conversation_id, after_seq)


class PlainStore:
    """A store with only what :class:`actors.ports.Store` asks (no ``message_ids``), as an
    embedding application may write: the ids are learnt from its entries."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.load = self.inner.load
        self.record = self.inner.record
        self.entries_after = self.inner.entries_after
        self.open_sessions = self.inner.open_sessions
        self.bot_done = self.inner.bot_done
        self.bot_backlog = self.inner.bot_backlog


@asynccontextmanager
async def core(
    store: object, bot: EchoBot, hibernate_after: float | None = None
) -> AsyncIterator[Switchboard]:
    desk = Desk({"demo": SETTINGS}, [AgentProfile("alice", "Alice", frozenset({"demo"}))])
    async with open_switchboard(
        {"demo": BotBinding(bot, SETTINGS)},
        {"desk": desk},
        store,  # type: ignore[arg-type]
        hibernate_after=hibernate_after,
    ) as board:
        yield board


async def _said(board: Switchboard, conv: str, seq: int) -> None:
    """Wait until entry ``seq`` is stored (the bot's echo, written after the bot answered)."""
    watcher = RecordingSink()
    board.subscribe(conv, watcher, after_seq=seq - 1)
    await watcher.wait_for(lambda item: isinstance(item, Entry) and item.seq == seq)
    board.unsubscribe(conv, watcher)


def _texts(entries: list[Entry]) -> list[str | None]:
    return [e.content.text_value for e in entries if e.sender is Party.USER]


# -- a server restart, on a real SQLite file ------------------------------------------------


async def test_a_resend_after_a_restart_is_answered_with_its_first_seq_and_stored_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "switchover.db"
    hello = UserSays(Content.text("hello"))
    first_bot = EchoBot()
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        core(store, first_bot) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        await _said(board, conv, 2)  # the bot heard it and answered
    # The answer never reached the client: it resends the same message to the new process.
    bot = EchoBot()
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        core(store, bot) as board,
    ):
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        # Again, now that this actor knows the log: the same answer.
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        # The same id with other words is a new message, as it always was.
        reused = UserSays(Content.text("hello again"))
        assert await board.ask(conv, reused, message_id="user:'m1'") == Accepted(3)
        await _said(board, conv, 4)
        entries = await store.entries_after(conv, 0)
    assert _texts(entries) == ["hello", "hello again"]
    assert [e.content.text_value for e in first_bot.events] == ["hello"]
    # The new process's bot heard only the new message, never the resend.
    assert [e.content.text_value for e in bot.events] == ["hello again"]
    assert [e.seq for e in entries] == [1, 2, 3, 4]


async def test_an_agents_resend_after_a_restart_and_its_sign_off(tmp_path: Path) -> None:
    """An agent's message and its one-click sign-off, resent after a restart: each answered
    with the seq it wrote (the sign-off's is the end button offered to the user)."""
    path = tmp_path / "switchover.db"
    message = AgentSays("alice", Content.text("Alice here"))
    sign_off = AgentSays("alice", Content.text("Bye! LIVECHAT_SESSION_END"))
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        core(store, EchoBot()) as board,
    ):
        desk = board.backends["desk"]
        assert isinstance(desk, Desk)
        alice = RecordingSink()
        desk.attach("alice", alice)
        desk.set_presence("alice", Presence.ONLINE)
        conv = (await board.open_conversation("demo")).conversation_id
        await board.ask(conv, UserSays(Content.payload(SESSION_START)))
        await alice.wait_for(notice("agent_joined"))
        said = await board.ask(conv, message, message_id="agent:alice:1")
        offered = await board.ask(conv, sign_off, message_id="agent:alice:2")
        assert isinstance(said, Accepted) and isinstance(offered, Accepted)
        stored = len(await store.entries_after(conv, 0))
    async with (
        open_sqlite_store(path, settings={"demo": SETTINGS}) as store,
        core(store, EchoBot()) as board,
    ):
        desk = board.backends["desk"]
        assert isinstance(desk, Desk)
        desk.attach("alice", RecordingSink())
        desk.set_presence("alice", Presence.ONLINE)
        assert await board.ask(conv, sign_off, message_id="agent:alice:2") == offered
        assert await board.ask(conv, message, message_id="agent:alice:1") == said
        assert len(await store.entries_after(conv, 0)) == stored


# -- leaving memory and coming back (MockClock) ---------------------------------------------


async def test_a_resend_after_the_conversation_left_memory(autojump_clock: object) -> None:
    store = CountingStore()
    bot = EchoBot()
    hello = UserSays(Content.text("hello"))
    async with core(store, bot, HIBERNATE_AFTER) as board:
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        await _said(board, conv, 2)
        # A new conversation's messages never read its log: nothing was stored before.
        assert (store.id_reads, store.log_reads) == (0, 1)  # _said's replay only
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        assert board.is_in_memory(conv)
        # The ids of its last entries, then the entry of the one resent, to compare it.
        assert (store.id_reads, store.log_reads) == (1, 2)
        assert await board.ask(conv, UserSays(Content.text("new")), message_id="user:'m2'") == (
            Accepted(3)
        )
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        # Nothing more for the whole life of the woken actor.
        assert (store.id_reads, store.log_reads) == (1, 2)
        await _said(board, conv, 4)
        assert _texts(await store.entries_after(conv, 0)) == ["hello", "new"]
    assert [e.content.text_value for e in bot.events] == ["hello", "new"]


async def test_a_woken_conversation_without_ids_reads_no_log(autojump_clock: object) -> None:
    store = CountingStore()
    async with core(store, EchoBot(), HIBERNATE_AFTER) as board:
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, UserSays(Content.text("hi"))) == Accepted(1)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        assert await board.ask(conv, UserSays(Content.text("back"))) == Accepted(3)
        assert (store.id_reads, store.log_reads) == (0, 0)
        # A new message with an id reads the ids once, and no entry.
        said = await board.ask(conv, UserSays(Content.text("id")), message_id="user:'m9'")
        assert isinstance(said, Accepted)
        assert (store.id_reads, store.log_reads) == (1, 0)


async def test_a_log_that_cannot_be_read_refuses_the_message_and_stores_nothing(
    autojump_clock: object,
) -> None:
    store = CountingStore()
    hello = UserSays(Content.text("hello"))
    async with core(store, EchoBot(), HIBERNATE_AFTER) as board:
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        store.refuse_reads = True
        refused = await board.ask(conv, hello, message_id="user:'m1'")
        assert isinstance(refused, Refusal) and refused.code == "store_unavailable"
        store.refuse_reads = False
        # The client tries again: the first answer, and still one "hello".
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        store.refuse_reads = True  # read once: never again for this actor
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        store.refuse_reads = False
        # Its ids known but the resent one's entry unreadable: refused as well.
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        said = await board.ask(conv, UserSays(Content.text("b")), message_id="user:'m2'")
        assert said == Accepted(3)
        store.refuse_reads = True
        refused = await board.ask(conv, hello, message_id="user:'m1'")
        assert isinstance(refused, Refusal) and refused.code == "store_unavailable"
        store.refuse_reads = False
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        store.refuse_reads = False
        assert _texts(await store.entries_after(conv, 0)) == ["hello", "b"]


async def test_a_store_without_message_ids_is_read_through_its_entries(
    autojump_clock: object,
) -> None:
    store = PlainStore()
    hello = UserSays(Content.text("hello"))
    async with core(store, EchoBot(), HIBERNATE_AFTER) as board:
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        assert await board.ask(conv, hello, message_id="user:'m1'") == Accepted(1)
        other = UserSays(Content.text("other words"))
        assert await board.ask(conv, other, message_id="user:'m1'") == Accepted(3)
        assert _texts(await store.entries_after(conv, 0)) == ["hello", "other words"]


async def test_a_bots_push_resent_after_it_left_memory(autojump_clock: object) -> None:
    """A push of two messages is answered with the seq of the last; resent, the same."""
    store = MemoryStore()
    push = BotSays((Content.text("one"), Content.text("two")))
    async with core(store, EchoBot(), HIBERNATE_AFTER) as board:
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, push, message_id="push:k1") == Accepted(2)
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        assert await board.ask(conv, push, message_id="push:k1") == Accepted(2)
        other = BotSays((Content.text("one"), Content.text("three")))
        assert await board.ask(conv, other, message_id="push:k1") == Accepted(4)
        assert len(await store.entries_after(conv, 0)) == 4


async def test_only_the_last_message_ids_entries_are_read(autojump_clock: object) -> None:
    """The read is bounded by ``limits.message_ids``: an id older than that window is
    forgotten after a restart (and stored again), a recent one is answered."""
    store = MemoryStore()
    async with core(store, EchoBot(), HIBERNATE_AFTER) as board:
        limit = board.context.limits.message_ids
        conv = (await board.open_conversation("demo")).conversation_id
        for n in range(limit):
            said = await board.ask(conv, UserSays(Content.text(f"{n}")), message_id=f"m{n}")
            assert said == Accepted(2 * n + 1)
            await _said(board, conv, 2 * n + 2)  # each message and its echo
        await trio.sleep(HIBERNATE_AFTER + 1)
        assert not board.is_in_memory(conv)
        last = limit - 1
        assert await board.ask(conv, UserSays(Content.text(f"{last}")), message_id=f"m{last}") == (
            Accepted(2 * last + 1)
        )
        old = await board.ask(conv, UserSays(Content.text("0")), message_id="m0")
        assert old == Accepted(2 * limit + 1)


# -- any mix of sends, resends and restarts (hypothesis) -------------------------------------

_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 5)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(steps=_STEPS)
def test_any_mix_of_sends_resends_and_restarts_stores_each_id_once(
    steps: list[tuple[str, int]],
) -> None:
    """Message ``n`` is "message n" under id ``n``: sent any number of times, with restarts
    (a new switchboard on the same store) in between, each is stored once and always
    answered with the seq it was first given."""

    async def run() -> None:
        store = MemoryStore()
        bot = EchoBot()
        answers: dict[int, object] = {}
        async with core(store, bot) as board:
            conv = (await board.open_conversation("demo")).conversation_id
        # Between two restarts: the sends of one process (a new switchboard on the store).
        runs: list[list[int]] = [[]]
        for kind, n in steps:
            if kind == "restart":
                runs.append([])
            else:
                runs[-1].append(n)
        for sends in runs:
            async with core(store, bot) as board:
                for n in sends:
                    outcome = await board.ask(
                        conv, UserSays(Content.text(f"message {n}")), message_id=f"user:{n}"
                    )
                    assert isinstance(outcome, Accepted)
                    assert answers.setdefault(n, outcome) == outcome
        stored = _texts(await store.entries_after(conv, 0))
        assert sorted(stored, key=str) == sorted({f"message {n}" for n in answers}, key=str)

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


def test_an_entrys_message_id_is_not_part_of_its_equality_nor_sent() -> None:
    entry = Entry("c", 1, 0.0, Party.USER, Content.text("hi"), frozenset({Party.USER}))
    with_id = attrs.evolve(entry, message_id="user:'m1'")
    assert with_id == entry
    assert "message_id" not in with_id.to_json()


async def test_an_id_no_store_can_keep_leaves_its_message_stored(tmp_path: Path) -> None:
    """An id that is not valid text (a lone surrogate) is kept in memory only: the message
    is stored all the same, and a resend while the conversation is in memory is answered."""
    hello = UserSays(Content.text("hello"))
    async with (
        open_sqlite_store(tmp_path / "switchover.db", settings={"demo": SETTINGS}) as store,
        core(store, EchoBot()) as board,
    ):
        conv = (await board.open_conversation("demo")).conversation_id
        assert await board.ask(conv, hello, message_id="push:\ud800") == Accepted(1)
        assert await board.ask(conv, hello, message_id="push:\ud800") == Accepted(1)
        (stored, *_) = await store.entries_after(conv, 0)
        assert (stored.seq, stored.message_id) == (1, None)
