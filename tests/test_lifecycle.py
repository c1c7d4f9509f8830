"""Every transition of the pure lifecycle state machine, one at a time.

The lifecycle reads no clock and does no I/O, so these tests call it directly with a state,
an event and a time, and read the effects it returns as plain data.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from actors import (
    IDLE_TIMEOUT,
    QUEUE_TIMEOUT,
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    USER_ENDED,
    Accepted,
    AgentSays,
    AgentSignsOff,
    AgentTransfers,
    AgentTyping,
    BotSays,
    BotSettings,
    Content,
    ConversationState,
    Entry,
    Lifecycle,
    Mode,
    Party,
    Refusal,
    UserSays,
    UserTyping,
)
from actors.machines.lifecycle import Transition
from actors.model import effects as fx
from actors.model.events import (
    AgentAssigned,
    AgentEndsSession,
    BotUnavailable,
    Event,
    LivechatUnreachable,
    QueuePositionChanged,
    ReturnedToQueue,
    TimerFired,
    TransferFailed,
)

SETTINGS = BotSettings(
    session_timeout=3600.0,
    end_message="Thanks! Click to finish.",
    end_button_label="Finish",
    queue_timeout=600.0,
)
T0 = 1_000_000.0


def fresh() -> ConversationState:
    return ConversationState("c1", "demo", "u1", {"name": "Uma"})


def emitted(transition: Transition) -> list[Entry]:
    return [e.entry for e in transition.effects if isinstance(e, fx.Emit)]


def to(party: Party, transition: Transition) -> list[Entry]:
    return [entry for entry in emitted(transition) if party in entry.audience]


def others(transition: Transition) -> list[fx.Effect]:
    return [e for e in transition.effects if not isinstance(e, fx.Emit)]


def codes(entries: Sequence[Entry]) -> list[str | None]:
    return [e.content.content.get("code") for e in entries]


class Run:
    """Feeds events through one lifecycle and keeps the state between them."""

    def __init__(self, settings: BotSettings = SETTINGS) -> None:
        self.lifecycle = Lifecycle(settings)
        self.state = fresh()

    def __call__(self, event: Event, at: float = T0) -> Transition:
        transition = self.lifecycle.handle(self.state, event, at)
        self.state = transition.state
        return transition

    def queued(self, at: float = T0) -> Transition:
        return self(UserSays(Content.payload(SESSION_START)), at)

    def live(self, agent: str = "alice", at: float = T0) -> Transition:
        self.queued(at)
        assert self.state.session is not None
        return self(AgentAssigned(self.state.session.session_id, agent, agent.title()), at)

    @property
    def session_id(self) -> str:
        assert self.state.session is not None
        return self.state.session.session_id


def test_bot_mode_user_message_goes_to_the_bot_and_bot_reply_to_the_user() -> None:
    run = Run()
    said = run(UserSays(Content.text("hi")))
    assert said.outcome == Accepted(1)
    [entry] = emitted(said)
    assert entry.audience == {Party.USER, Party.BOT}
    assert entry.seq == 1 and entry.sender is Party.USER
    replied = run(BotSays((Content.text("hello"), Content.text("how can I help?"))))
    assert replied.outcome == Accepted(3)
    assert [e.audience for e in emitted(replied)] == [{Party.USER}, {Party.USER}]
    assert run.state.mode is Mode.BOT and run.state.next_seq == 4


def test_any_content_reaches_the_bot_in_bot_mode() -> None:
    run = Run()
    picture = Content("image", {"url": "https://example.org/cat.png"})
    [entry] = emitted(run(UserSays(picture)))
    assert entry.content == picture and Party.BOT in entry.audience


def test_typing_in_bot_mode_goes_nowhere() -> None:
    run = Run()
    typed = run(UserTyping())
    assert typed.effects == () and typed.state is run.state


def test_start_opens_a_queued_session_and_the_bot_gets_nothing() -> None:
    run = Run()
    opened = run.queued()
    assert run.state.mode is Mode.QUEUED
    assert run.state.sessions_opened == 1
    assert all(Party.BOT not in e.audience for e in emitted(opened))
    assert codes(to(Party.USER, opened))[1] == "session_started"
    [request] = others(opened)
    assert request == fx.RequestAgent(run.session_id, T0)
    assert opened.outcome == Accepted(1)


def test_start_while_a_session_is_open_is_refused() -> None:
    run = Run()
    run.queued()
    again = run(UserSays(Content.payload(SESSION_START)))
    assert isinstance(again.outcome, Refusal)
    assert again.outcome.code == "session_already_open"
    assert again.effects == ()


def test_messages_while_queued_are_kept_for_the_agent_not_the_bot() -> None:
    run = Run()
    run.queued()
    kept = run(UserSays(Content.text("anyone there?")), T0 + 5)
    [entry] = emitted(kept)
    # For the human side, with no agent named yet: a platform passes it on at once.
    assert entry.audience == {Party.USER, Party.AGENT} and entry.agent_id is None
    assert entry.metadata == {"queued": True}
    assert entry.session_id == run.session_id
    assert run.state.session is not None and run.state.session.last_activity == T0 + 5


def test_positions_are_told_not_stored() -> None:
    run = Run()
    run.queued()
    before = run.state
    first = run(QueuePositionChanged(run.session_id, 3))
    assert first.effects == (fx.TellPosition(run.session_id, 3),)
    # Nothing numbered and no new state: a pickup does not write every waiting user.
    assert emitted(first) == [] and first.state is before


def test_position_of_another_session_withdraws_that_session() -> None:
    run = Run()
    run.queued()
    stale = run(QueuePositionChanged("c1/99", 1))
    assert stale.effects == (fx.WithdrawRequest("c1/99"),) and stale.state is run.state


def test_assignment_makes_the_session_live_and_shares_the_transcript() -> None:
    run = Run()
    run.queued()
    run(QueuePositionChanged(run.session_id, 1))
    assigned = run(AgentAssigned(run.session_id, "alice", "Alice"), T0 + 10)
    assert run.state.mode is Mode.LIVE
    session = run.state.session
    assert session is not None
    assert session.agent_id == "alice" and session.queued_at is None
    [joined] = emitted(assigned)
    assert joined.audience == {Party.USER, Party.AGENT} and joined.agent_id == "alice"
    assert joined.content.content["code"] == "agent_joined"
    assert others(assigned) == [fx.ShareTranscript(run.session_id, "alice")]


def test_the_same_assignment_twice_changes_nothing() -> None:
    run = Run()
    run.live()
    again = run(AgentAssigned(run.session_id, "alice", "Alice"))
    assert again.effects == () and again.state is run.state


def test_live_messages_pass_between_user_and_agent() -> None:
    run = Run()
    run.live()
    user = run(UserSays(Content.text("help")), T0 + 1)
    [entry] = emitted(user)
    assert entry.audience == {Party.USER, Party.AGENT} and entry.agent_id == "alice"
    agent = run(AgentSays("alice", Content.text("sure")), T0 + 2)
    [reply] = emitted(agent)
    assert reply.sender is Party.AGENT and reply.audience == {Party.USER, Party.AGENT}
    assert agent.outcome == Accepted(reply.seq)
    assert run.state.session is not None and run.state.session.last_activity == T0 + 2


def test_sign_off_action_offers_the_end_button() -> None:
    run = Run()
    run.live()
    signed = run(AgentSignsOff("alice"))
    [offer] = emitted(signed)
    assert offer.metadata == {"sign_off": True}
    assert offer.content.content_type == "question"
    assert offer.content.content["title"] == "Thanks! Click to finish."
    [button] = offer.content.content["buttons"]
    assert button["content"]["title"] == "Finish"
    assert button["content"]["payload"] == SESSION_END
    assert run.state.mode is Mode.LIVE
    assert run.state.session is not None and run.state.session.sign_off_offered


def test_sign_off_by_text_shows_the_remainder_then_the_button() -> None:
    run = Run()
    run.live()
    signed = run(AgentSays("alice", Content.text("Glad to help! LIVECHAT_SESSION_END  ")))
    remainder, offer = emitted(signed)
    assert remainder.content == Content.text("Glad to help!")
    assert offer.metadata == {"sign_off": True}
    assert signed.outcome == Accepted(offer.seq)
    assert run.state.mode is Mode.LIVE


def test_sign_off_by_bare_token_shows_only_the_button() -> None:
    run = Run()
    run.live()
    [offer] = emitted(run(AgentSays("alice", Content.text(SESSION_END))))
    assert offer.metadata == {"sign_off": True}


def test_token_in_the_middle_of_a_message_is_not_a_sign_off() -> None:
    run = Run()
    run.live()
    [entry] = emitted(run(AgentSays("alice", Content.text("type LIVECHAT_SESSION_END to quit"))))
    assert entry.metadata == {}


def test_user_saying_something_else_after_sign_off_continues_the_session() -> None:
    run = Run()
    run.live()
    run(AgentSignsOff("alice"))
    more = run(UserSays(Content.text("one more thing")))
    assert run.state.mode is Mode.LIVE
    assert run.state.session is not None and not run.state.session.sign_off_offered
    assert [Party.AGENT in e.audience for e in emitted(more)] == [True]


def test_user_end_ends_the_session_tells_the_agent_and_resumes_the_bot() -> None:
    run = Run()
    run.live()
    session_id = run.session_id
    ended = run(UserSays(Content.payload(SESSION_END)), T0 + 30)
    assert run.state.mode is Mode.BOT and run.state.session is None
    assert codes(to(Party.AGENT, ended)) == ["session_ended"]
    assert to(Party.AGENT, ended)[0].agent_id == "alice"
    [bot] = to(Party.BOT, ended)
    assert bot.content.is_payload(SESSION_END)
    assert bot.metadata == {"reason": USER_ENDED, "session_id": session_id, "agent_id": "alice"}
    assert others(ended) == [fx.ReleaseAgent(session_id, "alice", USER_ENDED)]
    # After the session the bot hears the user again.
    [after] = emitted(run(UserSays(Content.text("back"))))
    assert Party.BOT in after.audience


def test_end_while_queued_withdraws_the_request() -> None:
    run = Run()
    run.queued()
    session_id = run.session_id
    ended = run(UserSays(Content.payload(SESSION_END)))
    assert others(ended) == [fx.WithdrawRequest(session_id)]
    assert [e.content.is_payload(SESSION_END) for e in to(Party.BOT, ended)] == [True]
    # No agent ever held it: the bot is told so, and need not thank one.
    assert to(Party.BOT, ended)[0].metadata["agent_id"] is None
    assert to(Party.AGENT, ended) == []


def test_the_human_side_ends_a_live_session_and_the_bot_hears_why() -> None:
    run = Run()
    run.live()
    session_id = run.session_id
    ended = run(AgentEndsSession(session_id, "alice"), T0 + 5)
    [bot] = to(Party.BOT, ended)
    # Ended, not expired: the agent closed it.
    assert bot.content.is_payload(SESSION_END)
    assert bot.metadata == {"reason": "agent_closed", "session_id": session_id, "agent_id": "alice"}
    assert codes([e for e in to(Party.USER, ended) if e.sender is Party.SYSTEM]) == [
        "session_ended"
    ]
    assert others(ended) == [fx.ReleaseAgent(session_id, "alice", "agent_closed")]
    assert run.state.mode is Mode.BOT


def test_an_agent_ends_the_session_it_holds_without_naming_it() -> None:
    run = Run()
    run.live()
    ended = run(AgentEndsSession(None, "alice"))
    assert to(Party.BOT, ended)[0].metadata["reason"] == "agent_closed"
    assert run.state.mode is Mode.BOT


def test_a_platform_may_close_a_session_nobody_joined() -> None:
    run = Run()
    run.queued()
    ended = run(AgentEndsSession(run.session_id, None, "ticket_closed"))
    assert to(Party.BOT, ended)[0].metadata["reason"] == "ticket_closed"
    assert others(ended) == [fx.WithdrawRequest("c1/1")]


def test_only_the_holder_or_the_open_session_can_be_ended() -> None:
    run = Run()
    run.live()
    before = run.state
    wrong_agent = run(AgentEndsSession(run.session_id, "bob"))
    stale = run(AgentEndsSession("c1/0", None))
    not_holding = run(AgentEndsSession(None, "bob"))
    nobody = run(AgentEndsSession(None, None))
    for refused in (wrong_agent, stale, not_holding, nobody):
        assert isinstance(refused.outcome, Refusal) and refused.outcome.code == "not_assigned"
        assert refused.state is before and refused.effects == ()


def test_an_unreachable_livechat_is_told_to_the_user_only() -> None:
    run = Run()
    run.queued()
    told = run(LivechatUnreachable(run.session_id))
    [entry] = emitted(told)
    assert entry.audience == {Party.USER} and entry.content.content["code"] == (
        "livechat_unreachable"
    )
    # It changes nothing of the session: the user's messages are kept and passed on later.
    assert told.state.session == run.state.session and told.state.mode is Mode.QUEUED
    assert emitted(run(LivechatUnreachable("c1/0"))) == []


def test_idle_expiry_ends_the_session_with_a_reason() -> None:
    run = Run(BotSettings(session_timeout=3600.0))
    run.live()
    run(UserSays(Content.text("hello")), T0 + 100)
    assert run.lifecycle.deadline(run.state) == T0 + 3700
    early = run(TimerFired(), T0 + 3699.999)
    assert early.effects == () and run.state.mode is Mode.LIVE
    expired = run(TimerFired(), T0 + 3700)
    [bot] = to(Party.BOT, expired)
    assert bot.content.is_payload(SESSION_EXPIRED)
    assert bot.metadata["reason"] == IDLE_TIMEOUT
    assert codes(to(Party.AGENT, expired)) == ["session_expired"]
    assert isinstance(others(expired)[0], fx.ReleaseAgent)
    assert run.state.mode is Mode.BOT
    assert run.lifecycle.deadline(run.state) is None


def test_idle_timer_runs_while_queued_too() -> None:
    run = Run(BotSettings(session_timeout=60.0))
    run.queued()
    expired = run(TimerFired(), T0 + 60)
    assert to(Party.BOT, expired)[0].metadata["reason"] == IDLE_TIMEOUT
    assert others(expired) == [fx.WithdrawRequest("c1/1")]


def test_queue_timeout_ends_a_waiting_session() -> None:
    run = Run()
    run.queued()
    run(UserSays(Content.text("still waiting")), T0 + 500)
    # The user's message reset the idle timer, not the queue timer.
    assert run.lifecycle.deadline(run.state) == T0 + 600
    expired = run(TimerFired(), T0 + 600)
    [bot] = to(Party.BOT, expired)
    assert bot.content.is_payload(SESSION_EXPIRED)
    assert bot.metadata["reason"] == QUEUE_TIMEOUT


def test_queue_timeout_is_off_by_default() -> None:
    run = Run(BotSettings())
    run.queued()
    assert run.lifecycle.deadline(run.state) == T0 + 3600


def test_queue_timeout_stops_once_an_agent_picks_up() -> None:
    run = Run()
    run.live()
    assert run.lifecycle.deadline(run.state) == T0 + 3600
    assert run(TimerFired(), T0 + 600).effects == ()


def test_bot_message_during_a_session_is_refused() -> None:
    run = Run()
    run.queued()
    refused = run(BotSays((Content.text("I am still here"),)))
    assert isinstance(refused.outcome, Refusal) and refused.outcome.code == "session_open"
    assert refused.effects == ()


def test_agent_not_holding_the_chat_is_refused() -> None:
    run = Run()
    run.live("alice")
    for event in (
        AgentSays("bob", Content.text("hi")),
        AgentSignsOff("bob"),
        AgentTransfers("bob", None),
    ):
        refused = run(event)
        assert isinstance(refused.outcome, Refusal)
        assert refused.outcome.code == "not_assigned"
        assert refused.effects == ()


def test_agent_message_in_bot_mode_is_refused() -> None:
    refused = Run()(AgentSays("alice", Content.text("hi")))
    assert isinstance(refused.outcome, Refusal) and refused.outcome.code == "not_assigned"


def test_typing_passes_both_ways_and_never_resets_the_timer() -> None:
    run = Run()
    run.live()
    before = run.state
    typed = run(UserTyping(), T0 + 50)
    assert typed.effects == (fx.Signal(Party.AGENT, Content("typing"), "alice"),)
    agent_typed = run(AgentTyping("alice"), T0 + 60)
    assert agent_typed.effects == (fx.Signal(Party.USER, Content("typing"), "alice"),)
    assert run.state is before
    assert run.lifecycle.deadline(run.state) == T0 + 3600


def test_typing_while_queued_or_from_another_agent_goes_nowhere() -> None:
    run = Run()
    run.queued()
    assert run(UserTyping()).effects == ()
    run(AgentAssigned(run.session_id, "alice"))
    assert run(AgentTyping("bob")).effects == ()


def test_transfer_asks_the_backend_and_the_new_agent_takes_over() -> None:
    run = Run()
    run.live("alice")
    asked = run(AgentTransfers("alice", "bob"))
    assert asked.effects == (fx.TransferChat(run.session_id, "alice", "bob"),)
    moved = run(AgentAssigned(run.session_id, "bob", "Bob"))
    left, joined = emitted(moved)
    assert left.audience == {Party.AGENT} and left.agent_id == "alice"
    assert left.content.content == {"code": "transferred", "to_agent": "bob", "to_name": "Bob"}
    assert joined.agent_id == "bob"
    assert others(moved) == [fx.ShareTranscript(run.session_id, "bob")]
    assert run.state.session is not None and run.state.session.agent_id == "bob"


def test_transfer_to_oneself_is_refused() -> None:
    run = Run()
    run.live("alice")
    refused = run(AgentTransfers("alice", "alice"))
    assert isinstance(refused.outcome, Refusal) and refused.outcome.code == "transfer_failed"


def test_transfer_failed_changes_nothing() -> None:
    run = Run()
    run.live("alice")
    failed = run(TransferFailed(run.session_id, "alice", "bob is away"))
    assert failed.effects == () and failed.state is run.state


def test_returned_to_queue_waits_again() -> None:
    run = Run()
    run.live("alice")
    run(AgentSignsOff("alice"))
    back = run(ReturnedToQueue(run.session_id, "alice", "agent_left"), T0 + 40)
    assert run.state.mode is Mode.QUEUED
    session = run.state.session
    assert session is not None
    assert session.queued_at == T0 + 40 and not session.sign_off_offered
    assert codes(emitted(back)) == ["agent_left"]
    # A queued session gets its position reported again.
    told = run(QueuePositionChanged(run.session_id, 1)).effects
    assert told == (fx.TellPosition(run.session_id, 1),)


def test_returned_to_queue_from_an_agent_who_no_longer_holds_it_is_ignored() -> None:
    run = Run()
    run.live("alice")
    ignored = run(ReturnedToQueue(run.session_id, "bob", "agent_left"))
    assert ignored.effects == () and run.state.mode is Mode.LIVE


def test_stale_assignment_is_released() -> None:
    run = Run()
    run.queued()
    session_id = run.session_id
    run(UserSays(Content.payload(SESSION_END)))
    late = run(AgentAssigned(session_id, "alice", "Alice"))
    assert late.effects == (fx.ReleaseAgent(session_id, "alice", "stale_assignment"),)
    assert run.state.mode is Mode.BOT


def test_bot_unavailable_tells_the_user_in_bot_mode_only() -> None:
    run = Run()
    told = run(BotUnavailable("connection refused"))
    [entry] = emitted(told)
    assert entry.audience == {Party.USER} and entry.metadata == {"code": "bot_unavailable"}
    assert entry.content.text_value == SETTINGS.unavailable_message
    run.queued()
    assert run(BotUnavailable("late failure")).effects == ()


def test_timer_in_bot_mode_does_nothing() -> None:
    run = Run()
    fired = run(TimerFired(), T0 + 10_000)
    assert fired.effects == () and fired.state is run.state


def test_sequence_numbers_count_every_entry_without_gaps() -> None:
    run = Run()
    seqs: list[int] = []
    for event in (
        UserSays(Content.text("a")),
        UserSays(Content.payload(SESSION_START)),
        UserSays(Content.text("b")),
    ):
        seqs += [e.seq for e in emitted(run(event))]
    seqs += [e.seq for e in emitted(run(AgentAssigned(run.session_id, "alice")))]
    seqs += [
        e.seq for e in emitted(run(AgentSays("alice", Content.text("c LIVECHAT_SESSION_END"))))
    ]
    seqs += [e.seq for e in emitted(run(UserSays(Content.payload(SESSION_END))))]
    assert seqs == list(range(1, len(seqs) + 1))
    assert run.state.next_seq == len(seqs) + 1


@pytest.mark.parametrize("reason", [IDLE_TIMEOUT, QUEUE_TIMEOUT])
def test_expiry_reports_the_session_in_the_bot_event(reason: str) -> None:
    run = Run(BotSettings(session_timeout=100.0, queue_timeout=50.0))
    run.queued()
    if reason == IDLE_TIMEOUT:
        run(AgentAssigned(run.session_id, "alice"))
    session_id = run.session_id
    expired = run(TimerFired(), T0 + 100)
    [bot] = to(Party.BOT, expired)
    holder = "alice" if reason == IDLE_TIMEOUT else None
    assert bot.metadata == {"reason": reason, "session_id": session_id, "agent_id": holder}
    assert bot.session_id == session_id
