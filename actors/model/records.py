"""The transcript: every message a conversation emits, numbered.

Each conversation numbers what it emits with a gap-free sequence. An :class:`Entry` records who
sent it, which parties may see it, and when. Clients resume by asking for the entries after
the last sequence number they saw; the store keeps entries, and the agent who picks a session
up is shown them as the transcript so far.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from actors.model.content import Content


class Party(enum.Enum):
    """Who takes part in a conversation. ``SYSTEM`` is Switchover itself."""

    USER = "user"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"

    # Members are singletons compared by identity, so hashed by it: enum's own __hash__ is
    # Python code, run several times per message (bench/README.md, Core, 2026-11-25).
    __hash__ = object.__hash__


@attrs.frozen
class Entry:
    """One numbered message of one conversation.

    ``audience`` lists the parties it is delivered to. ``agent_id`` names the agent it goes to
    (or came from) when the agent is in the audience. ``message_id`` is its sender's id for
    the message that wrote it (the entry its ``ack`` named): stored with it, so a resend is
    recognised from the log after a restart or a failover; never sent to clients, and not
    part of what makes two entries equal.
    """

    conversation_id: str
    seq: int
    at: float
    sender: Party
    content: Content
    audience: frozenset[Party]
    agent_id: str | None = None
    session_id: str | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    message_id: str | None = attrs.field(default=None, eq=False)

    def visible_to(self, party: Party, agent_id: str | None = None) -> bool:
        if party not in self.audience:
            return False
        return party is not Party.AGENT or agent_id is None or agent_id == self.agent_id

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "at": self.at,
            "sender": self.sender.value,
            "content_type": self.content.content_type,
            "content": dict(self.content.content),
        }
        if self.agent_id is not None:
            data["agent_id"] = self.agent_id
        if self.session_id is not None:
            data["session_id"] = self.session_id
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data
