"""A crowd of sessions expiring at one instant, on trio's MockClock: at most ``expiry_batch``
expiries are in flight at once (actors/trio/alarms.py), and every session still ends exactly
once, in deadline order, as soon as the ones before it are done."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import trio
import trio.testing

from actors import (
    SESSION_EXPIRED,
    SESSION_START,
    Accepted,
    BotBinding,
    BotSettings,
    Content,
    ConversationState,
    Entry,
    MemoryStore,
    UserSays,
    open_switchboard,
)
from actors.trio.alarms import Alarms

from .conftest import EchoBot

COMMIT = 0.01
"""How long the store below takes to make one write durable, by the mock clock."""


class SlowStore(MemoryStore):
    """A memory store whose writes take :data:`COMMIT` seconds; it notes how many writes that
    end a session overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.ending = 0
        self.most_ending = 0
        self.ended_at: dict[str, float] = {}

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None:
        ends = state.session is None and any(
            e.content.content.get("code") == "session_expired" for e in entries
        )
        if ends:
            self.ending += 1
            self.most_ending = max(self.most_ending, self.ending)
        try:
            await trio.sleep(COMMIT)
            await super().record(state, entries)
        finally:
            if ends:
                self.ending -= 1
                self.ended_at[state.conversation_id] = trio.current_time()


def test_the_alarms_hand_out_as_many_expiry_slots_as_their_batch() -> None:
    assert Alarms(7).expiries.total_tokens == 7


async def test_at_most_a_batch_of_expiries_is_in_flight_and_each_session_ends_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bot, store, batch, sessions = EchoBot(), SlowStore(), 8, 50
    settings = BotSettings(session_timeout=60.0)
    binding = BotBinding(bot, settings)
    async with open_switchboard({"demo": binding}, None, store, expiry_batch=batch) as board:
        opened: list[str] = []

        async def open_one() -> None:
            state = await board.open_conversation("demo")
            outcome = await board.ask(
                state.conversation_id, UserSays(Content.payload(SESSION_START))
            )
            assert isinstance(outcome, Accepted)
            opened.append(state.conversation_id)

        async with trio.open_nursery() as nursery:
            for _ in range(sessions):
                nursery.start_soon(open_one)
        # Every session was opened in the same instant: one deadline for all of them.
        deadline = trio.current_time() - COMMIT + 60.0
        with trio.fail_after(600):
            while len(store.ended_at) < sessions:
                await bot.wait_for_events(len(bot.events) + 1, timeout=600)
            await trio.sleep(1.0)  # time for a second expiry of any session, were there one
    expired = Counter(
        e.conversation_id for e in bot.events if e.content.is_payload(SESSION_EXPIRED)
    )
    assert sorted(expired) == sorted(opened)
    assert set(expired.values()) == {1}
    assert store.most_ending == batch
    # A slot is freed when an expiry is done: the crowd goes through in rounds of one commit.
    rounds = -(-sessions // batch)
    ends = sorted(store.ended_at.values())
    assert ends[0] >= deadline
    assert ends[-1] <= deadline + rounds * COMMIT + 1e-6
