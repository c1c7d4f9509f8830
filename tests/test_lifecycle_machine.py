"""Random interleavings of users, a bot, agents, presence, the clock and messages in flight.

One model drives the pure :class:`~actors.machines.lifecycle.Lifecycle` of several conversations
together with the pure desk :class:`~actors.machines.routing.Routing`, the way the conversation
actors and the desk actor run: each on its own, talking through channels. What a conversation asks
of the desk (a request, a withdrawal, a release, a transfer) goes into the desk's one channel; what
the desk tells a conversation (an assignment, a queue position, a return to the queue) goes into
that conversation's inbox. Each channel is first in, first out, but which channel delivers next, and
whether users, agents or the clock act first, is up to hypothesis. The desk may also restart: it
loses every session and is rebuilt by the open sessions re-asserting themselves, as the switchboard
has them do.

Hypothesis then looks for an interleaving that breaks one of these invariants.

At every step, whatever is in flight:

* The bot never receives an event while a session is queued or live. The only bot event a
  session produces is the ``LIVECHAT_SESSION_END`` / ``LIVECHAT_SESSION_EXPIRED`` payload of
  the transition that ends it.
* Every session ends exactly once, with exactly one reason; a session that has not ended is
  the one its conversation currently has open.
* An agent never holds more chats than its capacity; the desk knows only sessions that were
  opened, at most one per conversation.
* Every accepted user message is recorded once and goes to exactly one place: the bot (bot
  mode), the holding agent (live), or the waiting room (queued). A waiting-room message
  reaches the agent in the transcript shared at the session's next pickup, unless the session
  ends first, in which case nobody but the user sees it.
* Sequence numbers are gap-free per conversation, starting at 1.

Once every channel is empty (after the ``settle`` step, whenever the steps happen to drain
them, and, after every step, in copies of the model where everything in flight is delivered,
once as it is and once with every agent stepped away so that no pickup hides a ghost):

* The desk and the conversations agree on every session: an open session waits in the queue
  if its conversation is queued, and is held by its agent if it is live; the desk has nothing
  else (no waiting entry, no held chat, for a session that is not open).

With desk restarts (:class:`LifecycleWithRestartingDesk`) the machine finds two ways a
restarted desk disagrees with the conversations; both are expected failures until the desk
handles them, and their shortest sequences are spelt out at the end of this file.
"""

from __future__ import annotations

import copy
from collections import deque

import attrs
import hypothesis
import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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
    Refusal,
    UserSays,
    UserTyping,
)
from actors.machines import routing as rt
from actors.model import effects as fx
from actors.model.events import (
    AgentAssigned,
    Event,
    QueuePositionChanged,
    ReturnedToQueue,
    TimerFired,
)

BOT_SETTINGS = BotSettings(session_timeout=100.0, queue_timeout=60.0, grace_period=10.0)
CONVERSATIONS = ("c1", "c2", "c3", "c4")
CAPACITY = {"alice": 1, "bob": 2}
AGENTS = tuple(CAPACITY)
ENDINGS = {SESSION_END, SESSION_EXPIRED}
SETTLE_LIMIT = 10_000

conversations = st.sampled_from(CONVERSATIONS)
agents = st.sampled_from(AGENTS)


def note(event: str) -> None:
    """Count ``event`` in hypothesis' statistics (not when a sequence is run by hand)."""
    if hypothesis.currently_in_test_context():
        hypothesis.event(event)


@attrs.frozen
class Reassert:
    """In a conversation's inbox: the desk restarted, tell it about the open session again
    (what the switchboard posts to every actor with an open session)."""


REASSERT = Reassert()

