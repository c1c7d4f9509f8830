"""The lifecycle's table: every mode meets every event type, and each cell does what it says.

The table is the one place that decides what a mode accepts. This walks the whole matrix, so
a new event type or mode without a decision fails here, and an ``IGNORE`` or ``Refuse`` cell
is checked to change nothing.
"""

from __future__ import annotations

import typing

import pytest

from actors import Accepted, BotSettings, Content, ConversationState, Lifecycle, Mode, Refusal
from actors.machines.lifecycle import Ignore, Refuse
from actors.model import events as ev
from actors.model.state import Session

NOW = 1_000.0

SAMPLES: dict[type[typing.Any], ev.Event] = {
    ev.UserSays: ev.UserSays(Content.text("hi")),
    ev.UserTyping: ev.UserTyping(),
    ev.BotSays: ev.BotSays((Content.text("hello"),)),
    ev.BotUnavailable: ev.BotUnavailable("down"),
    ev.AgentSays: ev.AgentSays("alice", Content.text("hi")),
    ev.AgentSignsOff: ev.AgentSignsOff("alice"),
    ev.AgentTyping: ev.AgentTyping("alice"),
    ev.AgentTransfers: ev.AgentTransfers("alice", None),
    ev.QueuePositionChanged: ev.QueuePositionChanged("c1/1", 2),
    ev.AgentAssigned: ev.AgentAssigned("c1/1", "alice", "Alice"),
    ev.ReturnedToQueue: ev.ReturnedToQueue("c1/1", "alice", "agent_left"),
    ev.TransferFailed: ev.TransferFailed("c1/1", "alice", "no"),
    ev.AgentEndsSession: ev.AgentEndsSession("c1/1", "alice"),
    ev.LivechatUnreachable: ev.LivechatUnreachable("c1/1"),
    ev.TimerFired: ev.TimerFired(),
}


def state_in(mode: Mode) -> ConversationState:
    base = ConversationState("c1", "demo", "u1", next_seq=5, sessions_opened=1)
    if mode is Mode.BOT:
        return base
    agent = "alice" if mode is Mode.LIVE else None
    queued = NOW - 10 if agent is None else None
    session = Session("c1/1", NOW - 20, NOW - 10, queued, agent, "Alice" if agent else "")
    return ConversationState("c1", "demo", "u1", next_seq=5, session=session, sessions_opened=1)


def test_every_event_type_has_a_decision_in_every_mode() -> None:
    table = Lifecycle(BotSettings()).table
    assert set(table) == set(Mode)
    events = set(typing.get_args(ev.Event))
    assert set(SAMPLES) == events
    for mode in Mode:
        assert set(table[mode]) == events, mode


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("event_type", list(SAMPLES), ids=lambda t: t.__name__)
def test_each_cell_does_what_the_table_says(mode: Mode, event_type: type[typing.Any]) -> None:
    lifecycle = Lifecycle(BotSettings(session_timeout=5.0))
    state = state_in(mode)
    assert state.mode is mode
    cell = lifecycle.table[mode][event_type]
    transition = lifecycle.handle(state, SAMPLES[event_type], NOW)
    if isinstance(cell, Ignore):
        assert transition.state is state
        assert transition.effects == ()
        assert transition.outcome == Accepted()
    elif isinstance(cell, Refuse):
        assert transition.state is state and transition.effects == ()
        assert transition.outcome == Refusal(cell.code, cell.message)
    else:
        # A handler: it may change anything, but never refuses what its mode accepts
        # without a code, and never leaves the conversation without a mode.
        assert transition.state.mode in Mode
        if isinstance(transition.outcome, Refusal):
            assert transition.outcome.code


def test_the_bot_never_hears_from_a_session_through_the_table() -> None:
    """Bot messages are refused in both session modes: the bot stays quiet."""
    table = Lifecycle(BotSettings()).table
    for mode in (Mode.QUEUED, Mode.LIVE):
        cell = table[mode][ev.BotSays]
        assert isinstance(cell, Refuse) and cell.code == "session_open"
