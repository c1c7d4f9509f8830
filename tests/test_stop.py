"""A graceful stop: every conversation in memory finishes what it was handed and returns
(``Switchboard.stop_conversations``) instead of being cancelled, which costs trio far more
per task (bench/README.md, "Memory under churn")."""

from __future__ import annotations

import trio
import trio.lowlevel

from actors import Accepted, BotSettings, Content, Switchboard, UserSays
from actors.model.effects import Outcome

from .test_actors import running


def _conversation_tasks(board: Switchboard) -> int:
    return sum(t.name.endswith("._supervised") for t in board.nursery.child_tasks)


async def test_conversations_finish_what_they_hold_and_return() -> None:
    async with running(BotSettings(), hibernate_after=None) as (board, _):
        ids = [(await board.open_conversation("demo")).conversation_id for _ in range(30)]
        assert _conversation_tasks(board) == 30
        answers: list[Outcome] = []
        # Handed over just before the stop, not yet handled: handled, stored, answered.
        for conversation_id in ids[:5]:
            board.submit(conversation_id, UserSays(Content.text("last words")), answers.append)
        with trio.fail_after(5):
            await board.stop_conversations()
        assert _conversation_tasks(board) == 0
        assert len(answers) == 5 and all(isinstance(a, Accepted) for a in answers)
        for conversation_id in ids[:5]:
            stored = await board.store.entries_after(conversation_id, 0)
            assert [e.content.content.get("text") for e in stored][:1] == ["last words"]
        # A conversation woken during the stop returns at once too.
        board.submit(ids[7], UserSays(Content.text("late")))
        with trio.fail_after(5):
            while _conversation_tasks(board):
                await trio.lowlevel.checkpoint()


async def test_a_stop_with_nothing_in_memory_returns_at_once() -> None:
    async with running(BotSettings(), hibernate_after=None) as (board, _):
        with trio.fail_after(1):
            await board.stop_conversations()
        assert _conversation_tasks(board) == 0
