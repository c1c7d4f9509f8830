"""The built-in agent desk: Switchover's own livechat backend, as an actor.

The desk's queue and agent pool live in :class:`~actors.machines.routing.Routing`, owned by one task
that takes requests from conversations and from agents' connections on its own channel, and
owns the one timer that ends agents' grace periods. Deliveries to agents do not pass through
that task: a conversation hands them straight to the agent's connected sinks, so a live
message costs no extra hop.

Restarts: agents' presence can be put back with :meth:`Desk.restore_presences` before the
desk runs, and a desk made with ``wait_for_ready`` lets no grace period run out until
:meth:`Desk.ready` (the server accepts connections again), so an agent who held chats when
the server stopped has the whole grace period to come back. An agent who connects is sent,
for every chat it holds, the chat's transcript, as on pickup.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import attrs
import trio

from actors.machines import routing as rt
from actors.model import events as ev
from actors.model.agent_request import AgentRequest
from actors.model.content import Content
from actors.model.deliveries import Colleague, Delivery, DeskStatus, HeldChat, WaitingItem
from actors.model.limits import ConversationLimits
from actors.model.records import Entry, Party
from actors.model.settings import BotSettings, with_sign_off
from actors.ports import CoreLink, Sink
from actors.trio.effect_runner import abandon
from actors.trio.transcripts import read_transcript

log = logging.getLogger("switchover.desk")


@attrs.frozen
class AgentProfile:
    """An agent as configured: who, which bots, how many chats at once (``None``: the
    smallest default among its bots' settings)."""

    agent_id: str
    name: str
    bots: frozenset[str]
    capacity: int | None = None


class UnknownAgent(Exception):
    pass


# -- what the desk is asked, on its one channel ---------------------------------------------


@attrs.frozen
class Connected:
    """``sink``: the connection that joined, to be sent the transcripts of the agent's chats."""

    agent_id: str
    sink: Sink | None = attrs.field(default=None, eq=False)


@attrs.frozen
class Disconnected:
    agent_id: str


@attrs.frozen
class SetPresence:
    agent_id: str
    presence: rt.Presence


@attrs.frozen
class Claim:
    agent_id: str
    conversation_id: str


@attrs.frozen
class Request:
    request: AgentRequest


@attrs.frozen
class Restore:
    """Open sessions re-asserted all at once, in the order they opened (a restart)."""

    requests: tuple[AgentRequest, ...]


@attrs.frozen
class Withdraw:
    conversation_id: str
    session_id: str


@attrs.frozen
class Release:
    conversation_id: str
    session_id: str
    agent_id: str


@attrs.frozen
class Transfer:
    conversation_id: str
    session_id: str
    from_agent: str
    to_agent: str | None


@attrs.frozen
class Ready:
    """The server accepts connections: grace periods held since start-up begin now."""


@attrs.frozen
class NewSettings:
    """An administrator changed a bot's livechat settings."""

    bot_id: str
    settings: BotSettings


@attrs.frozen
class UserCame:
    """A client of the conversation's user connected."""

    conversation_id: str


@attrs.frozen
class UserWent:
    """A client of the conversation's user disconnected."""

    conversation_id: str


@attrs.frozen
class UserWrote:
    """The user wrote while waiting: the queue shows the latest, in short."""

    conversation_id: str
    summary: str
    at: float


DeskRequest = (
    Connected
    | Disconnected
    | SetPresence
    | Claim
    | Request
    | Restore
    | Withdraw
    | Release
    | Transfer
    | NewSettings
    | UserCame
    | UserWent
    | UserWrote
    | Ready
)

USERS_KEPT = 50_000
"""What the desk remembers of users (name, last message, connection) is kept for at most
this many conversations, the least recently heard of forgotten first."""

SUMMARY_LENGTH = 120


@attrs.define
class _User:
    """What agents are shown about a conversation's user besides its transcript."""

    name: str = ""
    last_message: str = ""
    last_message_at: float | None = None
    connections: int = 0
    since: float | None = None


def summary(content: Content) -> str:
    """A message in one short line, for a list: its text, or its kind."""
    text = content.content.get("text")
    if content.content_type == "text" and isinstance(text, str):
        flat = " ".join(text.split())
        return flat if len(flat) <= SUMMARY_LENGTH else flat[: SUMMARY_LENGTH - 1] + "…"
    title = content.content.get("title")
    if isinstance(title, str) and title.strip():
        return summary(Content.text(title))
    return f"[{content.content_type}]"


class Desk:
    """Implements :class:`~actors.ports.LivechatBackend` with a queue and online agents.

    Agents' connections call :meth:`attach`, :meth:`detach`, :meth:`set_presence` and
    :meth:`claim`; conversations call the backend methods. All of them only post to the
    desk's channel, so none blocks.

    ``publish_interval``: agents' views of the desk
    (:class:`~actors.model.deliveries.DeskStatus`) are re-sent at most this often (seconds); changes
    in between are gathered into the next one. A view lists every chat and the whole queue, so
    rebuilding views after every change would cost the desk more than the changes themselves when
    thousands of sessions move at once. Messages, assignments and problems are never delayed, only
    the views. While changes keep coming faster than that, the interval doubles after each
    publish, up to ``publish_interval_max``, and falls back once the desk is quiet again.

    ``transcript_tail``: entries of a chat sent to an agent who connects while holding it (as
    ``limits.transcript_tail`` on pickup). ``wait_for_ready``: no grace period runs out before
    :meth:`ready` is called; a server calls it once its listeners accept connections, so that
    agents who held chats before a restart get the whole grace period to reconnect.
    ``run``: where the run numbers of its decisions' stamps start; a desk that takes over
    from another (the clustered mode's, by its lease epoch) starts above the other's, so its
    decisions order after the other's.
    """

    def __init__(
        self,
        settings: Mapping[str, BotSettings],
        agents: Iterable[AgentProfile] = (),
        *,
        publish_interval: float = 0.05,
        publish_interval_max: float = 0.4,
        transcript_tail: int = ConversationLimits().transcript_tail,
        wait_for_ready: bool = False,
        run: int = 1,
    ) -> None:
        self.settings = dict(settings)
        self.publish_interval = publish_interval
        self.publish_interval_max = max(publish_interval, publish_interval_max)
        self.transcript_tail = transcript_tail
        self.profiles: dict[str, AgentProfile] = {}
        self._sinks: dict[str, list[Sink]] = {}
        self._routing = rt.Routing([], self.settings, run=run, starting=wait_for_ready)
        self._nursery: trio.Nursery | None = None
        send, receive = trio.open_memory_channel[DeskRequest](math.inf)
        self._send = send
        self._receive = receive
        self._core: CoreLink | None = None
        self._users: OrderedDict[str, _User] = OrderedDict()
        for profile in agents:
            self.add_agent(profile)

    def _fresh_routing(self) -> rt.Routing:
        old = self._routing.agents
        agents = [
            rt.Agent(
                a.agent_id,
                a.name,
                a.bots,
                a.capacity,
                presence=a.presence,
                connections=len(self._sinks.get(a.agent_id, ())),
                last_pickup=a.last_pickup,
            )
            for a in old.values()
        ]
        return rt.Routing(
            agents,
            self.settings,
            run=self._routing.run + 1,
            pace=self._routing.pace,
            starting=self._routing.starting,
        )

    def add_agent(self, profile: AgentProfile) -> None:
        unknown = profile.bots - set(self.settings)
        if unknown:
            raise ValueError(f"agent {profile.agent_id!r} serves unknown bots {sorted(unknown)}")
        capacity = self._default_capacity(profile)
        self.profiles[profile.agent_id] = profile
        self._routing.agents[profile.agent_id] = rt.Agent(
            profile.agent_id, profile.name, profile.bots, capacity
        )

    def restore_presences(self, presences: Mapping[str, str]) -> int:
        """Put back each agent's last presence (by agent id: ``online``, ``away`` or
        ``offline``), as kept by the store before a restart; call it before :meth:`run`.
        Unknown agents and values are skipped. Returns how many were put back."""
        restored = 0
        for agent_id, value in presences.items():
            agent = self._routing.agents.get(agent_id)
            try:
                presence = rt.Presence(value)
            except ValueError:
                continue
            if agent is not None:
                agent.presence = presence
                restored += 1
        return restored

    def ready(self) -> None:
        """The server accepts connections again: grace periods held since start-up (chats
        given back to agents who have not reconnected yet) count from now."""
        self._send.send_nowait(Ready())

    # -- the agents' side -------------------------------------------------------------------

    def attach(self, agent_id: str, sink: Sink) -> None:
        """An agent's client connected. It is sent the transcript of every chat the agent
        holds, so a desk that reconnects (or signs in afresh) has each chat's user and
        history without claiming it again."""
        if agent_id not in self.profiles:
            raise UnknownAgent(agent_id)
        self._sinks.setdefault(agent_id, []).append(sink)
        self._send.send_nowait(Connected(agent_id, sink))

    def detach(self, agent_id: str, sink: Sink) -> None:
        sinks = self._sinks.get(agent_id, [])
        if sink in sinks:
            sinks.remove(sink)
            self._send.send_nowait(Disconnected(agent_id))

    def set_presence(self, agent_id: str, presence: rt.Presence) -> None:
        if agent_id not in self.profiles:
            raise UnknownAgent(agent_id)
        self._send.send_nowait(SetPresence(agent_id, presence))

    def claim(self, agent_id: str, conversation_id: str) -> None:
        self._send.send_nowait(Claim(agent_id, conversation_id))

    def apply_settings(self, bot_id: str, settings: BotSettings) -> None:
        """A bot's settings changed: grace periods that start from now on and agents'
        default capacity follow them (grace periods already running keep their end)."""
        self._send.send_nowait(NewSettings(bot_id, settings))

    # -- the users' side ----------------------------------------------------------------------

    def user_attached(self, conversation_id: str) -> None:
        """A user's client connected to the conversation: its agent sees the user is there."""
        self._send.send_nowait(UserCame(conversation_id))

    def user_detached(self, conversation_id: str) -> None:
        """A user's client left; when it was the last one, its agent sees since when."""
        self._send.send_nowait(UserWent(conversation_id))

    # -- the conversations' side (LivechatBackend) ------------------------------------------

    def request_agent(self, request: AgentRequest) -> None:
        self._send.send_nowait(Request(request))

    def request_agents(self, requests: Sequence[AgentRequest]) -> None:
        """Many open sessions re-asserted at once (a restart's restore), in this order:
        taken as one request each, settled once (:meth:`Routing.request_many`)."""
        if requests:
            self._send.send_nowait(Restore(tuple(requests)))

    def withdraw(self, conversation_id: str, session_id: str) -> None:
        self._send.send_nowait(Withdraw(conversation_id, session_id))

    def release(self, conversation_id: str, session_id: str, agent_id: str, reason: str) -> None:
        self._send.send_nowait(Release(conversation_id, session_id, agent_id))

    def transfer(
        self, conversation_id: str, session_id: str, from_agent: str, to_agent: str | None
    ) -> None:
        self._send.send_nowait(Transfer(conversation_id, session_id, from_agent, to_agent))

    def deliver(self, agent_id: str, item: Delivery, *, skip: Sink | None = None) -> None:
        failed: list[Sink] = []
        for sink in self._sinks.get(agent_id, ()):
            if sink is not skip:
                try:
                    sink.deliver(item)
                except Exception:
                    log.exception("an agent's client failed; it is closed and will resume")
                    failed.append(sink)
        for sink in failed:
            self.detach(agent_id, sink)
            abandon(sink)

    def deliver_waiting(self, session_id: str, entry: Entry) -> None:
        """The agent who picks the session up reads it in the transcript; until then the
        queue shows the user's latest message in short."""
        if entry.sender is Party.USER:
            self._send.send_nowait(
                UserWrote(entry.conversation_id, summary(entry.content), entry.at)
            )

    # -- the actor --------------------------------------------------------------------------

    async def run(self, core: CoreLink, *, task_status: trio.TaskStatus[None]) -> None:
        """Serve requests until cancelled. Each run starts from a fresh view of the sessions
        (agents keep their presence and connections): after a restart the switchboard has
        every open session re-assert itself, which rebuilds the queue and the chats."""
        self._core = core
        self._routing = self._fresh_routing()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._serve(core, task_status)
            finally:
                self._nursery = None

    async def _serve(self, core: CoreLink, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        routing = self._routing
        clock = core.clock
        unpublished = False
        published_at = -math.inf
        # When the views were first changed since the last publish, and how long the views
        # wait between two publishes now (see ``_next_interval``).
        changed_at = -math.inf
        interval = self.publish_interval
        while True:
            grace = routing.next_deadline()
            armed = clock.to_trio(grace) if grace is not None else math.inf
            if unpublished:
                armed = min(armed, published_at + interval)
            changed = False
            with trio.move_on_at(armed):
                request = await self._receive.receive()
                changed = self._apply(request)
                while True:
                    try:
                        request = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    changed = self._apply(request) or changed
            if grace is not None and clock.now() >= grace:
                changed = self._carry_out(routing.expire_grace(clock.now())) or changed
            if changed and not unpublished:
                unpublished = True
                changed_at = trio.current_time()
            if unpublished and trio.current_time() >= published_at + interval:
                interval = self._next_interval(interval, changed_at < published_at + interval)
                await self._publish()
                unpublished = False
                published_at = trio.current_time()

    def _next_interval(self, interval: float, waited: bool) -> float:
        """The wait before the next publish. While the views change faster than they are sent
        (``waited``: this publish's first change came before the interval was up), the wait
        doubles, up to ``publish_interval_max``; a publish whose change came after a quiet
        interval starts again from ``publish_interval``. A crowd of sessions ending at once
        changes every view of a bot for seconds, and each view lists all of an agent's chats:
        re-sent every 50 ms, they were a fifth of the server's work (bench/README.md, 2026-12-03
        (evening))."""
        if not waited:
            return self.publish_interval
        return min(max(interval * 2, self.publish_interval), self.publish_interval_max)

    def _apply(self, request: DeskRequest) -> bool:
        assert self._core is not None
        if isinstance(request, UserCame | UserWent | UserWrote):
            return self._note_user(request, self._core.clock.now())
        if isinstance(request, Restore):
            return self._restore(request.requests, self._core.clock.now())
        given_back = None
        if isinstance(request, Request):
            self._note_name(request.request)
            if self._gives_back(request.request):
                given_back = request.request
        try:
            effects = self._route(request, self._core.clock.now())
        except (KeyError, ValueError):
            # One request about an agent or chat the desk does not know (a race with a
            # restart) must not take the desk down with every agent's queue.
            log.exception("desk: %r failed", request)
            return False
        if isinstance(request, Connected):
            self._share_held(request.agent_id, request.sink)
        elif given_back is not None:
            self._share_given_back(given_back)
        return self._carry_out(effects)

    def _restore(self, requests: tuple[AgentRequest, ...], now: float) -> bool:
        """What :meth:`_apply` does for each request, with the routing settled once."""
        for request in requests:
            self._note_name(request)
        given_back = [request for request in requests if self._gives_back(request)]
        try:
            effects = self._routing.request_many(requests, now)
        except (KeyError, ValueError):
            # One bad request must not lose the others: each is taken again on its own
            # (requests are idempotent: those already taken change nothing), so only that
            # one fails.
            log.exception("desk: restoring %d sessions at once failed", len(requests))
            effects = []
            for request in requests:
                try:
                    effects += self._routing.request(request, now)
                except (KeyError, ValueError):
                    log.exception("desk: %r failed", request)
        for wanted in given_back:
            self._share_given_back(wanted)
        return self._carry_out(effects)

    def _note_name(self, request: AgentRequest) -> None:
        if request.user_name:
            self._user(request.conversation_id).name = request.user_name

    def _user(self, conversation_id: str) -> _User:
        users = self._users
        user = users.get(conversation_id)
        if user is None:
            user = users[conversation_id] = _User()
            if len(users) > USERS_KEPT:
                users.popitem(last=False)
        else:
            users.move_to_end(conversation_id)
        return user

    def _note_user(self, request: UserCame | UserWent | UserWrote, now: float) -> bool:
        """Remember what agents are shown about the user; True when someone's view changed
        (the agent holding the chat, or the agents of the bot whose queue it waits in)."""
        user = self._user(request.conversation_id)
        match request:
            case UserCame():
                user.connections += 1
                if user.connections > 1:
                    return False
                user.since = now
            case UserWent():
                user.connections = max(0, user.connections - 1)
                if user.connections:
                    return False
                user.since = now
            case UserWrote(_, text, at):
                user.last_message, user.last_message_at = text, at
        routing = self._routing
        conversation_id = request.conversation_id
        holder = routing.holder_of(conversation_id)
        if holder is not None:
            routing.changed_agents.add(holder.agent_id)
            return True
        waiting = routing.waiting(conversation_id)
        if waiting is not None:
            routing.changed_bots.add(waiting.bot_id)
            return True
        return False

    def _gives_back(self, wanted: AgentRequest) -> bool:
        """A re-assertion that may give a chat back to an agent who does not hold it yet (a
        restart of the desk while the agent stays connected): that agent is then sent the
        chat's transcript, as if it had reconnected (:meth:`_share_given_back`)."""
        if wanted.held_by is None:
            return False
        holder = self._routing.holder_of(wanted.conversation_id)
        return holder is None or holder.agent_id != wanted.held_by

    def _share_given_back(self, wanted: AgentRequest) -> None:
        """After the routing took ``wanted``: the chat's transcript to the agent it went
        back to (if it did)."""
        holder = self._routing.holder_of(wanted.conversation_id)
        if holder is not None and holder.agent_id == wanted.held_by:
            self._share_held(holder.agent_id, None, wanted.conversation_id)

    def _share_held(self, agent_id: str, sink: Sink | None, only: str | None = None) -> None:
        """Send the transcript of each chat the agent holds (or of ``only``) to ``sink``, or
        to every connection of the agent; read from the store in a task of its own, so the
        desk goes on meanwhile."""
        agent = self._routing.agents.get(agent_id)
        if agent is None or self._nursery is None or not self._sinks.get(agent_id):
            return
        chats = [
            (chat.conversation_id, chat.session_id)
            for chat in agent.chats.values()
            if only is None or chat.conversation_id == only
        ]
        if chats:
            self._nursery.start_soon(self._send_transcripts, agent_id, sink, chats)

    async def _send_transcripts(
        self, agent_id: str, sink: Sink | None, chats: list[tuple[str, str]]
    ) -> None:
        core = self._core
        assert core is not None
        for conversation_id, session_id in chats:
            try:
                state = await core.load(conversation_id)
                session = state.session if state is not None else None
                # Only a chat the conversation agrees the agent holds: one whose assignment
                # is still on its way gets its transcript when the conversation applies it.
                if state is None or session is None:
                    continue
                if session.session_id != session_id or session.agent_id != agent_id:
                    continue
                transcript = await read_transcript(
                    core.entries_after, state, session_id, self.transcript_tail
                )
            except Exception:
                log.exception("desk: the transcript of %s could not be read", conversation_id)
                continue
            holder = self._routing.holder_of(conversation_id)
            if holder is None or holder.agent_id != agent_id:
                continue  # it left the agent while the store was read
            sinks = self._sinks.get(agent_id, [])
            if sink is None:
                self.deliver(agent_id, transcript)
            elif sink in sinks:
                self._deliver_to(agent_id, sink, transcript)

    def _deliver_to(self, agent_id: str, sink: Sink, item: Delivery) -> None:
        """Hand ``item`` to one connection of the agent; one that raises is closed."""
        try:
            sink.deliver(item)
        except Exception:
            log.exception("an agent's client failed; it is closed and will resume")
            self.detach(agent_id, sink)
            abandon(sink)

    def _route(self, request: DeskRequest, now: float) -> list[rt.RoutingEffect]:
        routing = self._routing
        match request:
            case Request(agent_request):
                return routing.request(agent_request, now)
            case Withdraw(conversation_id, session_id):
                return routing.withdraw(conversation_id, session_id, now)
            case Release(conversation_id, session_id, agent_id):
                return routing.release(conversation_id, session_id, agent_id, now)
            case Transfer(conversation_id, session_id, from_agent, to_agent):
                return routing.transfer(conversation_id, session_id, from_agent, to_agent, now)
            case Claim(agent_id, conversation_id):
                return routing.claim(agent_id, conversation_id, now)
            case SetPresence(agent_id, presence):
                return routing.set_presence(agent_id, presence, now)
            case Connected(agent_id):
                return routing.connected(agent_id, now)
            case Ready():
                return routing.started(now)
            case Disconnected(agent_id):
                return routing.disconnected(agent_id, now)
            case NewSettings(bot_id, settings):
                return self._new_settings(bot_id, settings, now)
        raise TypeError(f"the desk cannot handle {request!r}")

    def _new_settings(
        self, bot_id: str, settings: BotSettings, now: float
    ) -> list[rt.RoutingEffect]:
        self.settings[bot_id] = settings
        capacities = {
            profile.agent_id: self._default_capacity(profile)
            for profile in self.profiles.values()
            if profile.capacity is None and bot_id in profile.bots
        }
        return self._routing.new_settings(bot_id, settings, capacities, now)

    def _default_capacity(self, profile: AgentProfile) -> int:
        return profile.capacity or min(
            (self.settings[b].agent_capacity for b in profile.bots), default=1
        )

    def _carry_out(self, effects: list[rt.RoutingEffect]) -> bool:
        """Tell each routing outcome to the conversation or agent it concerns; True when
        the agents' views changed."""
        assert self._core is not None
        post = self._core.post
        changed = False
        for effect in effects:
            match effect:
                case rt.Assign(conv, session, agent, name, decision):
                    post(conv, ev.AgentAssigned(session, agent, name, decision))
                case rt.Position(conv, session, position, wait, available):
                    post(conv, ev.QueuePositionChanged(session, position, wait, available))
                case rt.Requeued(conv, session, agent, reason, decision):
                    post(conv, ev.ReturnedToQueue(session, agent, reason, decision))
                case rt.AgentRefusal(agent, refusal):
                    self.deliver(agent, refusal)
                case _:  # DeskChanged
                    changed = True
        return changed

    async def _publish(self) -> None:
        """Send each connected agent whose view changed its view of the desk. Views are
        rebuilt only for those agents: with thousands of chats, rebuilding every view after
        every batch of changes would stall the desk. After each view it lets the other tasks
        run (a cancel cannot cut it short): when a crowd of sessions ends at once, every agent's
        view changes, and building them all in one go stalled everything for 12-15 ms of CPU
        (bench/README.md, Expiry)."""
        rosters: dict[frozenset[str], tuple[Colleague, ...]] = {}
        for agent_id in self._routing.take_changes():
            sinks = self._sinks.get(agent_id)
            if sinks:
                status = self._status(agent_id, rosters)
                for sink in sinks:
                    sink.deliver(status)
                await trio.lowlevel.cancel_shielded_checkpoint()

    def status_of(self, agent_id: str) -> DeskStatus:
        return self._status(agent_id, {})

    def _status(
        self, agent_id: str, rosters: dict[frozenset[str], tuple[Colleague, ...]]
    ) -> DeskStatus:
        """``rosters`` caches the agents per set of bots served: agents usually share a few
        such sets, so one publish walks the agent pool once per set, not once per agent."""
        agent = self._routing.agents[agent_id]
        users = self._users
        unknown = _User()
        queue = tuple(
            WaitingItem(
                w.conversation_id,
                w.bot_id,
                w.queued_at,
                w.position or 0,
                user.name,
                user.last_message,
                user.last_message_at,
            )
            for w in self._routing.queue.of_bots(agent.bots)
            for user in (users.get(w.conversation_id, unknown),)
        )
        chats = tuple(
            HeldChat(
                c.conversation_id,
                c.session_id,
                c.bot_id,
                c.grace_until,
                user.connections > 0,
                user.since,
            )
            for c in agent.chats.values()
            for user in (users.get(c.conversation_id, unknown),)
        )
        canned = {
            bot_id: with_sign_off(self.settings[bot_id].canned_responses)
            for bot_id in sorted(agent.bots)
            if bot_id in self.settings
        }
        roster = rosters.get(agent.bots)
        if roster is None:
            roster = rosters[agent.bots] = self._roster(agent.bots)
        colleagues = tuple(c for c in roster if c.agent_id != agent_id)
        grace = min(
            (self.settings[b].grace_period for b in agent.bots if b in self.settings),
            default=None,
        )
        return DeskStatus(
            agent_id,
            agent.name,
            agent.presence.value,
            agent.capacity,
            chats,
            queue,
            colleagues,
            canned,
            grace_period=grace,
        )

    def _roster(self, bots: frozenset[str]) -> tuple[Colleague, ...]:
        """Every agent serving one of ``bots``, by name."""
        return tuple(
            Colleague(
                other.agent_id,
                other.name,
                other.presence.value if other.connections else rt.Presence.OFFLINE.value,
                max(0, other.capacity - len(other.chats)),
            )
            for other in sorted(
                self._routing.agents.values(), key=lambda a: (a.name.casefold(), a.agent_id)
            )
            if not other.bots.isdisjoint(bots)
        )

    @property
    def queue_length(self) -> int:
        """Sessions waiting for an agent, across every bot (for metrics)."""
        return len(self._routing.queue)

    @property
    def agents_available(self) -> int:
        """Agents connected and online (for metrics)."""
        return sum(agent.available for agent in self._routing.agents.values())

    def holds(self, agent_id: str, conversation_id: str) -> bool:
        """Whether the agent holds the chat, as the desk last knew it (for access checks in
        transports; the conversation itself is the final word)."""
        agent = self._routing.agents.get(agent_id)
        return agent is not None and conversation_id in agent.chats
