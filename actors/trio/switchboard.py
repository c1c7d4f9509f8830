"""The switchboard: starts, finds and supervises conversation actors.

It is the core's public face. A transport (or an embedding application) opens conversations,
submits what users, bots and agents do, and subscribes clients; the switchboard routes each
call to the one actor that owns that conversation, starting it (from the store) when it is
not in memory. It holds no conversation state itself: its registry only maps ids to actors,
and it is only touched synchronously from trio's one thread, so no lock is needed.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import attrs
import trio

from actors.machines.lifecycle import Lifecycle
from actors.memory_store import MemoryStore
from actors.model import effects as fx
from actors.model.agent_request import AgentRequest, user_name
from actors.model.events import Event, UserSays
from actors.model.limits import ConversationLimits
from actors.model.records import Entry, Party
from actors.model.settings import BotSettings
from actors.model.state import ConversationState
from actors.ports import Bot, LivechatBackend, RestoresInBulk, Sink, Store
from actors.trio.alarms import Alarms
from actors.trio.clock import Clock
from actors.trio.context import ConversationContext
from actors.trio.conversation import (
    ConversationActor,
    Envelope,
    Inbound,
    Replay,
    Reply,
    Subscribe,
    Unsubscribe,
)
from actors.trio.supervision import Escalated, RestartPolicy, supervise, supervise_service

log = logging.getLogger("switchover.switchboard")

_FIRST_PAUSE = 1.0
_MAX_PAUSE = 60.0


@attrs.frozen
class BotBinding:
    """A bot served by this switchboard: the bot itself, its settings and the name of the
    livechat backend its sessions go to."""

    bot: Bot
    settings: BotSettings = BotSettings()
    backend: str = "desk"


class Overloaded(Exception):
    """A conversation's inbox is full: the sender should slow down."""


class UnknownBot(Exception):
    pass


@attrs.define
class Stats:
    restarts: int = 0
    escalations: int = 0
    started: int = 0
    hibernated: int = 0