DeskRequest = tuple[str, tuple[object, ...]]
"""A conversation's request in the desk's channel: a
:class:`~actors.machines.routing.Routing` method and its arguments but the time, as the desk
actor posts them."""


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
        #: Conversations to the desk: one channel, first in first out.
        self.to_desk: deque[DeskRequest] = deque()
        #: The desk to each conversation: one inbox each, first in first out.
        self.inboxes: dict[str, deque[Event | Reassert]] = {c: deque() for c in CONVERSATIONS}
        # Per conversation: the session and stamp of the last desk decision it applied.
        self.decisions: dict[str, tuple[str, tuple[int, int]]] = {}
        self.seqs: dict[str, list[int]] = {c: [] for c in CONVERSATIONS}
        self.opened: set[str] = set()
        self.ended: dict[str, list[str]] = {}
        self.waiting_room: dict[str, list[int]] = {}
        self.to_bot: list[Entry] = []
        self.delivered: list[tuple[str, int, str]] = []
        self.user_messages = 0
        self.connected = dict.fromkeys(AGENTS, False)

    # -- the conversations' side ----------------------------------------------------------------

    def handle(self, conv: str, event: Event) -> fx.Outcome:
        """One event handled by the conversation now; its requests to the desk are sent,
        not carried out."""
        before = self.states[conv]
        transition = self.lifecycle.handle(before, event, self.now)
        after = self.states[conv] = transition.state
        # What the effect runner remembers: the stamp of the last decision applied.
        if isinstance(event, AgentAssigned | ReturnedToQueue) and event.decision > self.as_of(
            conv, event.session_id
        ):
            self.decisions[conv] = (event.session_id, event.decision)
        emitted = [e.entry for e in transition.effects if isinstance(e, fx.Emit)]
        for entry in emitted:
            self.seqs[conv].append(entry.seq)
            if Party.BOT in entry.audience:
                self._check_bot_may_hear(before, after, entry)
                self.to_bot.append(entry)
            if entry.sender is Party.USER:
                if Party.BOT in entry.audience:
                    self.delivered.append((conv, entry.seq, "bot"))
                if Party.AGENT in entry.audience and entry.agent_id is not None:
                    self.delivered.append((conv, entry.seq, entry.agent_id))
                elif Party.AGENT in entry.audience:
                    # Written while waiting: for the human side, whoever picks it up.
                    assert entry.metadata.get("queued") and after.mode is Mode.QUEUED
        if after.session is not None:
            self.opened.add(after.session.session_id)
        note(f"reached {after.mode.value}")
        if isinstance(event, UserSays) and not isinstance(transition.outcome, Refusal):
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
            Party.AGENT in entry.audience and entry.agent_id is not None,
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
        """What the effect runner does: requests to the desk are posted to its channel, built
        from the state after the transition."""
        if isinstance(effect, fx.RequestAgent):
            session = state.session
            assert session is not None
            request = AgentRequest(
                conv,
                session.session_id,
                "demo",
                effect.queued_at,
                held_by=session.agent_id,
                as_of=self.as_of(conv, session.session_id),
            )
            self.to_desk.append(("request", (request,)))
        elif isinstance(effect, fx.WithdrawRequest):
            self.waiting_room.pop(effect.session_id, None)
            self.to_desk.append(("withdraw", (conv, effect.session_id)))
        elif isinstance(effect, fx.ReleaseAgent):
            self.waiting_room.pop(effect.session_id, None)
            self.to_desk.append(("release", (conv, effect.session_id, effect.agent_id)))
        elif isinstance(effect, fx.TransferChat):
            args = (conv, effect.session_id, effect.from_agent, effect.to_agent)
            self.to_desk.append(("transfer", args))
        elif isinstance(effect, fx.ShareTranscript):
            # The transcript at pickup: every entry so far that the user or agent may see
            # (what the actor reads from the store). Waiting-room messages must be in it.
            shown = set(self.seqs[conv])
            kept = self.waiting_room.pop(effect.session_id, [])
            assert set(kept) <= shown
            self.delivered.extend((conv, seq, effect.agent_id) for seq in kept)

    def _reassert(self, conv: str) -> None:
        """The conversation tells the (restarted) desk about its open session, if it still has
        one, with the agent who holds it."""
        session = self.states[conv].session
        if session is None:
            return
        queued_at = session.queued_at if session.queued_at is not None else session.started_at
        request = AgentRequest(
            conv,
            session.session_id,
            "demo",
            queued_at,
            held_by=session.agent_id,
            as_of=self.as_of(conv, session.session_id),
        )
        self.to_desk.append(("request", (request,)))

    def as_of(self, conv: str, session_id: str) -> tuple[int, int]:
        known = self.decisions.get(conv)
        return known[1] if known is not None and known[0] == session_id else (0, 0)

    # -- the desk's side ------------------------------------------------------------------------

    def _route(self, effects: list[rt.RoutingEffect]) -> None:
        """What the desk actor does with the routing's effects: events are posted to the
        conversations' inboxes; refusals go to the agent, views are refreshed."""
        for effect in effects:
            if isinstance(effect, rt.Assign):
                event: Event = AgentAssigned(
                    effect.session_id, effect.agent_id, effect.agent_name, effect.decision
                )
                self.inboxes[effect.conversation_id].append(event)
            elif isinstance(effect, rt.Position):
                event = QueuePositionChanged(effect.session_id, effect.position)
                self.inboxes[effect.conversation_id].append(event)
            elif isinstance(effect, rt.Requeued):
                event = ReturnedToQueue(
                    effect.session_id, effect.agent_id, effect.reason, effect.decision
                )
                self.inboxes[effect.conversation_id].append(event)
            elif isinstance(effect, rt.AgentRefusal):
                note(f"refused: {effect.refusal.code}")

    # -- delivery -------------------------------------------------------------------------------

    def in_flight(self) -> bool:
        return bool(self.to_desk) or any(self.inboxes.values())

    def _deliver_to_desk(self) -> None:
        verb, args = self.to_desk.popleft()
        self._route(getattr(self.routing, verb)(*args, self.now))

    def _deliver_to(self, conv: str) -> None:
        item = self.inboxes[conv].popleft()
        if isinstance(item, Reassert):
            self._reassert(conv)
        else:
            self.handle(conv, item)

    @precondition(lambda self: bool(self.to_desk))
    @rule()
    def deliver_to_desk(self) -> None:
        """The desk takes the next request in its channel."""
        self._deliver_to_desk()

    @precondition(lambda self: any(self.inboxes.values()))
    @rule(pick=st.integers(0, len(CONVERSATIONS) - 1))
    def deliver_to_conversation(self, pick: int) -> None:
        """One conversation with something in its inbox takes the next event."""
        ready = [c for c in CONVERSATIONS if self.inboxes[c]]
        self._deliver_to(ready[pick % len(ready)])

    @rule(desk_first=st.booleans())
    def settle(self, desk_first: bool) -> None:
        """Deliver everything in flight, round and round, until every channel is empty; then
        the desk and the conversations must agree."""
        for _ in range(SETTLE_LIMIT):
            if not self.in_flight():
                break
            if desk_first:
                while self.to_desk:
                    self._deliver_to_desk()
            for conv in CONVERSATIONS:
                if self.inboxes[conv]:
                    self._deliver_to(conv)
            if not desk_first:
                while self.to_desk:
                    self._deliver_to_desk()
        else:
            raise AssertionError("messages between desk and conversations never settle")
        self.assert_desk_agrees()

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
        assert isinstance(outcome, Refusal) == (mode is not Mode.BOT)

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
        assert isinstance(outcome, Refusal) == open_session

    # -- agents -------------------------------------------------------------------------------
    # An agent's action at the desk is applied at once: agents act independently of what is
    # in flight, so that is the same as posting it ahead of the requests still in the channel.

    @rule(agent=agents, conv=conversations, sign_off=st.booleans())
    def agent_says(self, agent: str, conv: str, sign_off: bool) -> None:
        session = self.states[conv].session
        holds = session is not None and session.agent_id == agent
        text = "bye LIVECHAT_SESSION_END" if sign_off else "hello"
        outcome = self.handle(conv, AgentSays(agent, Content.text(text)))
        assert isinstance(outcome, Refusal) != holds

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

    @rule(agent=agents, presence=st.sampled_from(Presence))
    def presence(self, agent: str, presence: Presence) -> None:
        self._route(self.routing.set_presence(agent, presence, self.now))

    @rule(agent=agents)
    def connect(self, agent: str) -> None:
        if not self.connected[agent]:
            self.connected[agent] = True
            self._route(self.routing.connected(agent, self.now))

    @rule(agent=agents)
    def disconnect(self, agent: str) -> None:
        if self.connected[agent]:
            self.connected[agent] = False
            self._route(self.routing.disconnected(agent, self.now))

    # -- the clock ----------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 5.0, 11.0, 30.0, 61.0, 101.0]))
    def time_passes(self, seconds: float) -> None:
        """Move the clock forward, firing every deadline on the way in order, the way the
        actors' timers and the desk's grace timer would; nothing in flight is delivered."""
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
        self.now = target

    # -- invariants at every step -------------------------------------------------------------

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
        """Offers never go past an agent's capacity. Only chats given back to their agent by
        a re-assertion after a restart may (the user and agent are already talking)."""
        for agent in self.routing.agents.values():
            offered = [c for c in agent.chats.values() if not c.given_back]
            assert len(offered) <= agent.capacity

    @invariant()
    def the_desk_knows_only_opened_sessions_once(self) -> None:
        routing = self.routing
        held = [
            (conv, chat.session_id)
            for agent in routing.agents.values()
            for conv, chat in agent.chats.items()
        ]
        waiting = [(w.conversation_id, w.session_id) for w in routing.queue]
        known = held + waiting
        assert len({conv for conv, _ in known}) == len(known)
        assert {session_id for _, session_id in known} <= self.opened

    @invariant()
    def user_messages_reach_one_place_once(self) -> None:
        messages = [(conv, seq) for conv, seq, _ in self.delivered]
        assert len(messages) == len(set(messages))
        waiting = sum(len(seqs) for seqs in self.waiting_room.values())
        assert len(messages) + waiting <= self.user_messages

    # -- invariants at quiescence -------------------------------------------------------------

    @invariant()
    def when_nothing_is_in_flight_the_desk_agrees(self) -> None:
        if not self.in_flight():
            self.assert_desk_agrees()

    @invariant()
    def once_what_is_in_flight_arrives_the_desk_agrees(self) -> None:
        """Settle a copy of everything now and check it, and another copy where every agent
        steps away first, so that no pickup hides a ghost: a disagreement that later steps
        would mend (an agent picking up a ghost, a new session replacing it) is still one."""
        if self.in_flight():
            self.fork().settle(desk_first=True)
            away = self.fork()
            for agent in AGENTS:
                away.presence(agent, Presence.AWAY)
            away.settle(desk_first=False)

    def fork(self) -> LifecycleWithDesk:
        """A copy of the model that can go on without touching this one."""
        fork = copy.copy(self)
        fork.routing = copy.deepcopy(self.routing)
        fork.states = dict(self.states)
        fork.to_desk = deque(self.to_desk)
        fork.inboxes = {conv: deque(inbox) for conv, inbox in self.inboxes.items()}
        fork.decisions = dict(self.decisions)
        fork.seqs = {conv: list(seqs) for conv, seqs in self.seqs.items()}
        fork.opened = set(self.opened)
        fork.ended = {session: list(reasons) for session, reasons in self.ended.items()}
        fork.waiting_room = {session: list(seqs) for session, seqs in self.waiting_room.items()}
        fork.to_bot = list(self.to_bot)
        fork.delivered = list(self.delivered)
        fork.connected = dict(self.connected)
        return fork

    def assert_desk_agrees(self) -> None:
        assert not self.in_flight()
        routing = self.routing
        for conv, state in self.states.items():
            holder = routing.holder_of(conv)
            waiting = routing.waiting(conv)
            session = state.session
            if session is None:
                assert holder is None, f"{conv} is in bot mode, yet {holder} holds it"
                assert waiting is None, f"{conv} is in bot mode, yet {waiting} waits"
            elif session.agent_id is None:
                assert holder is None, f"{conv} is queued, yet {holder} holds it"
                assert waiting is not None and waiting.session_id == session.session_id
            else:
                assert waiting is None, f"{conv} is live, yet {waiting} waits"
                assert holder is not None and holder.agent_id == session.agent_id
                assert holder.chats[conv].session_id == session.session_id
        open_sessions = {s.session.session_id for s in self.states.values() if s.session}
        for waiting in routing.queue:
            assert waiting.session_id in open_sessions, f"a ghost waits: {waiting}"

    def check_every_step(self) -> None:
        """The invariants that hold at every step (for the hand-written sequences below)."""
        self.sequence_numbers_have_no_gaps()
        self.every_session_ends_once_and_only_open_ones_have_not()
        self.no_agent_holds_more_than_its_capacity()
        self.the_desk_knows_only_opened_sessions_once()
        self.user_messages_reach_one_place_once()
        self.when_nothing_is_in_flight_the_desk_agrees()
        self.once_what_is_in_flight_arrives_the_desk_agrees()


