"""The platform engine (transport/livechat/platform.py) on its own, with a stand-in core and
connector, where the interleavings that matter can be made to happen every time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from actors import SESSION_START, Content, ConversationState, Entry, Party
from actors.model.agent_request import AgentRequest
from actors.model.deliveries import Transcript
from actors.model.state import Session
from transport.livechat.platform import Action, PlatformBackend
from transport.livechat.tickets import MemoryTickets, Ticket

SESSION = "c/1"


class Core:
    """The conversation ``c`` with an open session; its log is ``entries``. One read of the
    log can be held (``hold_read``): it takes its snapshot, then waits, as a read that runs
    while another message is being stored does."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.posted: list[Any] = []
        self.hold_read: int | None = None
        self.reads = 0
        self.holding = trio.Event()
        self.release = trio.Event()

    @property
    def clock(self) -> Any:
        raise AssertionError("not used")

    def post(self, conversation_id: str, event: Any) -> None:
        self.posted.append(event)

    async def ask(self, conversation_id: str, event: Any, *, message_id: str | None = None) -> Any:
        raise AssertionError("not used")

    async def load(self, conversation_id: str) -> ConversationState | None:
        session = Session(SESSION, 0.0, 0.0, 0.0)
        return ConversationState("c", "shop", "u", {}, len(self.entries) + 1, session, 1)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        self.reads += 1
        snapshot = [e for e in self.entries if e.seq > after_seq]
        if self.reads == self.hold_read:
            self.holding.set()
            await self.release.wait()
        return snapshot

    def says(self, text: str) -> Entry:
        return self._stores(Content.text(text))

    def asks_for_a_human(self) -> Entry:
        return self._stores(Content.payload(SESSION_START))

    def _stores(self, content: Content) -> Entry:
        entry = Entry(
            "c",
            len(self.entries) + 1,
            0.0,
            Party.USER,
            content,
            frozenset({Party.USER}),
            session_id=SESSION,
        )
        self.entries.append(entry)
        return entry


class Connector:
    """Records what it is asked to pass on."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.changed = trio.Event()

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        return "ref"

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        self.posted.append(str(entry.content.text_value))
        self.changed.set()
        self.changed = trio.Event()

    async def typing(self, ticket: Ticket) -> None:
        pass

    async def close(self, ticket: Ticket, reason: str) -> None:
        pass

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        return ()


async def test_a_message_stored_while_the_log_is_read_is_passed_on() -> None:
    core, connector = Core(), Connector()
    core.asks_for_a_human()
    core.says("before")
    # Reads: the transcript, then the catch-up after the platform heard of the session.
    core.hold_read = 2
    backend = PlatformBackend("platform:shop", connector, MemoryTickets())
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run, core)
        backend.request_agent(AgentRequest("c", SESSION, "shop", 0.0))
        with trio.fail_after(5):
            await core.holding.wait()
            # Stored after the read took its snapshot, delivered before it returned.
            backend.deliver_waiting(SESSION, core.says("during the read"))
            core.release.set()
            while connector.posted != ["before", "during the read"]:
                await connector.changed.wait()
        backend.deliver_waiting(SESSION, core.says("after"))
        with trio.fail_after(5):
            while connector.posted[-1:] != ["after"]:
                await connector.changed.wait()
        assert connector.posted == ["before", "during the read", "after"]
        nursery.cancel_scope.cancel()


def test_the_first_end_of_a_session_keeps_its_reason() -> None:
    """The user ends while an assignment is on its way: the late assignment is released as
    stale, and the platform is still told the user ended."""
    backend = PlatformBackend("platform:shop", Connector(), MemoryTickets())
    backend.request_agent(AgentRequest("c", SESSION, "shop", 0.0))
    ticket = backend.open_tickets[SESSION]
    backend.withdraw("c", SESSION)
    backend.release("c", SESSION, "7", "stale_assignment")
    # No reason yet: it is read from the conversation's log (user_ended) when closing.
    assert ticket.ending and ticket.reason is None
