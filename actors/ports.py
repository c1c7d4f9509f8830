"""The interfaces between the core and the world around it.

The core never opens a socket. Bots, livechat backends, stores and the clients that watch a
conversation plug in through these protocols; ``transport/`` implements them for HTTP bots,
WebSocket clients and SQLite, and an embedding application can implement them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from actors.model.agent_request import AgentRequest
from actors.model.content import Content
from actors.model.deliveries import BotEvent, Delivery
from actors.model.effects import Outcome
from actors.model.events import Event
from actors.model.records import Entry
from actors.model.state import ConversationState

if TYPE_CHECKING:
    # Only named in signatures: the interfaces stay importable without the trio half.
    import trio

    from actors.trio.clock import Clock


class Bot(Protocol):
    """A chatbot. ``on_event`` returns the messages to show the user.

    Raising any exception means the event could not be delivered; the user is told the
    assistant is unavailable, and the conversation stays usable. Adapters that talk to a
    remote bot own their retries and circuit breaker.
    """

    async def on_event(self, event: BotEvent) -> Sequence[Content]: ...


class Sink(Protocol):
    """Where a client's deliveries go. ``deliver`` must never block: a sink that cannot keep
    up closes its client (who resumes by sequence number) rather than stall the sender."""

    def deliver(self, item: Delivery) -> None: ...


class CoreLink(Protocol):
    """How a livechat backend speaks to conversations, reads what they stored, and reads the
    core's clock.

    ``post`` hands an event over without waiting; ``ask`` waits until the conversation has
    stored it (or refused it), which is when a platform's webhook may be acknowledged.
    ``message_id`` makes a repeat of the same message answer the first outcome.
    ``load`` and ``entries_after`` read the store, so a backend that lost its view (a
    restart, a platform that missed events) rebuilds it from the conversation's log.
    """

    @property
    def clock(self) -> Clock: ...

    def post(self, conversation_id: str, event: Event) -> None: ...

    async def ask(
        self, conversation_id: str, event: Event, *, message_id: str | None = None
    ) -> Outcome: ...

    async def load(self, conversation_id: str) -> ConversationState | None: ...

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]: ...


class LivechatBackend(Protocol):
    """Where the humans are: the built-in desk, or an external livechat platform.

    The conversation owns its session; a backend keeps a view derived from it, keyed by
    session id, and every request is idempotent: ``request_agent`` for a session it already
    has (waiting or held) changes nothing unless the backend never decided about it since the
    request's ``as_of`` (then the request says where it is), and for a newer session of the
    same conversation replaces the older one; ``withdraw`` and ``release`` forget the session
    wherever it is.
    Conversations re-assert their open session after any restart, and all of them do after
    the backend's ``run`` is restarted, so a backend may start each run from nothing.
    A call that raises is retried by the conversation with backoff.

    Calls from conversations never block (a backend queues work for its own tasks). The
    backend answers through the :class:`CoreLink` it is given in :meth:`run`, with
    ``QueuePositionChanged``, ``AgentAssigned``, ``ReturnedToQueue``, ``TransferFailed``,
    ``AgentEndsSession`` and ``LivechatUnreachable`` events, and agents' messages as
    ``AgentSays`` and the like. A backend that cannot tell a queue position (an external
    platform) tells none: the user waits without one.
    """

    async def run(self, core: CoreLink, *, task_status: trio.TaskStatus[None]) -> None: ...

    def request_agent(self, request: AgentRequest) -> None: ...

    def withdraw(self, conversation_id: str, session_id: str) -> None: ...

    def release(
        self, conversation_id: str, session_id: str, agent_id: str, reason: str
    ) -> None: ...

    def transfer(
        self, conversation_id: str, session_id: str, from_agent: str, to_agent: str | None
    ) -> None: ...

    def deliver(self, agent_id: str, item: Delivery, *, skip: Sink | None = None) -> None:
        """Hand ``item`` to every connection of the agent but ``skip`` (the one that wrote
        it, which learns its seq from its answer)."""

    def deliver_waiting(self, session_id: str, entry: Entry) -> None:
        """A message the user wrote while the session waits for an agent. The built-in desk
        keeps nothing (its agent reads it in the transcript at pickup); a platform passes it
        on at once, to the ticket it opened for the session."""


@runtime_checkable
class RestoresInBulk(Protocol):
    """A livechat backend that takes a restart's open sessions as one batch (the built-in
    desk settles its queue once for all of them instead of once per session); the others
    are asked :meth:`LivechatBackend.request_agent` for each, in the same order."""

    def request_agents(self, requests: Sequence[AgentRequest]) -> None: ...


class StoreUnavailable(Exception):
    """The store cannot keep what it was given (disk full, file locked or unwritable...).

    ``record`` raises it instead of returning: the conversation keeps its last stored state
    and refuses the message with code ``store_unavailable``, so nothing unstored is ever
    acknowledged.
    """


class Store(Protocol):
    """Where conversations are kept.

    ``record`` returns only once the state and entries are durable: the core acknowledges a
    message to its sender after that and never before. It raises :class:`StoreUnavailable`
    when it cannot.

    The bot's side is durable too. Every entry with the bot in its audience that ``record``
    stores is *owed* to the bot until :meth:`bot_done` is called for it, which the core does
    once the bot has answered the event (and the answer is stored) or has failed for good.
    :meth:`bot_backlog` lists what is still owed, so a conversation whose process died
    between storing an event and hearing the bot's answer hands the event over again on
    restart (at least once; the event id is stable, so a bot can drop a repeat).
    """

    async def load(self, conversation_id: str) -> ConversationState | None: ...

    async def record(self, state: ConversationState, entries: Sequence[Entry]) -> None: ...

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]: ...

    async def open_sessions(self) -> list[ConversationState]: ...

    def bot_done(self, conversation_id: str, seq: int) -> None:
        """The bot is no longer owed entry ``seq``. Never blocks and never raises: it is
        made durable with a later write, and if that write is lost the bot hears the event
        once more."""

    async def bot_backlog(self) -> list[Entry]:
        """Every entry still owed to a bot, by conversation and then in order."""
        ...


@runtime_checkable
class MessageIdStore(Store, Protocol):
    """A store that can list the message ids kept with a conversation's entries without
    reading the entries whole (an optional part of a store: the core falls back on
    ``entries_after``). A woken conversation asks it once for the ids of its last entries:
    reading those entries whole costs twenty times more (bench/README.md)."""

    async def message_ids(self, conversation_id: str, after_seq: int) -> list[tuple[int, str]]:
        """``(seq, message_id)`` of each entry after ``after_seq`` stored with an id, in
        order."""
        ...


class InputStore(Store, Protocol):
    """A store that numbers inputs before they reach the actors (a cluster node serving
    inputs routed from other nodes, ``Envelope.input_id``).

    ``record`` also gets each stored input's id and the seq it was answered (``None``: it
    wrote no entry), and makes remembering them part of the same commit, so an input handed
    over again (after a failover) is never stored twice.
    """

    async def record(
        self,
        state: ConversationState,
        entries: Sequence[Entry],
        inputs: Sequence[tuple[str, int | None]] = (),
    ) -> None: ...