FAST = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

LifecycleWithDesk.TestCase.settings = FAST
TestLifecycleWithDesk = LifecycleWithDesk.TestCase


class LifecycleWithRestartingDesk(LifecycleWithDesk):
    """The same, and the desk may restart at any step."""

    @rule()
    def desk_restarts(self) -> None:
        """The desk loses its queue and chats (agents keep presence and connections); its
        channel is kept. Every conversation with an open session is asked to re-assert it,
        through its inbox, after what the old desk already told it."""
        old = self.routing.agents.values()
        fresh = [
            rt.Agent(
                a.agent_id,
                a.name,
                a.bots,
                a.capacity,
                presence=a.presence,
                connections=a.connections,
                last_pickup=a.last_pickup,
            )
            for a in old
        ]
        self.routing = rt.Routing(fresh, {"demo": BOT_SETTINGS}, run=self.routing.run + 1)
        for conv, state in self.states.items():
            if state.session is not None:
                self.inboxes[conv].append(REASSERT)


LifecycleWithRestartingDesk.TestCase.settings = FAST
TestLifecycleWithRestartingDesk = LifecycleWithRestartingDesk.TestCase


# -- what the machine found, shrunk -----------------------------------------------------------


def run(ready: list[str], *steps: tuple[str, dict[str, object]]) -> None:
    """Run one sequence of steps, checking the invariants after each, as hypothesis does."""
    machine = LifecycleWithRestartingDesk()
    machine.agents_start_online(ready=ready)
    machine.check_every_step()
    for name, arguments in steps:
        getattr(machine, name)(**arguments)
        machine.check_every_step()
    machine.teardown()


