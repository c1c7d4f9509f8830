"""What the lifecycle asks to be done.

The lifecycle never performs I/O; it returns these and the conversation actor carries them out
in order. Each is small and frozen, so tests (and hypothesis) can read a transition's whole
outcome as plain data.
"""

from __future__ import annotations

import attrs

from actors.model.content import Content
from actors.model.records import Entry, Party


@attrs.frozen
class Emit:
    """Record ``entry`` in the transcript, then deliver it to each party of its audience."""

    entry: Entry


@attrs.frozen
class Signal:
    """An ephemeral indication (typing) for one party; not numbered, not stored."""

    to: Party
    content: Content
    agent_id: str | None = None


@attrs.frozen
class TellPosition:
    """Tell the user's clients their place in the queue (ephemeral, not stored)."""

    session_id: str
    position: int
    estimated_wait: float | None = None
    agents_available: bool | None = None


@attrs.frozen
class RequestAgent:
    """Ask the livechat backend for a human for this session."""

    session_id: str
    queued_at: float


@attrs.frozen
class WithdrawRequest:
    """The session ended while waiting: take it out of the queue."""

    session_id: str


@attrs.frozen
class ReleaseAgent:
    """The agent no longer holds the session (it ended, or the assignment was stale)."""

    session_id: str
    agent_id: str
    reason: str


@attrs.frozen
class TransferChat:
    """Ask the backend to move a live session to ``to_agent``, or back to the queue."""

    session_id: str
    from_agent: str
    to_agent: str | None


@attrs.frozen
class ShareTranscript:
    """Give the agent who just picked the session up the transcript so far and the user's
    metadata."""

    session_id: str
    agent_id: str


Effect = (
    Emit
    | Signal
    | TellPosition
    | RequestAgent
    | WithdrawRequest
    | ReleaseAgent
    | TransferChat
    | ShareTranscript
)


@attrs.frozen
class Accepted:
    """The event was taken; ``seq`` numbers the entry it produced, if any."""

    seq: int | None = None


@attrs.frozen
class Refusal:
    """Something asked of Switchover was not done: an event the core did not take (its
    outcome, answered to its sender), or a request from an agent the desk could not carry
    out (delivered to the agent). ``code`` is stable and
    machine-readable; ``message`` says why in words for a person. On the wire a refusal is an
    ``error`` frame with the same ``code`` and ``message`` (docs/protocol.md).

    ``conversation_id`` names the conversation when the refusal is delivered on its own (an
    agent's client hears of many conversations); an outcome leaves it unset, since its sender
    knows which conversation it asked."""

    code: str
    message: str
    conversation_id: str | None = None


Outcome = Accepted | Refusal
