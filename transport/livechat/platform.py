"""A livechat backend in someone else's helpdesk: the part every platform shares.

The conversation owns its session; a platform-backed backend keeps one :class:`Ticket` per
open session (what the platform was told) and passes on, in order and at least once:

* the session's request, with the transcript so far and the user's metadata;
* every message the user writes in the session, waiting or live (never the bot's part);
* the session's end, with its reason.

Calls go out through a :class:`Connector`, the one platform-specific part. The log of the
conversation is the outbox: a ticket only records how far the platform got (``sent_seq``),
so after a restart, a platform outage or a full in-memory queue, a ticket catches up by
reading the log after that point. A call that fails for a while is retried with capped
exponential backoff (honouring ``Retry-After``); once the platform has failed for
``unreachable_after`` seconds, each waiting user is told once that the team cannot be reached
(their messages still go through when it answers again).

What the platform does comes back as :class:`Action` values (accept, message, sign-off,
typing, transfer, release), which :meth:`PlatformBackend.act` hands to the conversation and
answers only once the conversation has stored them.
"""

from __future__ import annotations

import collections
import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from actors import (
    SESSION_END,
    SESSION_START,
    Accepted,
    AgentSays,
    AgentSignsOff,
    AgentTyping,
    Content,
    Entry,
    Outcome,
    Overloaded,
    Party,
    Refusal,
)
from actors.machines.backoff import Backoff
from actors.model.agent_request import AgentRequest
from actors.model.deliveries import Delivery, Transcript, Typing
from actors.model.events import (
    AgentAssigned,
    AgentEndsSession,
    LivechatUnreachable,
    ReturnedToQueue,
    TransferFailed,
)
from actors.ports import CoreLink, Sink
from transport.bots.options import OptionReader
from transport.livechat.tickets import Ticket, Tickets

log = logging.getLogger("switchover.livechat")

#: Entries of the conversation before the session that go with its request, at most.
TRANSCRIPT_TAIL = 200
#: Messages kept in memory per ticket before it falls back to reading the log.
PENDING_LIMIT = 256
#: The reason a session ends with when its platform refuses to take it.
HANDOFF_REFUSED = "handoff_refused"
#: Agent action ids remembered per platform, so a repeated webhook is answered, not redone.
ACTIONS_REMEMBERED = 10_000


class PlatformUnavailable(Exception):
    """The platform could not take a call now (timeout, connection refused, 5xx, 429): it is
    tried again later. ``retry_after``: seconds the platform asked to wait, if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PlatformRefused(Exception):
    """The platform refused a call for good (a 4xx other than 429): retrying will not help,
    so the call is logged and skipped."""


class Connector(Protocol):
    """The calls one platform takes, each for one ticket; each raises
    :class:`PlatformUnavailable` or :class:`PlatformRefused` when it fails. Each must be safe
    to repeat: after a crash the last call may be made again."""

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        """Tell the platform about a new session; return its own id for it, if any."""
        ...

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        """Pass on one message the user wrote in the session."""
        ...

    async def typing(self, ticket: Ticket) -> None:
        """The user is typing (best effort: never retried)."""
        ...

    async def close(self, ticket: Ticket, reason: str) -> None:
        """The session ended in Switchover, for ``reason``."""
        ...

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        """What the platform did about the session since ``ticket.cursor`` (its own
        position in its list of messages and changes), oldest first, each with the cursor
        after it. A platform whose webhooks can be dropped or reordered (Chatwoot, Gorgias)
        is read this way on a timer, at start-up and whenever a webhook pokes the ticket, so
        every action is applied once and in order; one that posts actions itself (the
        generic webhook protocol) returns nothing."""
        ...


# -- what the platform does ---------------------------------------------------------------


@attrs.frozen
class Agent:
    """A person of the platform, as it names them: a stable id and a display name."""

    agent_id: str
    name: str = ""


@attrs.frozen
class Accept:
    agent: Agent


@attrs.frozen
class Message:
    agent: Agent
    content: Content


@attrs.frozen
class SignOff:
    agent: Agent


@attrs.frozen
class AgentIsTyping:
    agent: Agent


@attrs.frozen
class Transfer:
    """To another agent of the platform, or back to its queue when ``to`` is ``None``."""

    agent: Agent
    to: Agent | None


@attrs.frozen
class Release:
    """The platform hands the conversation back to the bot: the session ends."""

    agent: Agent | None
    reason: str = "agent_closed"


Verb = Accept | Message | SignOff | AgentIsTyping | Transfer | Release


@attrs.frozen
class Action:
    """One thing the platform did about one session. ``action_id`` is the platform's id
    for it, unique per platform: a repeat with the same id gets the first answer."""

    action_id: str
    session_id: str
    verb: Verb


@attrs.frozen
class Answer:
    """What the platform is told about its action: ``status`` (an HTTP status), and the
    ``seq`` of the entry it produced, or the refusal."""

    status: int
    seq: int | None = None
    refusal: Refusal | None = None


UNKNOWN_SESSION = Answer(
    404, refusal=Refusal("unknown_session", "No open session has that id on this platform.")
)


# -- the engine's options, which every platform takes beside its own ------------------------

ENGINE_OPTION_KEYS = frozenset({"timeout", "workers", "unreachable_after", "max_backoff"})


def read_engine_options(reader: OptionReader) -> dict[str, Any]:
    """The engine's options from one platform's table (``timeout`` is for its calls), with
    their defaults, as keywords for the platform's options class."""
    return {
        "timeout": reader.number("timeout", 10.0),
        "workers": reader.integer("workers", 4),
        "unreachable_after": reader.number("unreachable_after", 30.0),
        "max_backoff": reader.number("max_backoff", 60.0),
    }