def test_a_session_that_ends_while_sent_back_leaves_no_ghost_in_the_queue() -> None:
    """What the machine finds when an ended session's release only frees a held chat and a
    stale ``ReturnedToQueue`` is ignored: the session waits in the queue for ever."""
    run(
        ["alice", "bob"],
        ("user_starts", {"conv": "c1"}),
        ("deliver_to_desk", {}),
        ("deliver_to_conversation", {"pick": 0}),
        # c1 is live with Alice, whose one slot is taken; c4 goes live with Bob.
        ("user_starts", {"conv": "c4"}),
        ("deliver_to_desk", {}),
        ("deliver_to_conversation", {"pick": 0}),
        # Bob sends c4 back to the queue; nobody else is free, so it waits, and c4 is told.
        ("agent_transfers", {"agent": "bob", "conv": "c4", "to": None}),
        ("deliver_to_desk", {}),
        # Before c4 hears of it, its user ends the session, which c4 thinks Bob holds: the
        # release must take the waiting session out of the queue all the same.
        ("user_ends", {"conv": "c4"}),
        ("settle", {"desk_first": True}),
    )


def test_a_restarted_desk_gives_a_live_chat_back_to_its_agent_even_when_full() -> None:
    """Offers respect capacity; a chat the user and agent are already in is given back to its
    agent by the re-assertion even when a fresh desk has filled the slot meanwhile."""
    run(
        ["alice"],
        ("user_starts", {"conv": "c1"}),
        # The desk gives c1 to Alice (capacity 1); the assignment is on its way to c1.
        ("deliver_to_desk", {}),
        # The restarted desk forgets it; c1 is asked to re-assert after the assignment.
        ("desk_restarts", {}),
        ("user_starts", {"conv": "c2"}),
        # c1 goes live with Alice; the fresh desk gives c2 to Alice, whose slot looks free;
        # then c1 re-asserts Alice as its holder: she keeps both, and is offered no more.
        ("settle", {"desk_first": False}),
    )


def test_a_session_live_with_an_agent_is_held_by_that_agent_after_restarts() -> None:
    """The newest desk never decided about c1: the conversation's view (live with Alice, from
    an older desk's decision) wins over the queued re-assertion it sent before."""
    run(
        ["alice"],
        ("user_starts", {"conv": "c1"}),
        # The desk restarts with c1's request still in its channel: c1 is asked to
        # re-assert, and the new desk then gives c1 to Alice, after that request.
        ("desk_restarts", {}),
        ("deliver_to_desk", {}),
        # Again: c1's inbox is now re-assert, Alice assigned, re-assert.
        ("desk_restarts", {}),
        # c2 takes Alice's free slot at the newest desk; c1 re-asserts as queued (the newest
        # desk has it waiting), goes live with Alice, then re-asserts held by Alice: the desk
        # moves it from its queue to Alice.
        ("user_starts", {"conv": "c2"}),
        ("settle", {"desk_first": False}),
    )
