"""Random interleavings of users, a bot, agents, presence and the clock.

One model drives the pure :class:`~actors.lifecycle.Lifecycle` of several conversations
together with the pure desk :class:`~actors.routing.Routing`, passing the effects of each to
the other synchronously, the way the conversation actors and the desk actor do through their
channels. Hypothesis then looks for an interleaving that breaks one of these invariants:

* The bot never receives an event while a session is queued or live. The only bot event a
  session produces is the ``LIVECHAT_SESSION_END`` / ``LIVECHAT_SESSION_EXPIRED`` payload of
  the transition that ends it.
* Every session ends exactly once, with exactly one reason; a session that has not ended is
  the one its conversation currently has open.
* An agent never holds more chats than its capacity, and the desk and the conversations agree
  on who holds what and who waits.
* Every accepted user message is recorded once and goes to exactly one place: the bot (bot
  mode), the holding agent (live), or the waiting room (queued). A waiting-room message
  reaches the agent in the transcript shared at the session's next pickup, unless the session
  ends first, in which case nobody but the user sees it.
* Sequence numbers are gap-free per conversation, starting at 1.
"""

from __future__ import annotations

from collections import deque

import hypothesis
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from actors import (
    SESSION_END,
    SESSION_EXPIRED,
    SESSION_START,
    AgentRequest,
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
    Presence,
    Refused,
    UserSays,
    UserTyping,
)
from actors import effects as fx
from actors import routing as rt
from actors.events import (
    AgentAssigned,
    Event,
    QueuePositionChanged,
    ReturnedToQueue,
    TimerFired,
    TransferFailed,
)

BOT_SETTINGS = BotSettings(session_timeout=100.0, queue_timeout=60.0, grace_period=10.0)
CONVERSATIONS = ("c1", "c2", "c3", "c4")
CAPACITY = {"alice": 1, "bob": 2}
AGENTS = tuple(CAPACITY)
ENDINGS = {SESSION_END, SESSION_EXPIRED}

conversations = st.sampled_from(CONVERSATIONS)
agents = st.sampled_from(AGENTS)