class EngineSettings(Protocol):
    """What a platform's options class holds for the engine."""

    @property
    def workers(self) -> int: ...

    @property
    def unreachable_after(self) -> float: ...

    @property
    def max_backoff(self) -> float: ...


# -- the backend --------------------------------------------------------------------------


def is_for_platform(entry: Entry, session_id: str) -> bool:
    """Whether an entry is one the platform must get: what the user wrote in the session,
    but the payloads that open and end it (the platform hears those as the request and the
    end)."""
    if entry.sender is not Party.USER or entry.session_id != session_id:
        return False
    content = entry.content
    return not (content.is_payload(SESSION_START) or content.is_payload(SESSION_END))


@attrs.define
class _Work:
    """What a ticket still has to pass on (in memory; the log has it too)."""

    pending: collections.deque[Entry] = attrs.field(factory=collections.deque)
    catch_up: bool = True
    typing: bool = False
    told_unreachable: bool = False
    #: Read what the platform did since the ticket's cursor (see :meth:`Connector.fetch`).
    fetch: bool = True
    #: The ticket was loaded at start-up: the first action read may have been applied
    #: before the crash, after its entry was stored and before its cursor was.
    check_applied: bool = False


class PlatformBackend:
    """A :class:`~actors.ports.LivechatBackend` for the sessions of one bot on one platform.

    ``workers``: how many calls to the platform may run at once (each ticket's calls run
    one at a time, in order). ``unreachable_after``: seconds of failed calls after which
    waiting users are told the team cannot be reached. ``max_backoff``: the longest wait
    between tries. ``reconcile_every``: seconds between reads of what the platform did
    (:meth:`Connector.fetch`) for every open ticket; ``None`` for a platform that posts its
    actions itself.
    """

    def __init__(
        self,
        name: str,
        connector: Connector,
        tickets: Tickets,
        *,
        workers: int = 4,
        unreachable_after: float = 30.0,
        max_backoff: float = 60.0,
        reconcile_every: float | None = None,
    ) -> None:
        self.name = name
        self.reconcile_every = reconcile_every
        self.connector = connector
        self.tickets = tickets
        self.workers = workers
        self.unreachable_after = unreachable_after
        self._core: CoreLink | None = None
        self._open: dict[str, Ticket] = {}
        #: The open ticket of each conversation, by conversation id (a conversation has one
        #: open session at a time; a ticket still ending may linger beside a newer one).
        self._current: dict[str, Ticket] = {}
        self._work: dict[str, _Work] = {}
        self._ready: dict[str, None] = {}
        self._busy: set[str] = set()
        self._wake = trio.Event()
        self._settled = trio.Event()
        self._backoff = Backoff(first=0.5, cap=max_backoff)
        self._failing_since: float | None = None
        self._answers: collections.OrderedDict[str, Answer] = collections.OrderedDict()
        self._runs = itertools.count(1)
        self._run = 0
        self._decisions = itertools.count(1)

    @classmethod
    def configured(
        cls,
        name: str,
        connector: Connector,
        tickets: Tickets,
        settings: EngineSettings,
        *,
        reconcile_every: float | None = None,
    ) -> PlatformBackend:
        """A backend set up from a platform's options (see :func:`read_engine_options`)."""
        return cls(
            name,
            connector,
            tickets,
            workers=settings.workers,
            unreachable_after=settings.unreachable_after,
            max_backoff=settings.max_backoff,
            reconcile_every=reconcile_every,
        )

    # -- the conversations' side (LivechatBackend) ------------------------------------------

    def request_agent(self, request: AgentRequest) -> None:
        ticket = self._open.get(request.session_id)
        if ticket is None:
            older = self._current.get(request.conversation_id)
            if older is not None and not older.ending:
                # A newer session of the same conversation: the older one is over.
                self._end(older, None)
            ticket = Ticket(
                request.session_id, request.conversation_id, request.bot_id, applied_seq=0
            )
            self._keep(ticket, _Work())
        elif request.held_by != ticket.agent_id:
            if ticket.agent_id is None:
                # The conversation applied an assignment this ticket never recorded.
                ticket.agent_id = request.held_by
            else:
                self._post(ticket, self._assigned(ticket, ticket.agent_id, ticket.agent_name))
        self._work_of(ticket).catch_up = True
        self._schedule(ticket)

    def withdraw(self, conversation_id: str, session_id: str) -> None:
        ticket = self._open.get(session_id)
        if ticket is not None:
            self._end(ticket, None)

    def release(self, conversation_id: str, session_id: str, agent_id: str, reason: str) -> None:
        ticket = self._open.get(session_id)
        if ticket is not None:
            self._end(ticket, reason)

    def transfer(
        self, conversation_id: str, session_id: str, from_agent: str, to_agent: str | None
    ) -> None:
        # The platform's agents transfer chats in the platform; nothing to ask it here.
        self._core_link().post(
            conversation_id,
            TransferFailed(session_id, from_agent, "Transfers are made in the livechat platform."),
        )

    def deliver(self, agent_id: str, item: Delivery, *, skip: Sink | None = None) -> None:
        if isinstance(item, Entry):
            if item.session_id is not None:
                self.deliver_waiting(item.session_id, item)
        elif isinstance(item, Typing) and item.party is Party.USER:
            ticket = self._current.get(item.conversation_id)
            if ticket is not None and not ticket.ending:
                self._work_of(ticket).typing = True
                self._schedule(ticket)

    def deliver_waiting(self, session_id: str, entry: Entry) -> None:
        ticket = self._open.get(session_id)
        if ticket is None or not is_for_platform(entry, session_id):
            return
        work = self._work_of(ticket)
        if len(work.pending) >= PENDING_LIMIT:
            # Bounded: the log has them all, read it when the platform takes calls again.
            work.pending.clear()
            work.catch_up = True
        elif not work.catch_up:
            work.pending.append(entry)
        self._schedule(ticket)

    # -- what the platform did -----------------------------------------------------------------

    async def act(self, action: Action) -> Answer:
        """Carry out ``action``; answer once the conversation stored what it produced."""
        ticket = self._open.get(action.session_id)
        if ticket is None or ticket.ending:
            known = self._answers.get(action.action_id)
            return known if known is not None else UNKNOWN_SESSION
        return await self._act_once(ticket, action)

    async def _act_once(self, ticket: Ticket, action: Action) -> Answer:
        """Apply ``action`` unless it was applied already (then answer as the first time)."""
        known = self._answers.get(action.action_id)
        if known is None:
            # Kept with the ticket too, so a repeat after a restart is still a repeat.
            recalled = await self.tickets.recall(ticket.session_id, action.action_id)
            known = None if recalled is None else _answer_from(recalled)
        if known is not None:
            return known
        try:
            answer = await self._act(ticket, action)
        except Overloaded:
            return Answer(503, refusal=Refusal("overloaded", "Too many events; retry shortly."))
        if answer.status < 500 and not isinstance(action.verb, AgentIsTyping):
            # Typing is passed on, not stored: a repeat does no harm and is not remembered.
            self._answers[action.action_id] = answer
            while len(self._answers) > ACTIONS_REMEMBERED:
                self._answers.popitem(last=False)
            if answer.status == 200:
                await self.tickets.remember(ticket.session_id, action.action_id, _answer_to(answer))
        return answer

    async def _act(self, ticket: Ticket, action: Action) -> Answer:
        core = self._core_link()
        verb = action.verb
        if isinstance(verb, AgentIsTyping):
            if ticket.agent_id == verb.agent.agent_id:
                core.post(ticket.conversation_id, AgentTyping(verb.agent.agent_id))
            return Answer(202)
        if isinstance(verb, Release):
            event = AgentEndsSession(ticket.session_id, ticket.agent_id, verb.reason)
            return _answer(await core.ask(ticket.conversation_id, event))
        if isinstance(verb, Transfer) and verb.to is None:
            if ticket.agent_id is None:
                return Answer(202)
            event_back = ReturnedToQueue(
                ticket.session_id, ticket.agent_id, "transferred", self._decision()
            )
            outcome = await core.ask(ticket.conversation_id, event_back)
            if isinstance(outcome, Accepted):
                ticket.agent_id, ticket.agent_name = None, ""
                await self.tickets.save(ticket)
            return _answer(outcome)
        agent = verb.to if isinstance(verb, Transfer) else verb.agent
        assert agent is not None
        if ticket.agent_id != agent.agent_id or (agent.name and ticket.agent_name != agent.name):
            # An agent who writes without having accepted first has joined all the same.
            assigned = self._assigned(ticket, agent.agent_id, agent.name)
            outcome = await core.ask(ticket.conversation_id, assigned)
            if not isinstance(outcome, Accepted):
                return _answer(outcome)
            ticket.agent_id, ticket.agent_name = agent.agent_id, agent.name
            await self.tickets.save(ticket)
        if isinstance(verb, Message):
            says = AgentSays(agent.agent_id, verb.content)
            message_id = f"{self.name}:{action.action_id}"
            return _answer(await core.ask(ticket.conversation_id, says, message_id=message_id))
        if isinstance(verb, SignOff):
            return _answer(await core.ask(ticket.conversation_id, AgentSignsOff(agent.agent_id)))
        return Answer(200)

    def _assigned(self, ticket: Ticket, agent_id: str, name: str) -> AgentAssigned:
        return AgentAssigned(ticket.session_id, agent_id, name, self._decision())

    def _decision(self) -> tuple[int, int]:
        return (self._run, next(self._decisions))

    # -- the backend's own tasks --------------------------------------------------------------

    async def run(self, core: CoreLink, *, task_status: trio.TaskStatus[None]) -> None:
        """Load the tickets, find those whose session ended while nobody was listening,
        then pass things on until cancelled."""
        self._core = core
        self._run = next(self._runs)
        for ticket in await self.tickets.load():
            if ticket.session_id not in self._open:
                self._keep(ticket, _Work(check_applied=True))
        for ticket in list(self._open.values()):
            state = await core.load(ticket.conversation_id)
            session = state.session if state is not None else None
            if session is None or session.session_id != ticket.session_id:
                ticket.ending = True
            self._schedule(ticket)
        self._current = {t.conversation_id: t for t in self._open.values() if not t.ending}
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._serve)
            if self.reconcile_every is not None:
                nursery.start_soon(self._reconcile, self.reconcile_every)
            task_status.started()

    async def _reconcile(self, every: float) -> None:
        """Read every open ticket's platform side again, so a dropped webhook delays an
        agent's message by at most ``every`` seconds and never loses it."""
        while True:
            await trio.sleep(every)
            for ticket in list(self._open.values()):
                self.poke(ticket)

    def poke(self, ticket: Ticket) -> None:
        """Something happened on the platform's side of ``ticket`` (a webhook said so):
        read it, in order, with :meth:`Connector.fetch`."""
        if ticket.session_id in self._open:
            self._work_of(ticket).fetch = True
            self._schedule(ticket)

    def ticket_by_ref(self, ref: str) -> Ticket | None:
        """The open ticket the platform knows by ``ref`` (its own id for the session)."""
        for ticket in self._open.values():
            if ticket.ref == ref:
                return ticket
        return None

    async def _serve(self) -> None:
        while True:
            if self._backoff.failing:
                # One wait for everyone: a platform that is down is not asked once per ticket.
                await trio.sleep_until(self._backoff.due)
            ticket = self._next_ready()
            if ticket is None:
                self._wake = trio.Event() if self._wake.is_set() else self._wake
                await self._wake.wait()
                continue
            self._busy.add(ticket.session_id)
            try:
                await self._advance(ticket)
            except PlatformUnavailable as exc:
                self._failed(ticket, exc)
            except Exception as exc:
                # A bug or a local failure (the ticket file, say) must not stop every
                # session's deliveries: this ticket is tried again with the same backoff.
                log.exception("%s: passing on session %s failed", self.name, ticket.session_id)
                self._failed(ticket, PlatformUnavailable(f"{type(exc).__name__}: {exc}"))
            finally:
                self._busy.discard(ticket.session_id)
                if not self._busy and not self._ready:
                    self._settled.set()

    async def wait_settled(self) -> None:
        """Return once no ticket has work waiting or under way: everything known has been
        passed on (or waits for the platform to take calls again). For an orderly stop,
        and for tests that look at the tickets."""
        while self._busy or self._ready:
            if self._settled.is_set():
                self._settled = trio.Event()
            await self._settled.wait()

    def _next_ready(self) -> Ticket | None:
        for session_id in self._ready:
            if session_id not in self._busy:
                del self._ready[session_id]
                ticket = self._open.get(session_id)
                if ticket is not None:
                    return ticket
        return None

    async def _advance(self, ticket: Ticket) -> None:
        """Bring the platform up to date with one ticket, in order: the request, the
        messages, the end."""
        work = self._work_of(ticket)
        if not ticket.opened and not ticket.ending:
            await self._open_ticket(ticket, work)
        while work.catch_up:
            await self._catch_up(ticket, work)
        while work.pending:
            entry = work.pending[0]
            if entry.seq > ticket.sent_seq:
                await self._call(ticket, self.connector.post(ticket, entry))
                ticket.sent_seq = entry.seq
                await self.tickets.save(ticket)
            work.pending.popleft()
        if work.typing and not ticket.ending:
            work.typing = False
            try:
                await self.connector.typing(ticket)
            except (PlatformUnavailable, PlatformRefused) as exc:
                log.debug("%s: typing not passed on: %s", self.name, exc)
        if work.fetch and ticket.opened:
            work.fetch = False
            await self._apply_fetched(ticket)
        self._succeeded(ticket)
        if ticket.ending:
            if ticket.opened:
                if ticket.reason is None:
                    ticket.reason = await self._reason(ticket)
                await self._call(ticket, self.connector.close(ticket, ticket.reason))
            await self.tickets.delete(ticket.session_id)
            self._forget(ticket)

    async def _apply_fetched(self, ticket: Ticket) -> None:
        try:
            fetched = await self.connector.fetch(ticket)
        except PlatformUnavailable:
            self._work_of(ticket).fetch = True
            raise
        except PlatformRefused as exc:
            log.error("%s: reading session %s failed: %s", self.name, ticket.session_id, exc)
            return
        work = self._work_of(ticket)
        check, work.check_applied = work.check_applied, False
        for action, cursor in fetched:
            if ticket.ending:
                break
            if check and await self._applied_before(ticket, action):
                log.info("%s: %s was applied before the restart", self.name, action.action_id)
            else:
                answer = await self._act_once(ticket, action)
                if answer.status >= 500:
                    # Not stored: read it again on the next try.
                    work.fetch = True
                    raise PlatformUnavailable(f"the conversation could not store {action!r}")
                if answer.seq is not None and ticket.applied_seq is not None:
                    ticket.applied_seq = max(ticket.applied_seq, answer.seq)
            check = False
            ticket.cursor = cursor
            await self.tickets.save(ticket)

    async def _applied_before(self, ticket: Ticket, action: Action) -> bool:
        """Whether an agent's message read first after a restart is in the log already:
        only actions read from the platform write an agent's entries in a platform's
        session, so one after the last entry they are known to have produced is this one."""
        verb = action.verb
        if not isinstance(verb, Message) or ticket.applied_seq is None:
            return False
        entries = await self._core_link().entries_after(ticket.conversation_id, ticket.applied_seq)
        return any(
            e.sender is Party.AGENT
            and e.session_id == ticket.session_id
            and e.agent_id == verb.agent.agent_id
            for e in entries
        )

    async def _open_ticket(self, ticket: Ticket, work: _Work) -> None:
        core = self._core_link()
        state = await core.load(ticket.conversation_id)
        session = state.session if state is not None else None
        if state is None or session is None or session.session_id != ticket.session_id:
            # It ended before the platform heard of it: there is nothing to tell.
            ticket.ending = True
            return
        after = max(0, state.next_seq - 1 - TRANSCRIPT_TAIL)
        entries = await core.entries_after(ticket.conversation_id, after)
        mine = [e.seq for e in entries if e.session_id == ticket.session_id]
        start = mine[0] if mine else state.next_seq
        shown = tuple(e for e in entries if e.seq < start and e.visible_to(Party.USER))
        transcript = Transcript(
            ticket.conversation_id,
            ticket.session_id,
            state.bot_id,
            state.user_id,
            state.user_metadata,
            shown,
            truncated=after > 0,
        )
        ticket.user_id = state.user_id
        await self.tickets.save(ticket)
        try:
            ref = await self.connector.open(ticket, transcript)
        except PlatformRefused as exc:
            # The handoff failed: the session cannot be served there, so it ends.
            log.error(
                "%s refused session %s: %s",
                self.name,
                ticket.session_id,
                exc,
                extra={"conversation_id": ticket.conversation_id},
            )
            ticket.ending, ticket.reason = True, HANDOFF_REFUSED
            self._post(ticket, AgentEndsSession(ticket.session_id, None, HANDOFF_REFUSED))
            return
        ticket.opened, ticket.ref, ticket.sent_seq = True, ref, max(ticket.sent_seq, start)
        await self.tickets.save(ticket)
        work.catch_up = True

    async def _catch_up(self, ticket: Ticket, work: _Work) -> None:
        """Read the session's messages the platform may lack from the log. Messages that
        arrive while the log is read are kept as they come and merged by seq: the read
        may have been taken before they were stored."""
        work.catch_up = False
        work.pending.clear()
        entries = await self._core_link().entries_after(ticket.conversation_id, ticket.sent_seq)
        by_seq = {e.seq: e for e in entries if is_for_platform(e, ticket.session_id)}
        for entry in work.pending:
            by_seq.setdefault(entry.seq, entry)
        work.pending = collections.deque(by_seq[seq] for seq in sorted(by_seq))

    async def _reason(self, ticket: Ticket) -> str:
        """Why the session ended, read from the log: the bot's ending event says."""
        entries = await self._core_link().entries_after(ticket.conversation_id, ticket.sent_seq)
        for entry in reversed(entries):
            metadata = entry.metadata
            if entry.sender is Party.SYSTEM and metadata.get("session_id") == ticket.session_id:
                reason = metadata.get("reason")
                if isinstance(reason, str):
                    return reason
        return "ended"

    async def _call(self, ticket: Ticket, call: Any) -> Any:
        """Await one call to the platform; a refusal is logged and the call skipped."""
        try:
            return await call
        except PlatformRefused as exc:
            log.error(
                "%s refused a call for session %s for good; skipped: %s",
                self.name,
                ticket.session_id,
                exc,
                extra={"conversation_id": ticket.conversation_id},
            )
            return None

    def _failed(self, ticket: Ticket, exc: PlatformUnavailable) -> None:
        now = trio.current_time()
        if self._backoff.failed(now):
            self._failing_since = now
            log.warning("%s cannot be reached (%s); retrying with backoff", self.name, exc)
        if exc.retry_after is not None:
            self._backoff.due = max(self._backoff.due, now + min(exc.retry_after, 3600.0))
        self._schedule(ticket)
        since = self._failing_since if self._failing_since is not None else now
        if now - since >= self.unreachable_after:
            for other in self._open.values():
                work = self._work_of(other)
                if not other.ending and not work.told_unreachable:
                    work.told_unreachable = True
                    self._post(other, LivechatUnreachable(other.session_id))

    def _succeeded(self, ticket: Ticket) -> None:
        if self._backoff.succeeded():
            self._failing_since = None
            log.info("%s takes calls again", self.name)
            for other in self._open.values():
                self._work_of(other).told_unreachable = False
                self._schedule(other)

    # -- bookkeeping --------------------------------------------------------------------------

    def _end(self, ticket: Ticket, reason: str | None) -> None:
        if not ticket.ending:
            # The first end says why; a later one (an agent assigned to the session as it
            # ended is released as "stale_assignment") changes nothing.
            ticket.reason = reason if reason is not None else ticket.reason
        ticket.ending = True
        work = self._work_of(ticket)
        work.catch_up = True
        self._schedule(ticket)

    def _schedule(self, ticket: Ticket) -> None:
        self._ready[ticket.session_id] = None
        self._wake.set()

    def _keep(self, ticket: Ticket, work: _Work) -> None:
        self._open[ticket.session_id] = ticket
        self._work[ticket.session_id] = work
        current = self._current.get(ticket.conversation_id)
        if current is None or current.ending:
            self._current[ticket.conversation_id] = ticket

    def _forget(self, ticket: Ticket) -> None:
        if self._current.get(ticket.conversation_id) is ticket:
            del self._current[ticket.conversation_id]
        self._open.pop(ticket.session_id, None)
        self._work.pop(ticket.session_id, None)
        self._ready.pop(ticket.session_id, None)

    def _work_of(self, ticket: Ticket) -> _Work:
        work = self._work.get(ticket.session_id)
        if work is None:
            work = self._work[ticket.session_id] = _Work()
        return work

    def _post(self, ticket: Ticket, event: Any) -> None:
        self._core_link().post(ticket.conversation_id, event)

    def _core_link(self) -> CoreLink:
        if self._core is None:
            raise RuntimeError(f"the livechat platform {self.name} is not running")
        return self._core

    # -- for health and tests ---------------------------------------------------------------

    @property
    def open_tickets(self) -> Mapping[str, Ticket]:
        return self._open

    @property
    def reachable(self) -> bool:
        return not self._backoff.failing

    @property
    def retry_in(self) -> float:
        if not self._backoff.failing:
            return 0.0
        return max(0.0, self._backoff.due - trio.current_time())


def _answer_to(answer: Answer) -> dict[str, Any]:
    refusal = answer.refusal
    return {
        "status": answer.status,
        "seq": answer.seq,
        "refusal": None if refusal is None else [refusal.code, refusal.message],
    }


def _answer_from(data: Mapping[str, Any]) -> Answer:
    refusal = data.get("refusal")
    return Answer(
        int(data["status"]),
        data.get("seq"),
        None if refusal is None else Refusal(str(refusal[0]), str(refusal[1])),
    )


def _answer(outcome: Outcome) -> Answer:
    if isinstance(outcome, Accepted):
        return Answer(200, seq=outcome.seq)
    status = 503 if outcome.code in ("store_unavailable", "overloaded") else 409
    return Answer(status, refusal=outcome)


__all__ = [
    "Accept",
    "Action",
    "Agent",
    "AgentIsTyping",
    "Answer",
    "Connector",
    "Message",
    "PlatformBackend",
    "PlatformRefused",
    "PlatformUnavailable",
    "Release",
    "SignOff",
    "Transfer",
    "Verb",
    "is_for_platform",
]
