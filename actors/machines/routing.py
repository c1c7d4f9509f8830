"""Who gets which chat: the built-in desk's queue and agent pool, as a pure state machine.

Like the lifecycle, :class:`Routing` does no I/O and reads no clock: each method takes the
time when it needs it and returns the :data:`RoutingEffect` list for the desk actor to carry
out. The rules:

* One queue, first come first served; a session an agent gave up (grace period over, or sent
  back) goes to the head.
* A waiting session is offered to the least busy agent who serves its bot, is online and
  connected, and has a free slot (fewest chats first, then whoever waited longest since
  their last pickup).
* An agent who is away is offered nothing, but may still claim a waiting session by hand
  (an offline or disconnected agent may not).
* An agent who disconnects or goes offline while holding chats keeps them for the bot's
  grace period; after it they go back to the head of the queue.
* While the server is still starting (``starting``), no grace period runs out: chats given
  back to their agents by a restart count their grace from :meth:`Routing.started`, when
  agents can connect again.
* Every waiting session knows its position among the sessions of its bot; a change of
  position, or of whether any agent serving its bot is online, is reported (with an estimate
  of the wait from the pace of recent pickups, see :mod:`actors.machines.wait`); an
  unchanged one is not.

What the desk holds is a view derived from the conversations, keyed by session id: asking
again for a session it already has (waiting or held) changes nothing, a request for a newer
session of the same conversation replaces what was left of the old one, and a withdrawal or
release removes the session wherever it is. So any conversation can re-assert its session at
any time, and a desk that lost its state is rebuilt by every open session re-asserting.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping

import attrs

from actors.machines.wait import PickupPace
from actors.machines.waitqueue import WaitQueue
from actors.model.agent_request import NO_DECISION, AgentRequest, Decision
from actors.model.effects import Refusal
from actors.model.settings import BotSettings


class Presence(enum.Enum):
    ONLINE = "online"
    AWAY = "away"
    OFFLINE = "offline"


@attrs.define
class Chat:
    """``given_back``: the chat came back to its agent by a re-assertion (after a restart),
    not by an offer; it may take the agent over its capacity, since the user and the agent
    are already talking (the agent then gets no offer until back under it)."""

    conversation_id: str
    session_id: str
    bot_id: str
    grace_until: float | None = None
    given_back: bool = False


@attrs.define
class Agent:
    agent_id: str
    name: str
    bots: frozenset[str]
    capacity: int
    presence: Presence = Presence.OFFLINE
    connections: int = 0
    last_pickup: float = float("-inf")
    chats: dict[str, Chat] = attrs.field(factory=dict)

    @property
    def available(self) -> bool:
        return self.presence is Presence.ONLINE and self.connections > 0

    @property
    def away(self) -> bool:
        return self.connections == 0 or self.presence is Presence.OFFLINE


@attrs.define
class Waiting:
    conversation_id: str
    session_id: str
    bot_id: str
    queued_at: float
    not_agent: str | None = None
    position: int | None = None
    #: Whether an agent serving the bot was online when the position was last reported.
    agents_available: bool | None = None
    #: Where the queue keeps it (see :class:`~actors.machines.waitqueue.WaitQueue`).
    order: int = attrs.field(default=0, eq=False, repr=False)
    key: int = attrs.field(default=0, eq=False, repr=False)


@attrs.frozen
class Assign:
    conversation_id: str
    session_id: str
    agent_id: str
    agent_name: str
    decision: Decision = attrs.field(default=NO_DECISION, eq=False)


@attrs.frozen
class Position:
    """A waiting session's place (1 is next), the estimated wait in seconds (``None``:
    unknown) and whether any agent serving its bot is online."""

    conversation_id: str
    session_id: str
    position: int
    estimated_wait: float | None = None
    agents_available: bool | None = None


@attrs.frozen
class Requeued:
    conversation_id: str
    session_id: str
    agent_id: str
    reason: str
    decision: Decision = attrs.field(default=NO_DECISION, eq=False)


@attrs.frozen
class AgentRefusal:
    """A request from an agent (transfer, pickup) that could not be done: the desk delivers
    ``refusal`` (which names the conversation) to that agent."""

    agent_id: str
    refusal: Refusal


@attrs.frozen
class DeskChanged:
    """The queue or some agent's chats changed: the desk refreshes the agents' views."""


RoutingEffect = Assign | Position | Requeued | AgentRefusal | DeskChanged

_CHANGED = DeskChanged()


class Routing:
    """The queue and the agents of the built-in desk."""

    def __init__(
        self,
        agents: Iterable[Agent],
        settings: Mapping[str, BotSettings],
        run: int = 1,
        pace: PickupPace | None = None,
        *,
        starting: bool = False,
    ) -> None:
        self.agents: dict[str, Agent] = {agent.agent_id: agent for agent in agents}
        # Recent pickups per bot, for the estimated wait (kept across a desk's restart).
        self.pace = pace if pace is not None else PickupPace()
        # Until :meth:`started`, nobody can connect: grace periods wait instead of running.
        self.starting = starting
        # Stamps on decisions told to conversations: ``run`` grows with every restart.
        self.run = run
        self._stamps = itertools.count(1)
        self._decided: dict[str, Decision] = {}
        self.settings = dict(settings)
        self.queue: WaitQueue[Waiting] = WaitQueue()
        # Per bot, the first place whose position may have changed since the last report,
        # and whether an agent serving the bot was online then: reports walk only from there.
        self._moved: dict[str, int] = {}
        self._staffed: dict[str, bool] = {}
        # Indexes by conversation id, so no request walks the queue or the agents.
        self._waiting: dict[str, Waiting] = {}
        self._held: dict[str, Agent] = {}
        # Agents away while holding chats: the only ones with grace periods running.
        self._in_grace: set[str] = set()
        for agent in self.agents.values():
            for conversation_id, chat in agent.chats.items():
                self._held[conversation_id] = agent
                if chat.grace_until is not None:
                    self._in_grace.add(agent.agent_id)
        # Whose view of the desk changed since the desk last published: agents whose chats
        # or presence changed, and bots whose queue changed (seen by all their agents).
        self.changed_agents: set[str] = set()
        self.changed_bots: set[str] = set()

    def take_changes(self) -> list[str]:
        """The agents whose view changed since the last call, so that the desk re-sends only
        those views (a view lists the agent's chats, its bots' queue, and its colleagues'
        presence and free slots: a change of one agent is seen by all who share a bot)."""
        agents = self.changed_agents
        bots = self.changed_bots
        for agent_id in agents:
            changed = self.agents.get(agent_id)
            if changed is not None:
                bots |= changed.bots
        if bots:
            agents |= {a.agent_id for a in self.agents.values() if not a.bots.isdisjoint(bots)}
        self.changed_agents = set()
        self.changed_bots = set()
        return sorted(agents)

    # -- queries ----------------------------------------------------------------------------

    def holder_of(self, conversation_id: str) -> Agent | None:
        return self._held.get(conversation_id)

    def waiting(self, conversation_id: str) -> Waiting | None:
        return self._waiting.get(conversation_id)

    def next_deadline(self) -> float | None:
        if self.starting:
            return None
        deadlines = [
            chat.grace_until
            for agent_id in self._in_grace
            for chat in self.agents[agent_id].chats.values()
            if chat.grace_until is not None
        ]
        return min(deadlines, default=None)

    # -- sessions ---------------------------------------------------------------------------

    def request(self, request: AgentRequest, now: float) -> list[RoutingEffect]:
        """A session asks for a human, or re-asserts that it is open (idempotent)."""
        effects, settle = self._admit(request, now)
        return [*effects, *self._settle(now)] if settle else effects

    def request_many(self, requests: Iterable[AgentRequest], now: float) -> list[RoutingEffect]:
        """Many sessions re-assert themselves at once (a restart restores thousands), in
        this order. While nobody is available, settling after each request could hand out
        nothing, so the desk takes them all and settles once: the same queue, places and
        chats as :meth:`request` one by one, and each position reported once (its final
        value), not once per request behind it. With an agent available, where each request
        lands depends on what the previous ones were handed: they are taken one by one."""
        if any(agent.available for agent in self.agents.values()):
            return [effect for request in requests for effect in self.request(request, now)]
        effects: list[RoutingEffect] = []
        settle = changed = False
        for request in requests:
            admitted, settles = self._admit(request, now)
            effects.extend(effect for effect in admitted if effect is not _CHANGED)
            settle = settle or settles
            changed = changed or bool(admitted)
        if settle:
            effects.extend(self._settle(now))
        elif changed:
            effects.append(_CHANGED)
        return effects

    def _admit(self, request: AgentRequest, now: float) -> tuple[list[RoutingEffect], bool]:
        """Take ``request`` into the queue or the chats: what it gives, and whether the
        desk must settle after it (:meth:`request` and :meth:`request_many`)."""
        conversation_id = request.conversation_id
        current = self._session_of(conversation_id)
        if current == request.session_id:
            return self._reconcile(request, now)
        if current is not None:
            # What is left of an older session of the same conversation: the new one wins
            # (the places behind it moved, as on a withdrawal).
            self._forget(conversation_id, current)
        holder = self.agents.get(request.held_by) if request.held_by else None
        if holder is not None:
            return self._give_back(holder, request, now), current is not None
        self._enqueue(
            Waiting(conversation_id, request.session_id, request.bot_id, request.queued_at)
        )
        return [], True

    def _give_back(self, holder: Agent, request: AgentRequest, now: float) -> list[RoutingEffect]:
        """A restarted server (or desk) gives the session back to the agent the conversation
        says holds it; if that agent is not connected, the grace period starts now."""
        self._hold(
            holder,
            Chat(request.conversation_id, request.session_id, request.bot_id, given_back=True),
        )
        self._update_grace(holder, now)
        return [_CHANGED]

    def _reconcile(self, request: AgentRequest, now: float) -> tuple[list[RoutingEffect], bool]:
        """A re-assertion of a session the desk has. If the desk decided about it since the
        decision the conversation last applied, its word is on the way: nothing changes.
        Otherwise the conversation's view wins: the desk moves the session to where the
        conversation says it is (it applied an older run's decision the desk never made)."""
        conversation_id, session_id = request.conversation_id, request.session_id
        decided = self._decided.get(session_id)
        if decided is not None and decided > request.as_of:
            return [], False
        holder = self._held.get(conversation_id)
        wanted = self.agents.get(request.held_by) if request.held_by else None
        if wanted is None:
            if holder is None:
                return [], False
            # The conversation waits: the desk's chat is a stale one.
            chat = holder.chats[conversation_id]
            self._unhold(holder, conversation_id)
            self._enqueue(Waiting(conversation_id, session_id, chat.bot_id, now), first=True)
            return [], True
        if holder is wanted:
            return [], False
        self._forget(conversation_id, session_id)
        return self._give_back(wanted, request, now), True

    def withdraw(self, conversation_id: str, session_id: str, now: float) -> list[RoutingEffect]:
        """The session is no longer current: forget it, waiting or held."""
        if not self._forget(conversation_id, session_id):
            return []
        return self._settle(now)

    def release(
        self, conversation_id: str, session_id: str, agent_id: str, now: float
    ) -> list[RoutingEffect]:
        """The session ended (or was stale) for ``agent_id``: forget it wherever it is now
        (the desk may have sent it back to the queue meanwhile)."""
        return self.withdraw(conversation_id, session_id, now)

    def transfer(
        self,
        conversation_id: str,
        session_id: str,
        from_agent: str,
        to_agent: str | None,
        now: float,
    ) -> list[RoutingEffect]:
        source = self.agents.get(from_agent)
        chat = source.chats.get(conversation_id) if source else None
        if source is None or chat is None or chat.session_id != session_id:
            refusal = Refusal("not_assigned", "You do not hold it.", conversation_id)
            return [AgentRefusal(from_agent, refusal)]
        self.changed_agents.add(from_agent)
        if to_agent is None:
            self._unhold(source, conversation_id)
            self._enqueue(
                Waiting(conversation_id, session_id, chat.bot_id, now, not_agent=from_agent),
                first=True,
            )
            requeued = Requeued(
                conversation_id, session_id, from_agent, "transferred", self._stamp(session_id)
            )
            return [requeued, *self._settle(now)]
        target = self.agents.get(to_agent)
        problem = self._cannot_take(target, chat.bot_id)
        if target is None or problem is not None:
            message = problem or f"There is no agent {to_agent!r}."
            return [AgentRefusal(from_agent, Refusal("transfer_failed", message, conversation_id))]
        self._unhold(source, conversation_id)
        self._hold(target, Chat(conversation_id, session_id, chat.bot_id))
        target.last_pickup = now
        return [
            Assign(
                conversation_id, session_id, target.agent_id, target.name, self._stamp(session_id)
            ),
            *self._settle(now),
        ]

    def claim(self, agent_id: str, conversation_id: str, now: float) -> list[RoutingEffect]:
        """An agent picks a waiting session out of the queue by hand."""
        agent = self.agents.get(agent_id)
        waiting = self.waiting(conversation_id)
        if agent is None or waiting is None:
            refusal = Refusal("not_waiting", "That chat is not waiting.", conversation_id)
            return [AgentRefusal(agent_id, refusal)]
        problem = self._cannot_take(agent, waiting.bot_id, by_hand=True)
        if problem is not None:
            return [AgentRefusal(agent_id, Refusal("cannot_claim", problem, conversation_id))]
        return [self._assign(waiting, agent, now), *self._settle(now)]

    # -- agents -----------------------------------------------------------------------------

    def set_presence(self, agent_id: str, presence: Presence, now: float) -> list[RoutingEffect]:
        agent = self.agents[agent_id]
        agent.presence = presence
        self._update_grace(agent, now)
        return self._settle(now)

    def connected(self, agent_id: str, now: float) -> list[RoutingEffect]:
        agent = self.agents[agent_id]
        agent.connections += 1
        self._update_grace(agent, now)
        return self._settle(now)

    def disconnected(self, agent_id: str, now: float) -> list[RoutingEffect]:
        agent = self.agents[agent_id]
        agent.connections = max(0, agent.connections - 1)
        self._update_grace(agent, now)
        return self._settle(now)

    def new_settings(
        self, bot_id: str, settings: BotSettings, capacities: Mapping[str, int], now: float
    ) -> list[RoutingEffect]:
        """A bot's settings changed; ``capacities``: the agents whose capacity follows them.
        Grace periods already running keep their end; a larger capacity may hand out
        waiting chats at once. Every desk serving the bot is told again (its canned responses
        may have changed)."""
        self.settings[bot_id] = settings
        self.changed_bots.add(bot_id)
        for agent_id, capacity in capacities.items():
            agent = self.agents.get(agent_id)
            if agent is not None and agent.capacity != capacity:
                agent.capacity = capacity
                self.changed_agents.add(agent_id)
        return self._settle(now)

    def started(self, now: float) -> list[RoutingEffect]:
        """The server is ready: agents can connect again. Every grace period running now
        began while it was starting (a chat given back to an agent not yet connected), so
        each counts from ``now``, not from the crash or the chat's last message. Once
        started, it changes nothing (grace periods that began since run as they are)."""
        if not self.starting:
            return []
        self.starting = False
        for agent_id in self._in_grace:
            agent = self.agents[agent_id]
            for chat in agent.chats.values():
                if chat.grace_until is not None:
                    chat.grace_until = now + self.settings[chat.bot_id].grace_period
            self.changed_agents.add(agent_id)
        return [_CHANGED]

    def expire_grace(self, now: float) -> list[RoutingEffect]:
        if self.starting:
            return []
        effects: list[RoutingEffect] = []
        for agent_id in sorted(self._in_grace):
            agent = self.agents[agent_id]
            for chat in list(agent.chats.values()):
                if chat.grace_until is not None and chat.grace_until <= now:
                    self._unhold(agent, chat.conversation_id)
                    self._enqueue(
                        Waiting(chat.conversation_id, chat.session_id, chat.bot_id, now),
                        first=True,
                    )
                    effects.append(
                        Requeued(
                            chat.conversation_id,
                            chat.session_id,
                            agent.agent_id,
                            "agent_left",
                            self._stamp(chat.session_id),
                        )
                    )
        return [*effects, *self._settle(now)] if effects else []

    # -- internals --------------------------------------------------------------------------

    def _cannot_take(
        self, agent: Agent | None, bot_id: str, *, by_hand: bool = False
    ) -> str | None:
        if agent is None:
            return "No such agent."
        if bot_id not in agent.bots:
            return f"{agent.name} does not serve this bot."
        if not agent.available and not (by_hand and not agent.away):
            # "Away" only stops offers: a connected agent may still pick up by hand.
            return f"{agent.name} is not online."
        if len(agent.chats) >= agent.capacity:
            return f"{agent.name} has no free slot."
        return None

    def _update_grace(self, agent: Agent, now: float) -> None:
        # Called whenever presence or connections change, which the agent's view shows.
        self.changed_agents.add(agent.agent_id)
        if agent.away:
            for chat in agent.chats.values():
                if chat.grace_until is None:
                    chat.grace_until = now + self.settings[chat.bot_id].grace_period
            if agent.chats:
                self._in_grace.add(agent.agent_id)
        else:
            for chat in agent.chats.values():
                chat.grace_until = None
            self._in_grace.discard(agent.agent_id)

    def _session_of(self, conversation_id: str) -> str | None:
        """The session of the conversation the desk knows about, waiting or held."""
        waiting = self._waiting.get(conversation_id)
        if waiting is not None:
            return waiting.session_id
        holder = self._held.get(conversation_id)
        return None if holder is None else holder.chats[conversation_id].session_id

    def _forget(self, conversation_id: str, session_id: str) -> bool:
        """Remove ``session_id`` from the queue or from its holder; whether it was there."""
        self._decided.pop(session_id, None)
        waiting = self._waiting.get(conversation_id)
        if waiting is not None and waiting.session_id == session_id:
            self._dequeue(waiting)
            return True
        holder = self._held.get(conversation_id)
        if holder is not None and holder.chats[conversation_id].session_id == session_id:
            self._unhold(holder, conversation_id)
            return True
        return False

    def _enqueue(self, waiting: Waiting, *, first: bool = False) -> None:
        self._moved_from(waiting.bot_id, self.queue.add(waiting, first=first))
        self._waiting[waiting.conversation_id] = waiting
        self.changed_bots.add(waiting.bot_id)

    def _dequeue(self, waiting: Waiting) -> None:
        self._moved_from(waiting.bot_id, self.queue.remove(waiting))
        del self._waiting[waiting.conversation_id]
        self.changed_bots.add(waiting.bot_id)

    def _moved_from(self, bot_id: str, place: int) -> None:
        moved = self._moved.get(bot_id)
        if moved is None or place < moved:
            self._moved[bot_id] = place

    def _hold(self, agent: Agent, chat: Chat) -> None:
        agent.chats[chat.conversation_id] = chat
        self._held[chat.conversation_id] = agent
        self.changed_agents.add(agent.agent_id)

    def _unhold(self, agent: Agent, conversation_id: str) -> None:
        chat = agent.chats.pop(conversation_id)
        del self._held[conversation_id]
        if not agent.chats:
            self._in_grace.discard(agent.agent_id)
        self.changed_agents.add(agent.agent_id)
        self.changed_bots.add(chat.bot_id)

    def _assign(self, waiting: Waiting, agent: Agent, now: float) -> Assign:
        self._dequeue(waiting)
        self._hold(agent, Chat(waiting.conversation_id, waiting.session_id, waiting.bot_id))
        agent.last_pickup = now
        self.pace.picked_up(waiting.bot_id, now)
        return Assign(
            waiting.conversation_id,
            waiting.session_id,
            agent.agent_id,
            agent.name,
            self._stamp(waiting.session_id),
        )

    def _stamp(self, session_id: str) -> Decision:
        decision = (self.run, next(self._stamps))
        self._decided[session_id] = decision
        return decision

    def _best_agent(self, waiting: Waiting) -> Agent | None:
        best: Agent | None = None
        for agent in self.agents.values():
            if (
                agent.available
                and waiting.bot_id in agent.bots
                and len(agent.chats) < agent.capacity
                and agent.agent_id != waiting.not_agent
                and (
                    best is None
                    or (len(agent.chats), agent.last_pickup) < (len(best.chats), best.last_pickup)
                )
            ):
                best = agent
        return best

    def _free_bots(self) -> set[str]:
        """The bots served by an online, connected agent with a free slot."""
        return {
            bot
            for a in self.agents.values()
            if a.available and len(a.chats) < a.capacity
            for bot in a.bots
        }

    def _hand_out(self, now: float) -> list[RoutingEffect]:
        """Offer waiting sessions to free agents, first come first served. Only the lines
        of bots with a free agent are walked, from their heads, so a long queue costs
        nothing when nobody can take from it."""
        effects: list[RoutingEffect] = []
        while self.queue:
            bots = self._free_bots()
            if not bots:
                break
            for waiting in self.queue.of_bots(bots):
                agent = self._best_agent(waiting)
                if agent is not None:
                    effects.append(self._assign(waiting, agent, now))
                    break
            else:
                break
        return effects

    def _settle(self, now: float) -> list[RoutingEffect]:
        """Hand out what can be handed out, first come first served, then report the
        positions that changed: only the places from the first one that moved in each
        bot's line are walked (all of a line when its bot became staffed or unstaffed).
        With nobody waiting there is nothing to hand out or report, so the agent pool is not
        walked: a crowd of chats ending at once comes here once per chat."""
        queue = self.queue
        if not queue:
            self._moved.clear()
            return [_CHANGED]
        online = [agent for agent in self.agents.values() if agent.available]
        # Nobody online (a server restoring its sessions): nothing to hand out.
        effects = self._hand_out(now) if online else []
        if queue:
            staffed = {bot for agent in online for bot in agent.bots}
            for bot in queue.bots():
                available = bot in staffed
                if self._staffed.get(bot) is not available:
                    self._staffed[bot] = available
                    self._moved[bot] = 1
        reports: list[tuple[int, Position]] = []
        for bot, first in self._moved.items():
            available = self._staffed.get(bot, False)
            for position, waiting in enumerate(queue.from_place(bot, first), first):
                if waiting.position != position or waiting.agents_available is not available:
                    if waiting.position != position:
                        waiting.position = position
                        self.changed_bots.add(bot)
                    waiting.agents_available = available
                    estimate = self.pace.estimate(bot, position, now)
                    reports.append(
                        (
                            waiting.order,
                            Position(
                                waiting.conversation_id,
                                waiting.session_id,
                                position,
                                estimate,
                                available,
                            ),
                        )
                    )
        self._moved.clear()
        reports.sort(key=_first)
        effects.extend(report for _, report in reports)
        effects.append(_CHANGED)
        return effects


def _first(report: tuple[int, Position]) -> int:
    return report[0]