class Switchboard:
    """Routes events to conversation actors and supervises them.

    Use :func:`open_switchboard` to run one. ``hibernate_after``: seconds a quiet conversation
    in bot mode stays in memory before it leaves (it is rebuilt from the store on its next
    event; its connected clients are kept here meanwhile and handed back to it); ``None``
    keeps every conversation in memory.
    ``inbox_limit``: how many events may wait for one conversation before :meth:`submit`
    refuses more with :class:`Overloaded`. ``expiry_batch``: how many conversations the
    alarms wake per scheduler tick when many deadlines come due at once, and how many may be
    expiring at the same time (see :mod:`actors.trio.alarms`); it bounds how long a crowd of
    expiries can stall everything else.
    ``new_id``: makes the id of each new conversation (a store that keeps conversations in
    partitions picks one this process owns); by default 24 random hex digits.
    """

    def __init__(
        self,
        bots: Mapping[str, BotBinding],
        backends: Mapping[str, LivechatBackend],
        store: Store | None = None,
        *,
        clock: Clock | None = None,
        restart_policy: RestartPolicy = RestartPolicy(),
        hibernate_after: float | None = 600.0,
        inbox_limit: int = 256,
        expiry_batch: int = 64,
        limits: ConversationLimits = ConversationLimits(),
        new_id: Callable[[], str] | None = None,
    ) -> None:
        missing = {b.backend for b in bots.values()} - set(backends)
        if missing:
            raise ValueError(f"bots name unknown livechat backends: {sorted(missing)}")
        self.bots = dict(bots)
        self.backends = dict(backends)
        self.store: Store = store if store is not None else MemoryStore()
        self.clock = clock or Clock()
        self.restart_policy = restart_policy
        self.hibernate_after = hibernate_after
        self.inbox_limit = inbox_limit
        self.new_id = new_id or partial(secrets.token_hex, 12)
        self.stats = Stats()
        self.alarms = Alarms(expiry_batch)
        self._lifecycles = {bot_id: Lifecycle(b.settings) for bot_id, b in bots.items()}
        self._actors: dict[str, ConversationActor] = {}
        #: The connected clients of conversations that left memory (bot mode, silent): the
        #: actor their next event starts takes them back. A client leaving is removed here.
        self._dormant: dict[str, list[Sink]] = {}
        self._nursery: trio.Nursery | None = None
        self._serving = 0  # conversation tasks running
        self._stopping = False
        self._all_returned = trio.Event()
        self.context = ConversationContext(
            store=self.store,
            clock=self.clock,
            alarms=self.alarms,
            spawn=self._spawn,
            lifecycle_for=self._lifecycles.get,
            bot_for=self._bot_for,
            backend_for=self._backend_for,
            retire=self.forget,
            hibernate_after=hibernate_after,
            limits=limits,
        )

    # -- running ----------------------------------------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the switchboard is not running")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the alarms and the backends (each supervised: restarted after an exception,
        then reconciled), restore open sessions from the store, then serve until
        cancelled."""
        self.clock.start()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(
                supervise_service, "alarms", self.alarms.run, self._alarms_restarted
            )
            for name, backend in self.backends.items():
                await nursery.start(
                    supervise_service,
                    f"livechat backend {name}",
                    partial(backend.run, self),
                    partial(self._backend_restarted, name),
                )
            await self._restore()
            task_status.started()
            await trio.sleep_forever()

    def replace_settings(self, bot_id: str, settings: BotSettings) -> None:
        """Serve ``bot_id`` under new settings from now on. One synchronous swap, so no
        conversation sees half of it: each takes them up when its next deadline is derived
        (a deadline already armed stays); the built-in desk applies them to the next grace
        period and offer. Raises :class:`UnknownBot`."""
        from actors.trio.desk import Desk

        binding = self.bots.get(bot_id)
        if binding is None:
            raise UnknownBot(bot_id)
        self.bots[bot_id] = attrs.evolve(binding, settings=settings)
        self._lifecycles[bot_id] = Lifecycle(settings)
        backend = self.backends.get(binding.backend)
        if isinstance(backend, Desk):
            backend.apply_settings(bot_id, settings)

    def _alarms_restarted(self) -> None:
        """The alarms lost their wake-ups: every actor asks again."""
        for actor in list(self._actors.values()):
            actor.rearm()

    def _backend_restarted(self, name: str) -> None:
        """A backend lost its view: every open session it serves is re-asserted to it."""
        for actor in list(self._actors.values()):
            state = actor.state
            if (
                state is not None
                and state.session is not None
                and state.bot_id in self.bots
                and self.bots[state.bot_id].backend == name
            ):
                actor.reassert()

    async def _restore(self) -> None:
        """Bring back every conversation with an open session: waiting ones re-join their
        queue in their original order, live ones go back to their agent. Deadlines that
        passed while we were down fire as soon as their actor starts. Every conversation
        whose bot is still owed events (stored, never answered) hands them over again before
        anything new."""
        self.restore(await self.store.open_sessions(), await self.store.bot_backlog())

    def restore(self, states: list[ConversationState], backlog: list[Entry]) -> None:
        """Bring back these open sessions and hand these unanswered events to their bots
        (:meth:`_restore` at start-up; a clustered store when this process takes over a
        partition). A conversation already in memory keeps its actor."""
        owed: dict[str, list[Entry]] = {}
        for entry in backlog:
            owed.setdefault(entry.conversation_id, []).append(entry)
        # No checkpoint from here on: no actor runs before it knows what its bot is owed.
        states.sort(key=lambda s: s.session.started_at if s.session else 0.0)
        restored: list[tuple[ConversationState, AgentRequest]] = []
        for state in states:
            session = state.session
            if session is None or state.bot_id not in self.bots:
                continue
            queued_at = session.queued_at if session.queued_at is not None else session.started_at
            request = AgentRequest(
                state.conversation_id,
                session.session_id,
                state.bot_id,
                queued_at,
                held_by=session.agent_id,
                user_name=user_name(state.user_metadata),
            )
            restored.append((state, request))
        # Each actor re-asserts its session when it starts; asking here first, in the order
        # the sessions opened, keeps the queue in that order.
        asserted = self._assert_restored([request for _, request in restored])
        for state, _ in restored:
            if state.conversation_id not in self._actors:
                # (A backend that spoke to it already started its actor, which loads the
                # same state: a second one would number its messages twice.)
                actor = self._start_actor(state.conversation_id, state)
                if state.conversation_id in asserted:
                    actor.asserted()
        for conversation_id, entries in owed.items():
            actor = self._actor(conversation_id)
            if actor.lifecycle is None:  # not started yet: it hands them over first
                actor.owed_to_bot = entries
        if owed:
            log.info("handing %d conversations' unanswered events to their bots again", len(owed))

    def _assert_restored(self, requests: list[AgentRequest]) -> set[str]:
        """Tell each backend about its restored sessions, in order: as one batch to a backend
        that takes one (the desk then settles its queue once, not once per session). Returns
        the conversations asserted; a backend that raises is asked again by each actor, with
        backoff."""
        by_backend: dict[str, list[AgentRequest]] = {}
        for request in requests:
            by_backend.setdefault(self.bots[request.bot_id].backend, []).append(request)
        asserted: set[str] = set()
        for name, wanted in by_backend.items():
            backend = self.backends[name]
            if isinstance(backend, RestoresInBulk):
                try:
                    backend.request_agents(wanted)
                except Exception:
                    log.exception("restoring %d sessions to %s", len(wanted), name)
                else:
                    asserted.update(request.conversation_id for request in wanted)
                continue
            for request in wanted:
                try:
                    backend.request_agent(request)
                except Exception:
                    log.exception("restoring session %s", request.session_id)
                else:
                    asserted.add(request.conversation_id)
        return asserted

    # -- what actors are given (their context) --------------------------------------------

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        self.nursery.start_soon(task)

    def _bot_for(self, bot_id: str) -> Bot:
        return self.bots[bot_id].bot

    def _backend_for(self, bot_id: str) -> LivechatBackend:
        return self.backends[self.bots[bot_id].backend]

    def forget(self, actor: ConversationActor) -> None:
        actor.retired = True
        if self._actors.get(actor.conversation_id) is actor:
            del self._actors[actor.conversation_id]
            if actor.subscribers:
                # Its clients stay connected: its successor (next event) takes them back.
                self._dormant[actor.conversation_id] = actor.subscribers
            if actor.state is not None and actor.state.session is None:
                self.stats.hibernated += 1

    def is_in_memory(self, conversation_id: str) -> bool:
        return conversation_id in self._actors

    def numbered_up_to(self, conversation_id: str) -> int | None:
        """The last ``seq`` a conversation in memory has numbered (stored, or being stored);
        ``None`` when it is not in memory. A returning client that has seen it needs no read
        of the store."""
        actor = self._actors.get(conversation_id)
        if actor is None or actor.state is None:
            return None
        return actor.state.next_seq - 1

    @property
    def active_conversations(self) -> int:
        return len(self._actors)

    @property
    def dormant_conversations(self) -> int:
        """Conversations out of memory whose clients are still connected."""
        return len(self._dormant)

    # -- the public API ---------------------------------------------------------------------

    async def open_conversation(
        self,
        bot_id: str,
        *,
        user_id: str | None = None,
        metadata: Mapping[str, object] | None = None,
        conversation_id: str | None = None,
    ) -> ConversationState:
        """Create a conversation with ``bot_id`` and return its first state."""
        if bot_id not in self.bots:
            raise UnknownBot(bot_id)
        conversation_id = conversation_id or self.new_id()
        state = ConversationState(
            conversation_id, bot_id, user_id or conversation_id, dict(metadata or {})
        )
        await self.store.record(state, [])
        self._start_actor(conversation_id, state)
        return state

    def submit(
        self,
        conversation_id: str,
        event: Event,
        reply: Reply | None = None,
        *,
        origin: Sink | None = None,
        message_id: str | None = None,
        input_id: str | None = None,
    ) -> None:
        """Hand an event from a user, bot or agent to its conversation, without waiting.

        ``reply`` is called with the outcome once the event is durable (or refused).
        Raises :class:`Overloaded` when the conversation already has ``inbox_limit`` events
        waiting, or when a user's message would be one more event for a bot that already has
        ``limits.bot_queue`` waiting. ``origin``, the client that sent the event, is not
        handed the entry it wrote. ``message_id``, the sender's id for the message (unique
        per sender: prefix it with who sent it), makes a resend answer the first outcome
        instead of storing the message twice. ``input_id``: see :class:`~actors.ports.InputStore`.
        """
        actor = self._actor(conversation_id)
        if len(actor.inbox) >= self.inbox_limit or (
            actor.bot_queue_full and type(event) is UserSays
        ):
            raise Overloaded(conversation_id)
        actor.inbox.put(Envelope(event, reply, origin, message_id, input_id))

    async def load(self, conversation_id: str) -> ConversationState | None:
        """The conversation's last stored state (for backends rebuilding their view)."""
        return await self.store.load(conversation_id)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        """The conversation's stored entries after ``after_seq``."""
        return await self.store.entries_after(conversation_id, after_seq)

    def post(self, conversation_id: str, event: Event) -> None:
        """Like :meth:`submit`, for the core's own parts (backends): never refused."""
        self._post_to_actor(conversation_id, Envelope(event))

    async def ask(
        self, conversation_id: str, event: Event, *, message_id: str | None = None
    ) -> fx.Outcome:
        """Submit and wait for the outcome."""
        done = trio.Event()
        result: list[fx.Outcome] = []

        def reply(outcome: fx.Outcome) -> None:
            result.append(outcome)
            done.set()

        self.submit(conversation_id, event, reply, message_id=message_id)
        await done.wait()
        return result[0]

    def subscribe(self, conversation_id: str, sink: Sink, after_seq: int | None = None) -> None:
        """Deliver the user's side of the conversation to ``sink``: the entries after
        ``after_seq`` first (when given), then everything live."""
        self._post_to_actor(conversation_id, Subscribe(sink, after_seq))

    def unsubscribe(self, conversation_id: str, sink: Sink) -> None:
        if conversation_id in self._actors:
            self._post_to_actor(conversation_id, Unsubscribe(sink))
            return
        # Out of memory: the client is only dropped from the kept ones (no actor started).
        kept = self._dormant.get(conversation_id)
        if kept is not None:
            if sink in kept:
                kept.remove(sink)
            if not kept:
                del self._dormant[conversation_id]

    def replay(
        self,
        conversation_id: str,
        sink: Sink,
        after_seq: int,
        party: Party,
        agent_id: str | None = None,
    ) -> None:
        """Send ``sink`` the entries after ``after_seq`` that ``party`` may see."""
        self._post_to_actor(conversation_id, Replay(sink, after_seq, party, agent_id))

    # -- internals --------------------------------------------------------------------------

    def _post_to_actor(self, conversation_id: str, item: Inbound) -> None:
        self._actor(conversation_id).inbox.put(item)

    def _actor(self, conversation_id: str) -> ConversationActor:
        actor = self._actors.get(conversation_id)
        if actor is None:
            actor = self._start_actor(conversation_id, None)
        return actor

    def _start_actor(
        self,
        conversation_id: str,
        state: ConversationState | None,
        predecessor: ConversationActor | None = None,
        pause: float = 0.0,
    ) -> ConversationActor:
        # The clients kept while it was out of memory are its own again (the same list an
        # escalated predecessor hands over, when it had any).
        kept = self._dormant.pop(conversation_id, None)
        if predecessor is None:
            actor = ConversationActor(self.context, conversation_id, state, subscribers=kept)
        else:
            # Its clients and its bot's queue carry over: they did nothing wrong.
            actor = ConversationActor(
                self.context,
                conversation_id,
                state,
                subscribers=predecessor.subscribers,
                feeder=predecessor.feeder,
            )
        self._actors[conversation_id] = actor
        self.stats.started += 1
        self.nursery.start_soon(self._supervised, actor, pause)
        self._serving += 1  # counted from here: a task started may not have run yet
        if self._stopping:
            actor.stop()
        return actor

    async def stop_conversations(self) -> None:
        """The server stops: every conversation in memory finishes what it was handed and
        returns. Cancelling 10,000 waiting actors costs trio seconds (each ends in an
        exception gathered by the nursery); returning costs a fraction. Bound the wait: an
        actor may be waiting on a store that does not answer."""
        self._stopping = True
        for actor in list(self._actors.values()):
            actor.stop()
        if self._serving:
            await self._all_returned.wait()

    async def _supervised(self, actor: ConversationActor, pause: float = 0.0) -> None:
        """Run ``actor`` under the restart policy. ``pause``: how long a successor of an
        escalated actor waits before it starts (doubling per escalation in a row), so a
        conversation that fails whatever happens cannot spin."""

        def counted(exc: BaseException) -> None:
            self.stats.restarts += 1

        try:
            if pause:
                await trio.sleep(pause)
            await supervise(
                f"conversation {actor.conversation_id}", actor.serve, self.restart_policy, counted
            )
        except Escalated:
            # Restarting did not help: what it was working on is refused, and it is rebuilt
            # from the store, keeping its clients and what its bot is owed.
            self.stats.escalations += 1
            self.forget(actor)
            actor.refuse_waiting("conversation_failed", "The conversation failed; try again.")
            if self._actors.get(actor.conversation_id) is None:
                pause = min(max(_FIRST_PAUSE, pause * 2), _MAX_PAUSE)
                self._start_actor(actor.conversation_id, None, predecessor=actor, pause=pause)
        finally:
            self._serving -= 1
            if not self._serving and self._stopping:
                self._all_returned.set()


@asynccontextmanager
async def open_switchboard(
    bots: Mapping[str, BotBinding],
    backends: Mapping[str, LivechatBackend] | None = None,
    store: Store | None = None,
    **options: object,
) -> AsyncIterator[Switchboard]:
    """Run a switchboard for the duration of the ``async with`` block.

    With no ``backends``, every bot's sessions go to a built-in :class:`~actors.trio.desk.Desk`
    named ``"desk"``, reachable as ``board.backends["desk"]``.
    """
    from actors.trio.desk import Desk

    if backends is None:
        backends = {"desk": Desk(settings={k: b.settings for k, b in bots.items()})}
    board = Switchboard(bots, backends, store, **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(board.run)
        try:
            yield board
        finally:
            nursery.cancel_scope.cancel()


__all__ = ["BotBinding", "Overloaded", "Switchboard", "UnknownBot", "open_switchboard"]
