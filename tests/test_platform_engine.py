"""The platform engine on its own: a conversation's log standing in for the core, and a
connector that records each call, so the order of things can be set exactly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from actors import SESSION_START, Content, Entry, Party
from actors.model.agent_request import AgentRequest
from actors.model.deliveries import Transcript
from actors.model.state import ConversationState, Session
from actors.trio.clock import Clock
from transport.livechat.platform import Action, PlatformBackend
from transport.livechat.tickets import MemoryTickets, Ticket

SESSION = "c1/1"


class Log:
    """The core's side: one conversation with an open session, and its entries. A read of
    the log can be held at the gate, as a store read in a worker thread can."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.entries: list[Entry] = []
        self.gate: trio.Event | None = None
        self.reading = trio.Event()
        self.posted: list[Any] = []
        self.write(Content.payload(SESSION_START))

    def write(self, content: Content) -> Entry:
        entry = Entry(
            "c1",
            len(self.entries) + 1,
            0.0,
            Party.USER,
            content,
            frozenset({Party.USER, Party.AGENT}),
            session_id=SESSION,
        )
        self.entries.append(entry)
        return entry

    def post(self, conversation_id: str, event: Any) -> None:
        self.posted.append(event)

    async def ask(self, conversation_id: str, event: Any, *, message_id: str | None = None) -> Any:
        raise AssertionError("not asked in these tests")

    async def load(self, conversation_id: str) -> ConversationState:
        session = Session(SESSION, 0.0, 0.0, 0.0)
        return ConversationState("c1", "shop", "u1", {}, len(self.entries) + 1, session, 1)

    async def entries_after(self, conversation_id: str, after_seq: int) -> list[Entry]:
        taken = [e for e in self.entries if e.seq > after_seq]
        if self.gate is not None:
            self.reading.set()
            await self.gate.wait()
        return taken


class Recorder:
    """A platform that takes every call and remembers it."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        self.opened = 0

    async def open(self, ticket: Ticket, transcript: Transcript) -> str | None:
        self.opened += 1
        return "t-1"

    async def post(self, ticket: Ticket, entry: Entry) -> None:
        self.posted.append(entry.content.content["text"])

    async def typing(self, ticket: Ticket) -> None:
        pass

    async def close(self, ticket: Ticket, reason: str) -> None:
        pass

    async def fetch(self, ticket: Ticket) -> Sequence[tuple[Action, str]]:
        return ()


async def test_a_message_stored_while_the_log_is_read_is_passed_on_all_the_same() -> None:
    log, platform = Log(), Recorder()
    backend = PlatformBackend("test", platform, MemoryTickets())
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run, log)
        backend.request_agent(AgentRequest("c1", SESSION, "shop", 0.0))
        await backend.wait_settled()
        assert platform.opened == 1
        # The next read of the log is held: it was taken before "second" was stored.
        log.gate = trio.Event()
        log.reading = trio.Event()
        first = log.write(Content.text("first"))
        backend.deliver_waiting(SESSION, first)
        backend.request_agent(AgentRequest("c1", SESSION, "shop", 0.0))  # a catch-up
        await log.reading.wait()
        second = log.write(Content.text("second"))
        backend.deliver_waiting(SESSION, second)
        log.gate.set()
        log.gate = None
        await backend.wait_settled()
        assert platform.posted == ["first", "second"]
        nursery.cancel_scope.cancel()


def test_the_first_end_of_a_session_keeps_its_reason() -> None:
    """The user ends while an assignment is on its way: the late assignment is released as
    stale, and the platform is still told the user ended."""
    backend = PlatformBackend("test", Recorder(), MemoryTickets())
    backend.request_agent(AgentRequest("c1", SESSION, "shop", 0.0))
    ticket = backend.open_tickets[SESSION]
    backend.withdraw("c1", SESSION)
    backend.release("c1", SESSION, "7", "stale_assignment")
    # No reason yet: it is read from the conversation's log (user_ended) when closing.
    assert ticket.ending and ticket.reason is None