class LifecycleWithDesk(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.lifecycle = Lifecycle(BOT_SETTINGS)
        self.routing = rt.Routing(
            [rt.Agent(a, a.title(), frozenset({"demo"}), c) for a, c in CAPACITY.items()],
            {"demo": BOT_SETTINGS},
        )
        self.now = 1000.0
        self.states = {c: ConversationState(c, "demo", f"user-{c}") for c in CONVERSATIONS}
        self.inbox: deque[tuple[str, Event]] = deque()
        self.seqs: dict[str, list[int]] = {c: [] for c in CONVERSATIONS}
        self.opened: set[str] = set()
        self.ended: dict[str, list[str]] = {}
        self.waiting_room: dict[str, list[int]] = {}
        self.to_bot: list[Entry] = []
        self.delivered: list[tuple[str, int, str]] = []
        self.user_messages = 0
        self.connected = dict.fromkeys(AGENTS, False)

    # -- the plumbing between lifecycle and desk ----------------------------------------------

    def handle(self, conv: str, event: Event) -> fx.Outcome:
        outcome = self._apply(conv, event)
        while self.inbox:
            self._apply(*self.inbox.popleft())
        return outcome

    def _apply(self, conv: str, event: Event) -> fx.Outcome:
        before = self.states[conv]
        transition = self.lifecycle.handle(before, event, self.now)
        after = self.states[conv] = transition.state
        emitted = [e.entry for e in transition.effects if isinstance(e, fx.Emit)]
        for entry in emitted:
            self.seqs[conv].append(entry.seq)
            if Party.BOT in entry.audience:
                self._check_bot_may_hear(before, after, entry)
                self.to_bot.append(entry)
            if entry.sender is Party.USER:
                if Party.BOT in entry.audience:
                    self.delivered.append((conv, entry.seq, "bot"))
                if Party.AGENT in entry.audience:
                    assert entry.agent_id is not None
                    self.delivered.append((conv, entry.seq, entry.agent_id))
        if after.session is not None:
            self.opened.add(after.session.session_id)
        hypothesis.event(f"reached {after.mode.value}")
        if isinstance(event, UserSays) and not isinstance(transition.outcome, Refused):
            self._check_user_message(before, event, transition.outcome, emitted)
        for effect in transition.effects:
            self._carry_out(conv, effect, after)
        return transition.outcome

    def _check_bot_may_hear(
        self, before: ConversationState, after: ConversationState, entry: Entry
    ) -> None:
        content = entry.content
        if before.mode is Mode.BOT:
            assert not content.is_payload(SESSION_START)
            return
        # A session was open: only the transition that ends it may speak to the bot.
        assert after.mode is Mode.BOT
        assert any(content.is_payload(p) for p in ENDINGS)
        session_id = entry.metadata["session_id"]
        assert session_id == before.session.session_id if before.session else False
        self.ended.setdefault(session_id, []).append(entry.metadata["reason"])

    def _check_user_message(
        self,
        before: ConversationState,
        event: UserSays,
        outcome: fx.Outcome,
        emitted: list[Entry],
    ) -> None:
        assert isinstance(outcome, fx.Accepted) and outcome.seq is not None
        mine = [e for e in emitted if e.sender is Party.USER]
        assert [e.seq for e in mine] == [outcome.seq]
        [entry] = mine
        assert entry.content == event.content
        opens = before.mode is Mode.BOT and event.content.is_payload(SESSION_START)
        ends = before.mode is not Mode.BOT and event.content.is_payload(SESSION_END)
        if opens or ends:
            # Control payloads of the session are the user's own record, not messages.
            assert entry.audience == {Party.USER}
            return
        self.user_messages += 1
        places = [
            Party.BOT in entry.audience,
            Party.AGENT in entry.audience,
            bool(entry.metadata.get("queued")),
        ]
        assert sum(places) == 1, entry
        expected = {Mode.BOT: 0, Mode.LIVE: 1, Mode.QUEUED: 2}[before.mode]
        assert places[expected]
        if before.mode is Mode.LIVE:
            assert before.session is not None and entry.agent_id == before.session.agent_id
        if before.mode is Mode.QUEUED:
            assert before.session is not None
            self.waiting_room.setdefault(before.session.session_id, []).append(entry.seq)

    def _carry_out(self, conv: str, effect: fx.Effect, state: ConversationState) -> None:
        routing, now = self.routing, self.now
        if isinstance(effect, fx.RequestAgent):
            request = AgentRequest(conv, effect.session_id, "demo", effect.queued_at)
            self._route(routing.request(request, now))
        elif isinstance(effect, fx.WithdrawRequest):
            self.waiting_room.pop(effect.session_id, None)
            self._route(routing.withdraw(conv, effect.session_id, now))
        elif isinstance(effect, fx.ReleaseAgent):
            self.waiting_room.pop(effect.session_id, None)
            self._route(routing.release(conv, effect.session_id, effect.agent_id, now))
        elif isinstance(effect, fx.TransferChat):
            self._route(
                routing.transfer(conv, effect.session_id, effect.from_agent, effect.to_agent, now)
            )
        elif isinstance(effect, fx.ShareTranscript):
            # The transcript at pickup: every entry so far that the user or agent may see
            # (what the actor reads from the store). Waiting-room messages must be in it.
            shown = set(self.seqs[conv])
            kept = self.waiting_room.pop(effect.session_id, [])
            assert set(kept) <= shown
            self.delivered.extend((conv, seq, effect.agent_id) for seq in kept)

    def _route(self, effects: list[rt.RoutingEffect]) -> None:
        for effect in effects:
            if isinstance(effect, rt.Assign):
                event: Event = AgentAssigned(effect.session_id, effect.agent_id, effect.agent_name)
                self.inbox.append((effect.conversation_id, event))
            elif isinstance(effect, rt.Position):
                event = QueuePositionChanged(effect.session_id, effect.position)
                self.inbox.append((effect.conversation_id, event))
            elif isinstance(effect, rt.Requeued):
                event = ReturnedToQueue(effect.session_id, effect.agent_id, effect.reason)
                self.inbox.append((effect.conversation_id, event))
            elif isinstance(effect, rt.Refusal) and effect.code == "transfer_failed":
                holder = self.routing.holder_of(effect.conversation_id)
                session = self.states[effect.conversation_id].session
                if holder is not None and session is not None:
                    event = TransferFailed(session.session_id, holder.agent_id, effect.detail)
                    self.inbox.append((effect.conversation_id, event))

    @initialize(ready=st.lists(agents, unique=True))
    def agents_start_online(self, ready: list[str]) -> None:
        for agent in ready:
            self.connect(agent)
            self.presence(agent, Presence.ONLINE)

    # -- users and the bot --------------------------------------------------------------------

    @rule(conv=conversations, text=st.sampled_from(["hi", "help me", "LIVECHAT_SESSION_END"]))
    def user_says_text(self, conv: str, text: str) -> None:
        self.handle(conv, UserSays(Content.text(text)))

    @rule(conv=conversations)
    def user_starts(self, conv: str) -> None:
        mode = self.states[conv].mode
        outcome = self.handle(conv, UserSays(Content.payload(SESSION_START)))
        assert isinstance(outcome, Refused) == (mode is not Mode.BOT)

    @rule(conv=conversations)
    def user_ends(self, conv: str) -> None:
        had = self.states[conv].session
        self.handle(conv, UserSays(Content.payload(SESSION_END)))
        assert self.states[conv].session is None
        if had is not None:
            assert self.ended[had.session_id] == ["user_ended"]

    @rule(conv=conversations, payload=st.sampled_from(["MENU", "BUY"]))
    def user_clicks(self, conv: str, payload: str) -> None:
        self.handle(conv, UserSays(Content.payload(payload)))

    @rule(conv=conversations)
    def user_types(self, conv: str) -> None:
        before = self.states[conv]
        self.handle(conv, UserTyping())
        assert self.states[conv] is before

    @rule(conv=conversations)
    def bot_says(self, conv: str) -> None:
        open_session = self.states[conv].session is not None
        outcome = self.handle(conv, BotSays((Content.text("bot here"),)))
        assert isinstance(outcome, Refused) == open_session

    # -- agents -------------------------------------------------------------------------------

    @rule(agent=agents, conv=conversations, sign_off=st.booleans())
    def agent_says(self, agent: str, conv: str, sign_off: bool) -> None:
        session = self.states[conv].session
        holds = session is not None and session.agent_id == agent
        text = "bye LIVECHAT_SESSION_END" if sign_off else "hello"
        outcome = self.handle(conv, AgentSays(agent, Content.text(text)))
        assert isinstance(outcome, Refused) != holds

    @rule(agent=agents, conv=conversations)
    def agent_signs_off(self, agent: str, conv: str) -> None:
        self.handle(conv, AgentSignsOff(agent))

    @rule(agent=agents, conv=conversations)
    def agent_types(self, agent: str, conv: str) -> None:
        before = self.states[conv]
        self.handle(conv, AgentTyping(agent))
        assert self.states[conv] is before

    @rule(agent=agents, conv=conversations, to=st.sampled_from([None, *AGENTS]))
    def agent_transfers(self, agent: str, conv: str, to: str | None) -> None:
        self.handle(conv, AgentTransfers(agent, to))

    @rule(agent=agents, conv=conversations)
    def agent_claims(self, agent: str, conv: str) -> None:
        self._route(self.routing.claim(agent, conv, self.now))
        self.handle_inbox()

    @rule(agent=agents, presence=st.sampled_from(Presence))
    def presence(self, agent: str, presence: Presence) -> None:
        self._route(self.routing.set_presence(agent, presence, self.now))
        self.handle_inbox()

    @rule(agent=agents)
    def connect(self, agent: str) -> None:
        if not self.connected[agent]:
            self.connected[agent] = True
            self._route(self.routing.connected(agent, self.now))
            self.handle_inbox()

    @rule(agent=agents)
    def disconnect(self, agent: str) -> None:
        if self.connected[agent]:
            self.connected[agent] = False
            self._route(self.routing.disconnected(agent, self.now))
            self.handle_inbox()

    def handle_inbox(self) -> None:
        while self.inbox:
            self._apply(*self.inbox.popleft())

    # -- the clock ----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 5.0, 11.0, 30.0, 61.0, 101.0]))
    def time_passes(self, seconds: float) -> None:
        """Move the clock forward, firing every deadline on the way in order, the way the
        actors' timers and the desk's grace timer would."""
        target = self.now + seconds
        while True:
            due = [
                (deadline, conv)
                for conv, state in self.states.items()
                if (deadline := self.lifecycle.deadline(state)) is not None
            ]
            grace = self.routing.next_deadline()
            if grace is not None:
                due.append((grace, ""))
            due = [d for d in due if d[0] <= target]
            if not due:
                break
            when, conv = min(due)
            self.now = max(self.now, when)
            if conv:
                had = self.states[conv].session
                self.handle(conv, TimerFired())
                assert had is not None and self.states[conv].session is None
                assert self.ended[had.session_id] in (["idle_timeout"], ["queue_timeout"])
            else:
                self._route(self.routing.expire_grace(self.now))
                self.handle_inbox()
        self.now = target

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def sequence_numbers_have_no_gaps(self) -> None:
        for conv, seqs in self.seqs.items():
            assert seqs == list(range(1, len(seqs) + 1))
            assert self.states[conv].next_seq == len(seqs) + 1

    @invariant()
    def every_session_ends_once_and_only_open_ones_have_not(self) -> None:
        for reasons in self.ended.values():
            assert len(reasons) == 1
        still_open = self.opened - set(self.ended)
        current = {s.session.session_id for s in self.states.values() if s.session is not None}
        assert still_open == current

    @invariant()
    def no_agent_holds_more_than_its_capacity(self) -> None:
        for agent in self.routing.agents.values():
            assert len(agent.chats) <= agent.capacity

    @invariant()
    def desk_and_conversations_agree(self) -> None:
        for conv, state in self.states.items():
            holder = self.routing.holder_of(conv)
            waiting = self.routing.waiting(conv)
            session = state.session
            if session is None:
                assert holder is None and waiting is None
            elif session.agent_id is None:
                assert holder is None
                assert waiting is not None and waiting.session_id == session.session_id
            else:
                assert waiting is None
                assert holder is not None and holder.agent_id == session.agent_id
                assert holder.chats[conv].session_id == session.session_id

    @invariant()
    def user_messages_reach_one_place_once(self) -> None:
        messages = [(conv, seq) for conv, seq, _ in self.delivered]
        assert len(messages) == len(set(messages))
        waiting = sum(len(seqs) for seqs in self.waiting_room.values())
        assert len(messages) + waiting <= self.user_messages


LifecycleWithDesk.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycleWithDesk = LifecycleWithDesk.TestCase
